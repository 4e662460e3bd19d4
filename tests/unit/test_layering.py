"""The dependency direction of DESIGN.md, enforced by parsing every import (including local ones)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Modules that workflows may import: no I/O of any kind.
PURE_MODULES = {
    "vmcp.config",
    "vmcp.config_types",
    "vmcp.durations",
    "vmcp.catalog",
    "vmcp.contracts",
    "vmcp.composite",
    "vmcp.composite_checks",
    "vmcp.templating",
    "vmcp.url_policy",
    "vmcp.tool_overrides",
    "vmcp.auth_config",
    "vmcp.policy",
    "vmcp.shaping",
}
PURE_THIRD_PARTY = {"pydantic", "yaml", "mcp_types", "jinja2", "jsonschema", "typing_extensions"}
IO_LIBRARIES = {
    "mcp",
    "httpx",
    "httpx2",
    "anyio",
    "temporalio",
    "starlette",
    "uvicorn",
    "asyncio",
    "socket",
    "subprocess",
}
WORKFLOW_TEMPORAL = {"temporalio.workflow", "temporalio.common", "temporalio.exceptions"}
TEMPORAL_CLIENT_MODULES = {"vmcp.orchestrator"}
FACADE_MODULES = {
    "vmcp.facade",
    "vmcp.passthrough",
    "vmcp.forwarding",
    "vmcp.fastpath",
    "vmcp.relay",
    "vmcp.app",
    "vmcp.backends",
    "vmcp.connection",
    "vmcp.backend_common",
    "vmcp.backend_transport",
    "vmcp.backend_changes",
    "vmcp.wire",
    "vmcp.http1",
    "vmcp.catalog",
    "vmcp.probe",
}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def top(name: str) -> str:
    return name.split(".")[0]


def test_sources_are_found() -> None:
    names = {module_name(p) for p in sources("vmcp", "workflows", "activities")}
    assert {"vmcp.config", "vmcp.catalog", "vmcp.facade", "vmcp.backends"} <= names


@pytest.mark.parametrize("path", [p for p in sources("vmcp") if module_name(p) in PURE_MODULES], ids=module_name)
def test_pure_modules_import_no_io(path: Path) -> None:
    name = module_name(path)
    for imported in imports_of(path):
        root = top(imported)
        if root == "vmcp":
            target = imported if imported in PURE_MODULES else imported.rsplit(".", 1)[0]
            assert target in PURE_MODULES or imported in PURE_MODULES, f"{name} imports non-pure {imported}"
        else:
            assert root not in IO_LIBRARIES, f"{name} (pure) imports {imported}"


@pytest.mark.parametrize("path", sources("workflows"), ids=module_name)
def test_workflows_import_only_workflow_api_and_pure_modules(path: Path) -> None:
    for imported in imports_of(path):
        root = top(imported)
        if imported == "temporalio":
            continue  # `from temporalio import workflow`: the names imported are checked one by one
        if root == "temporalio":
            assert any(imported == m or imported.startswith(m + ".") for m in WORKFLOW_TEMPORAL), imported
        elif root == "vmcp":
            assert imported in PURE_MODULES or imported.rsplit(".", 1)[0] in PURE_MODULES, imported
        else:
            # asyncio is how workflow code runs steps concurrently: Temporal's event loop is deterministic
            forbidden = (IO_LIBRARIES - {"asyncio"}) | {"activities", "worker"}
            assert root not in forbidden, f"{module_name(path)} imports {imported}"


@pytest.mark.parametrize("path", sources("vmcp"), ids=module_name)
def test_only_the_orchestrator_talks_to_temporal(path: Path) -> None:
    name = module_name(path)
    if name in TEMPORAL_CLIENT_MODULES:
        return
    temporal = {i for i in imports_of(path) if top(i) == "temporalio"}
    assert not temporal, f"{name} imports {temporal}; only {TEMPORAL_CLIENT_MODULES} may"


@pytest.mark.parametrize("path", sources("vmcp"), ids=module_name)
def test_facade_never_imports_workflows_or_activities(path: Path) -> None:
    name = module_name(path)
    if name not in FACADE_MODULES:
        return
    bad = {i for i in imports_of(path) if top(i) in {"workflows", "activities", "worker", "temporalio"}}
    assert not bad, f"{name} imports {bad}"


@pytest.mark.parametrize("path", sources("activities"), ids=module_name)
def test_activities_reach_backends_through_the_pool(path: Path) -> None:
    imported = imports_of(path)
    assert not {i for i in imported if top(i) in {"workflows", "starlette", "uvicorn"}}
    assert "vmcp.facade" not in imported and "vmcp.app" not in imported
