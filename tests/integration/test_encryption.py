"""Run data private in Temporal, on `vmcp dev` as a user runs it: a composite's distinctive
parameter and step result are nowhere in the raw history (`temporal workflow show -o json`, every
payload base64-decoded), yet `vmcp runs show` and the codec endpoint — called as the Web UI calls
it, preflight first — give both back. Runs outlive a key rotation, and runs started before
encryption was turned on complete after it, their mixed history replaying cleanly."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest
import yaml
from mcp import Client
from temporalio.converter import DataConverter
from temporalio.worker import Replayer

from tests.support.processes import DevStack
from vmcp.config.loading import load_config
from vmcp.runs.payload_codec import KeyRing, codec_for, write_key_file
from vmcp.runs.temporal_client import connect
from worker import workflow_classes, workflow_runner

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

VMCP = str(Path(sys.executable).parent / "vmcp")
TEMPORAL = str(Path(sys.executable).parent / "temporal")

COMPOSITES = [
    {
        "name": "remember",
        "parameters": {"type": "object", "properties": {"secret": {"type": "string"}}, "required": ["secret"]},
        "steps": [{"id": "say", "tool": "fault.echo", "arguments": {"text": "{{ params.secret }}-echoed"}}],
    },
    {
        "name": "remember_later",
        "parameters": {"type": "object", "properties": {"secret": {"type": "string"}}, "required": ["secret"]},
        "wait": "1s",
        "steps": [
            {"id": "gate", "type": "approval", "message": "Echo it?", "timeout": "1h"},
            {
                "id": "say",
                "tool": "fault.echo",
                "arguments": {"text": "{{ params.secret }}-echoed"},
                "depends_on": ["gate"],
            },
        ],
    },
]


class Dev:
    """A `vmcp dev` configuration in its own directory, started and stopped as a developer would."""

    def __init__(self, directory: Path, temporal_port: int, fault_url: str, *, encrypted: bool) -> None:
        self.directory = directory
        self.config_file = directory / "vmcp.yaml"
        self.temporal_address = f"127.0.0.1:{temporal_port}"
        self.fault_url = fault_url
        self.write(encrypted=encrypted)
        self.stack: DevStack | None = None
        self.url = ""

    def write(self, *, encrypted: bool) -> None:
        temporal: dict[str, Any] = {
            "address": self.temporal_address,
            "task_queue": f"vmcp-{self.directory.name}",
            "dev_server": {"db_file": ".vmcp/temporal.db", "ui_port": 0},
        }
        if encrypted:
            temporal["encryption"] = {"key_file": ".vmcp/payload-keys.json"}
        config = {
            "server": {"host": "127.0.0.1", "port": 0},
            "temporal": temporal,
            "backends": [{"name": "fault", "transport": "streamable-http", "url": self.fault_url}],
            "composite_tools": COMPOSITES,
        }
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self) -> None:
        self.stack = DevStack(self.config_file)
        self.url = self.stack.wait_ready()[0]

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.shut_down()
            self.stack = None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [VMCP, *args, "--config", str(self.config_file)], capture_output=True, text=True, timeout=60, check=False
        )

    def raw_history(self, run_id: str, *extra: str) -> dict[str, Any]:
        """The history as the `temporal` CLI shows it (without a codec, unless `extra` names one)."""
        shown = subprocess.run(
            [
                TEMPORAL,
                "workflow",
                "show",
                "--workflow-id",
                run_id,
                "--address",
                self.temporal_address,
                "-o",
                "json",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return dict(json.loads(shown.stdout))


def vmcp_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VMCP, *args], capture_output=True, text=True, timeout=60, check=False)


def payloads_in(node: Any) -> list[dict[str, Any]]:
    """Every payload object (`{"metadata": …, "data": …}`) anywhere in a history document, but
    search attributes' (never encrypted by design: vmcp puts no user data there)."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if "data" in node and isinstance(node.get("metadata"), dict):
            found.append(node)
        for key, value in node.items():
            if key != "searchAttributes":
                found += payloads_in(value)
    elif isinstance(node, list):
        for value in node:
            found += payloads_in(value)
    return found


def decoded_text(payloads: list[dict[str, Any]]) -> str:
    return "\n".join(base64.b64decode(p.get("data") or "").decode("utf-8", "replace") for p in payloads)


def key_ids(payloads: list[dict[str, Any]]) -> set[str]:
    return {
        base64.b64decode(p["metadata"]["encryption-key-id"]).decode()
        for p in payloads
        if "encryption-key-id" in p["metadata"]
    }


async def call(url: str, tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
    async with Client(url, mode="2026-07-28") as client:
        return await client.call_tool(tool, arguments)


@pytest.fixture(scope="module")
def encrypted(module_procs: Any, tmp_path_factory: pytest.TempPathFactory, free_port: Any) -> Iterator[Dev]:
    fault = module_procs.fault_http("fault")
    dev = Dev(tmp_path_factory.mktemp("encrypted"), free_port(), fault.url, encrypted=True)
    dev.start()
    try:
        yield dev
    finally:
        dev.stop()


async def test_run_data_is_ciphertext_in_temporal_and_clear_to_vmcp_and_the_codec(encrypted: Dev) -> None:
    dev = encrypted
    secret = f"ZEBRA-{uuid.uuid4().hex[:12]}"
    result = await call(dev.url, "remember", {"secret": secret})
    assert not result.is_error, result
    run_id = (result.meta or {})["io.vmcp/run_id"]
    assert f"{secret}-echoed" in json.dumps(result.model_dump(mode="json"))

    # vmcp dev made the key ring, readable by its owner only
    ring_file = dev.directory / ".vmcp/payload-keys.json"
    assert oct(ring_file.stat().st_mode & 0o777) == "0o600"

    history = dev.raw_history(run_id)
    raw = json.dumps(history)
    payloads = payloads_in(history)
    clear_ones = [p for p in payloads if base64.b64decode(p["metadata"].get("encoding", "")) != b"binary/encrypted"]
    assert payloads and not clear_ones, f"payloads reached Temporal unencrypted: {clear_ones}"
    assert secret not in raw and secret not in decoded_text(payloads)

    shown = dev.cli("runs", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert secret in shown.stdout and f"{secret}-echoed" in shown.stdout

    # the Web UI: a preflight from its origin, then the decode request as it sends it
    assert dev.stack is not None
    ui_cmdline = Path(f"/proc/{dev.stack.temporal_pid()}/cmdline").read_bytes().split(b"\0")  # noqa: ASYNC240
    endpoint = ui_cmdline[ui_cmdline.index(b"--ui-codec-endpoint") + 1].decode()
    assert endpoint.endswith("/codec") and endpoint.startswith(dev.url.rsplit("/", 1)[0])
    origin = "http://127.0.0.1:8233"
    async with httpx.AsyncClient(timeout=30) as http:
        preflight = await http.options(
            endpoint + "/decode",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-namespace",
            },
        )
        headers = {"Origin": origin, "X-Namespace": "default", "Content-Type": "application/json"}
        decoded = await http.post(endpoint + "/decode", json={"payloads": payloads}, headers=headers)
        elsewhere = await http.post(
            endpoint + "/decode", json={"payloads": payloads}, headers={**headers, "Origin": "http://evil.example"}
        )
        other_namespace = await http.post(
            endpoint + "/decode", json={"payloads": payloads}, headers={**headers, "X-Namespace": "prod"}
        )
        garbage = await http.post(endpoint + "/decode", content=b"{not json", headers=headers)
        round_trip = await http.post(endpoint + "/encode", json=decoded.json(), headers=headers)
    assert preflight.status_code == 204, preflight.text
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "x-namespace" in preflight.headers["access-control-allow-headers"].lower()
    assert decoded.status_code == 200 and decoded.headers["access-control-allow-origin"] == origin, decoded.text
    clear = decoded.json()["payloads"]
    assert len(clear) == len(payloads)
    assert secret in decoded_text(clear) and f"{secret}-echoed" in decoded_text(clear)
    assert elsewhere.status_code == 403 and other_namespace.status_code == 403 and garbage.status_code == 400
    assert round_trip.status_code == 200 and secret not in decoded_text(round_trip.json()["payloads"])

    # the `temporal` CLI given the codec endpoint reads the run in clear too
    decoded_cli = dev.raw_history(run_id, "--codec-endpoint", endpoint)
    assert secret in decoded_text(payloads_in(decoded_cli))


async def test_a_run_sealed_under_one_key_completes_and_reads_after_a_rotation(
    module_procs: Any, tmp_path_factory: pytest.TempPathFactory, free_port: Any
) -> None:
    fault = module_procs.fault_http("rotation")
    dev = Dev(tmp_path_factory.mktemp("rotation"), free_port(), fault.url, encrypted=True)
    secret = f"OKAPI-{uuid.uuid4().hex[:12]}"
    dev.start()
    try:
        started = await call(dev.url, "remember_later", {"secret": secret})
        run_id = (started.structured_content or {})["run_id"]  # waiting at its gate: the call answers with the id
        # a worker whose ring lacks the key that run was started under refuses to start
        lacking = dev.directory / "lacking.yaml"
        config = yaml.safe_load(dev.config_file.read_text())
        config["temporal"]["encryption"] = {"key_file": "other-keys.json"}
        lacking.write_text(yaml.safe_dump(config))
        write_key_file(dev.directory / "other-keys.json", KeyRing("k7", {"k7": os.urandom(32)}))
        refused = vmcp_command("worker", "--config", str(lacking))
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "key 'k1'" in refused.stderr and run_id in refused.stderr, refused.stderr
    finally:
        dev.stop()
    rotated = dev.cli("keys", "rotate")
    assert rotated.returncode == 0 and "k2 is now current" in rotated.stdout, rotated.stdout + rotated.stderr
    assert dev.cli("keys", "show").stdout.split("\n")[:2] == ["k1", "k2  (current)"]
    dev.start()
    try:
        approved = dev.cli("approve", run_id, "--step", "gate")
        assert approved.returncode == 0, approved.stderr
        shown = _until_completed(dev, run_id)
        assert f"{secret}-echoed" in shown
        payloads = payloads_in(dev.raw_history(run_id))
        assert key_ids(payloads) == {"k1", "k2"}  # the start under k1, what came after under k2
        assert secret not in decoded_text(payloads)
    finally:
        dev.stop()


async def test_a_run_started_in_clear_completes_once_encryption_is_on_and_its_history_replays(
    module_procs: Any, tmp_path_factory: pytest.TempPathFactory, free_port: Any
) -> None:
    fault = module_procs.fault_http("upgrade")
    dev = Dev(tmp_path_factory.mktemp("upgrade"), free_port(), fault.url, encrypted=False)
    secret = f"TAPIR-{uuid.uuid4().hex[:12]}"
    dev.start()
    try:
        started = await call(dev.url, "remember_later", {"secret": secret})
        run_id = (started.structured_content or {})["run_id"]  # waiting at its gate: the call answers with the id
    finally:
        dev.stop()
    dev.write(encrypted=True)  # the upgrade: encryption turned on; vmcp dev makes the key ring
    dev.start()
    try:
        assert dev.cli("approve", run_id, "--step", "gate").returncode == 0
        shown = _until_completed(dev, run_id)
        assert f"{secret}-echoed" in shown
        payloads = payloads_in(dev.raw_history(run_id))
        encodings = {base64.b64decode(p["metadata"].get("encoding", "")) for p in payloads}
        assert b"binary/encrypted" in encodings and encodings - {b"binary/encrypted"}, encodings  # both kinds
        assert secret in decoded_text(payloads)  # the parameter, written before: in clear
        # the mixed history replays in the interpreter as workers run it, strict sandbox too
        config = load_config(dev.config_file)
        client = await connect(config)
        history = await client.get_workflow_handle(run_id).fetch_history()
        converter = dataclasses.replace(DataConverter.default, payload_codec=codec_for(config))
        for strict in (True, False):
            replayer = Replayer(
                workflows=workflow_classes(), workflow_runner=workflow_runner(strict=strict), data_converter=converter
            )
            replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
            assert replayed.replay_failure is None, replayed.replay_failure
    finally:
        dev.stop()


def _until_completed(dev: Dev, run_id: str) -> str:
    import time

    deadline = time.monotonic() + 60
    while True:
        shown = dev.cli("runs", "show", run_id, "--json")
        assert shown.returncode == 0, shown.stderr
        if json.loads(shown.stdout).get("state") == "completed" or time.monotonic() > deadline:
            assert json.loads(shown.stdout).get("state") == "completed", shown.stdout
            return shown.stdout
        time.sleep(0.3)


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_process_without_its_keys_refuses_to_start_and_says_which(tmp_path: Path, command: str) -> None:
    config = {
        "temporal": {"address": "127.0.0.1:1", "encryption": {"key_file": "keys/missing.json"}},
        "backends": [],
    }
    config_file = tmp_path / "vmcp.yaml"
    config_file.write_text(yaml.safe_dump(config))
    started = subprocess.run(
        [VMCP, command, "--config", str(config_file)], capture_output=True, text=True, timeout=60, check=False
    )
    assert started.returncode == 1, started.stdout + started.stderr
    assert "temporal.encryption.key_file: cannot read" in started.stderr and "missing.json" in started.stderr
    assert "Traceback" not in started.stderr
