"""The deployment material: Kubernetes manifests valid against the Kubernetes schemas (the
published `kubernetes-validate` package, schemas bundled, strict: unknown fields refused), and
consistent with what vmcp really serves and accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from vmcp.cli.main import build_parser
from vmcp.config.loading import parse_config

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
KUBERNETES = "1.33.0"


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in MANIFESTS:
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document:
                found.append((f"{path.name}:{document['kind']}/{document['metadata']['name']}", document))
    return found


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [document for _, document in documents() if document["kind"] == kind]


@pytest.mark.parametrize(("name", "document"), documents(), ids=[name for name, _ in documents()])
def test_every_manifest_is_valid_kubernetes(name: str, document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_the_set_is_complete() -> None:
    kinds = sorted({document["kind"] for _, document in documents()})
    assert kinds == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    assert {d["metadata"]["name"] for d in by_kind("Deployment")} == {"vmcp-facade", "vmcp-worker"}
    assert len(by_kind("PodDisruptionBudget")) == 2


def test_the_configmap_carries_the_production_example_and_it_is_valid() -> None:
    (configmap,) = by_kind("ConfigMap")
    text = (ROOT / "deploy" / "production.example.yaml").read_text(encoding="utf-8")
    assert configmap["data"]["vmcp.yaml"] == text
    config = parse_config(yaml.safe_load(text))
    assert config.server.stateless and config.auth.mode == "oauth" and config.temporal.tls is not None


def test_containers_run_real_commands_with_probes_on_real_paths() -> None:
    parser = build_parser()
    paths = {"/healthz", "/readyz"}
    for deployment in by_kind("Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        (container,) = spec["containers"]
        args = parser.parse_args(container["args"])  # the CLI accepts exactly these arguments
        assert args.config == "/etc/vmcp/vmcp.yaml"
        for probe in ("readinessProbe", "livenessProbe"):
            if probe in container:
                assert container[probe]["httpGet"]["path"] in paths
        secret_refs = [env["valueFrom"]["secretKeyRef"]["name"] for env in container.get("env", [])]
        assert secret_refs and all(name == "vmcp-secrets" for name in secret_refs)  # references, no values
    facade = next(d for d in by_kind("Deployment") if d["metadata"]["name"] == "vmcp-facade")
    assert "readinessProbe" in facade["spec"]["template"]["spec"]["containers"][0]
