"""Approval gates through a real `vmcp dev` stack: the caller gets the run id at once, the approver
decides from the CLI (or Temporal's own), refusals exit non-zero, a rejection stops the run, and a
gate's webhook reaches a real HTTP receiver, retried, without ever holding the run up."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
import yaml
from mcp import Client
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client as TemporalClient

from tests.history_text import readable
from tests.http_endpoint import JsonEndpoint
from tests.integration.test_composite import VMCP
from tests.support.processes import DevStack

pytestmark = [pytest.mark.integration, pytest.mark.temporal, pytest.mark.anyio]


WEBHOOK_TOKEN = "hook-secret-5f1c9e"  # in the webhook URL: must never reach workflow history


def composites(receiver: str, closed_port: int) -> list[dict[str, Any]]:
    return [
        {
            "name": "notified",
            "steps": [
                {
                    "id": "gate",
                    "type": "approval",
                    "message": "Deploy?",
                    "approvers": ["alice"],
                    "webhook": f"{receiver}/hooks?token={WEBHOOK_TOKEN}",
                },
                {"id": "after", "tool": "fault.echo", "arguments": {"text": "deployed"}, "depends_on": ["gate"]},
            ],
        },
        {
            "name": "unheard",  # its webhook's receiver is down: the run must not notice
            "steps": [
                {"id": "gate", "type": "approval", "message": "Go?", "webhook": f"http://127.0.0.1:{closed_port}/x"},
                {"id": "after", "tool": "fault.echo", "arguments": {"text": "went anyway"}, "depends_on": ["gate"]},
            ],
        },
        {
            "name": "publish",
            "parameters": {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]},
            "steps": [
                {"id": "prepare", "tool": "fault.echo", "arguments": {"text": "{{ params.label }}"}},
                {
                    "id": "review",
                    "type": "approval",
                    "message": "Publish {{ params.label }}?",
                    "approvers": ["alice", "group:sre"],
                    "depends_on": ["prepare"],
                    "timeout": "1h",
                },
                {
                    "id": "ship",
                    "tool": "fault.tally",
                    "arguments": {"label": "{{ params.label }}"},
                    "depends_on": ["review"],
                },
            ],
            "output": {"decision": "{{ steps.review.output.decision }}", "by": "{{ steps.review.output.approver }}"},
        },
        {
            "name": "hurry",
            "steps": [
                {"id": "gate", "type": "approval", "message": "Go?", "timeout": "1s", "on_timeout": "approve"},
                {"id": "go", "tool": "fault.echo", "arguments": {"text": "went"}, "depends_on": ["gate"]},
            ],
        },
    ]


class Stack:
    def __init__(self, url: str, config_file: Path, fault_url: str) -> None:
        self.url = url
        self.config_file = config_file
        self.fault_url = fault_url
        self.temporal = yaml.safe_load(config_file.read_text())["temporal"]["address"]

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [VMCP, *args, "--config", str(self.config_file)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )

    async def tallies(self) -> dict[str, int]:
        async with Client(self.fault_url) as direct:
            result = await direct.call_tool("count", {})
        assert result.structured_content is not None
        return dict(result.structured_content["tallies"])


class Receiver(JsonEndpoint):
    """A webhook receiver that answers 503 to the first POST, then 200."""

    def __init__(self) -> None:
        super().__init__(lambda received: (503 if len(self.requests) == 1 else 200, {}))

    @property
    def posts(self) -> list[dict[str, Any]]:
        return [{"path": r.path, "headers": r.headers, "body": r.json()} for r in self.requests]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    served = Receiver()
    yield served
    served.close()


@pytest.fixture(scope="module")
def stack(
    module_procs: Any,
    tmp_path_factory: pytest.TempPathFactory,
    free_port: Callable[[], int],
    wait_until: Any,
    receiver: Receiver,
) -> Iterator[Stack]:
    fault = module_procs.fault_http("fault")
    directory = tmp_path_factory.mktemp("approvals")
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        "temporal": {
            "address": f"127.0.0.1:{free_port()}",
            "task_queue": f"vmcp-approvals-{uuid.uuid4().hex[:8]}",
            "dev_server": {"db_file": ".vmcp/temporal.db", "ui_port": 0},
        },
        "backends": [{"name": "fault", "transport": "streamable-http", "url": fault.url}],
        "composite_tools": composites(receiver.url, free_port()),
    }
    config_file = directory / "vmcp.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    dev = DevStack(config_file)
    try:
        yield Stack(dev.wait_ready()[0], config_file, fault.url)
    finally:
        dev.shut_down()


async def _call(stack: Stack, tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
    async with Client(stack.url) as client:
        return await client.call_tool(tool, arguments)


async def test_gate_answers_with_the_run_id_then_an_approver_lets_it_finish(stack: Stack) -> None:
    label = f"approve-{uuid.uuid4().hex[:6]}"
    waiting = await _call(stack, "publish", {"label": label})
    assert not waiting.is_error
    body = waiting.structured_content or {}
    assert body["state"] == "awaiting_approval", body
    run_id = body["run_id"]
    assert body["waiting_for"] == {
        "step": "review",
        "message": f"Publish {label}?",
        "approvers": ["alice", "group:sre"],
        "since": body["waiting_for"]["since"],
    }

    pending = stack.cli("runs", "list", "--pending", "--json")
    assert pending.returncode == 0, pending.stderr
    assert run_id in {run["run_id"] for run in json.loads(pending.stdout)}

    temporal = await TemporalClient.connect(stack.temporal)

    async def messages() -> list[str]:
        """The decisions in the run's history (Updates accepted, signals), by name."""
        history = await temporal.get_workflow_handle(run_id).fetch_history()
        found = []
        for event in history.events:
            if event.HasField("workflow_execution_update_accepted_event_attributes"):
                found.append(event.workflow_execution_update_accepted_event_attributes.accepted_request.input.name)
            elif event.HasField("workflow_execution_signaled_event_attributes"):
                found.append(event.workflow_execution_signaled_event_attributes.signal_name)
        return [name for name in found if name in ("approve", "reject")]

    refused = stack.cli("approve", run_id, "--as", "bob")
    assert refused.returncode == 1 and "may not decide" in refused.stderr and "Traceback" not in refused.stderr
    assert await messages() == []  # the refused decision never entered the history
    approved = stack.cli("approve", run_id, "--as", "alice", "--comment", "ship it")
    assert approved.returncode == 0, approved.stderr
    assert await messages() == ["approve"]

    async with Client(stack.url) as client:
        result = await client.call_tool("vmcp_run_result", {"run_id": run_id, "wait_seconds": 30})
    assert not result.is_error, result
    assert result.structured_content == {"decision": "approved", "by": "alice"}
    assert (await stack.tallies())[label] == 1
    again = stack.cli("approve", run_id, "--as", "alice")
    assert again.returncode == 1 and "nothing to decide" in again.stderr
    assert len(await messages()) == 1  # nor did the one sent after the run ended


async def test_a_rejection_ends_the_run_with_the_reason_and_no_later_step_runs(stack: Stack) -> None:
    label = f"reject-{uuid.uuid4().hex[:6]}"
    run_id = (await _call(stack, "publish", {"label": label})).structured_content["run_id"]  # type: ignore[index]
    rejected = stack.cli(
        "reject", run_id, "--group", "sre", "--reason", "not today", env={**os.environ, "VMCP_APPROVER": "carol"}
    )
    assert rejected.returncode == 0, rejected.stderr
    async with Client(stack.url) as client:
        result = await client.call_tool("vmcp_run_result", {"run_id": run_id, "wait_seconds": 30})
    assert result.is_error
    assert "rejected by carol: not today" in json.dumps(result.structured_content)
    assert label not in await stack.tallies()


async def test_a_gate_that_times_out_follows_on_timeout(stack: Stack) -> None:
    waiting = await _call(stack, "hurry", {})
    run_id = (waiting.structured_content or {}).get("run_id")
    if run_id is None:  # the 1 s gate may already have timed out before the first status poll
        assert not waiting.is_error and "went" in json.dumps(waiting.structured_content)
        return
    async with Client(stack.url) as client:
        result = await client.call_tool("vmcp_run_result", {"run_id": run_id, "wait_seconds": 30})
    assert not result.is_error, result
    status = stack.cli("runs", "show", run_id, "--json")
    gate = json.loads(status.stdout)["steps"]["gate"]
    assert gate["decision"]["decision"] == "approved" and gate["decision"]["approver"] is None
    assert "on_timeout: approve" in gate["decision"]["comment"]


async def test_a_gate_webhook_is_retried_until_delivered_and_its_url_stays_out_of_history(
    stack: Stack, receiver: Receiver, wait_until: Any
) -> None:
    run_id = (await _call(stack, "notified", {})).structured_content["run_id"]  # type: ignore[index]
    mine = lambda: [post for post in receiver.posts if post["body"]["run_id"] == run_id]  # noqa: E731
    wait_until(lambda: len(mine()) >= 2, 30, "the webhook's retry after a 503")
    first, second = mine()[:2]
    assert first["body"] == second["body"] and first["path"] == f"/hooks?token={WEBHOOK_TOKEN}"
    body = second["body"]
    assert body["message"] == "Deploy?" and body["approvers"] == ["alice"] and body["step"] == "gate"
    assert body["web_ui"].startswith("http://127.0.0.1:") and body["web_ui"].endswith(f"/workflows/{run_id}")
    assert body["approve"] == f"vmcp approve {run_id} --step gate"
    assert second["headers"]["Idempotency-Key"] == f"{run_id}/gate"

    assert stack.cli("approve", run_id, "--as", "alice").returncode == 0
    async with Client(stack.url) as client:
        result = await client.call_tool("vmcp_run_result", {"run_id": run_id, "wait_seconds": 30})
    assert not result.is_error and "deployed" in json.dumps(result.structured_content)
    temporal = await TemporalClient.connect(stack.temporal)
    history = readable(await temporal.get_workflow_handle(run_id).fetch_history())
    assert "notify_approvers" in history and "Deploy?" in history  # the decoded payloads are searched too
    assert WEBHOOK_TOKEN not in history
    assert len(mine()) == 2  # delivered once accepted: no more posts


async def test_a_webhook_that_is_down_never_holds_the_run_up(stack: Stack) -> None:
    run_id = (await _call(stack, "unheard", {})).structured_content["run_id"]  # type: ignore[index]
    assert stack.cli("approve", run_id, "--as", "dave").returncode == 0
    async with Client(stack.url) as client:
        result = await client.call_tool("vmcp_run_result", {"run_id": run_id, "wait_seconds": 30})
    assert not result.is_error and "went anyway" in json.dumps(result.structured_content)


async def test_temporals_own_cli_can_approve(stack: Stack) -> None:
    """The documented alternative to `vmcp approve`: a plain Temporal signal."""
    label = f"tctl-{uuid.uuid4().hex[:6]}"
    run_id = (await _call(stack, "publish", {"label": label})).structured_content["run_id"]  # type: ignore[index]
    temporal = str(Path(VMCP).parent / "temporal")
    decision = json.dumps({"approver": "alice", "comment": "from temporal"})
    command = [temporal, "workflow", "signal", "--address", stack.temporal, "--workflow-id", run_id]
    sent = await anyio.run_process([*command, "--name", "approve", "--input", decision], check=False)
    assert sent.returncode == 0, sent.stderr.decode()
    async with Client(stack.url) as client:
        result = await client.call_tool("vmcp_run_result", {"run_id": run_id, "wait_seconds": 30})
    assert result.structured_content == {"decision": "approved", "by": "alice"}


async def test_metrics_report_runs_and_waiting_approvals_from_temporal(stack: Stack) -> None:
    label = f"metrics-{uuid.uuid4().hex[:6]}"
    await _call(stack, "publish", {"label": label})  # waits at its gate
    pending = json.loads(stack.cli("runs", "list", "--pending", "--json").stdout)
    async with httpx.AsyncClient() as http:
        text = (await http.get(stack.url.removesuffix("/mcp") + "/metrics")).text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    waiting = [run for run in pending if run["tool"] == "publish"]
    assert samples[("vmcp_approvals_waiting", ())] == len(pending) >= 1
    assert samples[("vmcp_composite_runs", (("state", "awaiting_approval"), ("tool", "publish")))] == len(waiting)
    assert ("vmcp_composite_runs", (("state", "completed"), ("tool", "hurry"))) in samples
