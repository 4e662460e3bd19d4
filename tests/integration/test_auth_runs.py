"""Composite runs under OAuth on a real `vmcp dev` stack: the run knows who called (subject, groups),
its steps reach a backend with vmcp's own client-credentials token, and no secret — the caller's
token, the backend's token, the client secret — appears in any workflow history."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from temporalio.client import Client as TemporalClient

from tests.history_text import readable
from tests.integration.test_auth import Issuer
from tests.integration.test_backend_credentials import CLIENT_SECRET, TokenEndpoint
from tests.integration.test_composite import _DevProcess

pytestmark = [pytest.mark.integration, pytest.mark.temporal, pytest.mark.anyio]


class Stack:
    def __init__(self, url: str, temporal: str, issuer: Issuer, endpoint: TokenEndpoint) -> None:
        self.url = url
        self.temporal = temporal
        self.issuer = issuer
        self.endpoint = endpoint


@pytest.fixture(scope="module")
def stack(
    module_procs: Any, tmp_path_factory: pytest.TempPathFactory, free_port: Callable[[], int], wait_until: Any
) -> Iterator[Stack]:
    issuer, endpoint = Issuer(), TokenEndpoint()
    directory = tmp_path_factory.mktemp("auth-runs")
    (directory / "client-secret").write_text(CLIENT_SECRET)
    fault = module_procs.fault_http("fault")
    temporal = f"127.0.0.1:{free_port()}"
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        "auth": issuer.auth_settings(),
        "temporal": {
            "address": temporal,
            "task_queue": f"vmcp-auth-{uuid.uuid4().hex[:8]}",
            "dev_server": {"db_file": ".vmcp/temporal.db", "ui_port": 0},
        },
        "backends": [
            {
                "name": "fault",
                "transport": "streamable-http",
                "url": fault.url,
                "auth": {
                    "type": "client_credentials",
                    "token_url": endpoint.url,
                    "client_id": "vmcp",
                    "client_secret_file": "client-secret",
                },
            }
        ],
        "composite_tools": [
            {
                "name": "gated",
                "steps": [
                    {"id": "gate", "type": "approval", "message": "Ship?", "approvers": ["group:ops"]},
                    {"id": "ship", "tool": "fault.echo", "arguments": {"text": "shipped"}, "depends_on": ["gate"]},
                ],
            },
            {
                "name": "whose",
                "steps": [
                    {"id": "who", "tool": "fault.whoami", "arguments": {}},
                    {
                        "id": "note",
                        "tool": "fault.echo",
                        "arguments": {"text": "{{ caller.subject }} of {{ caller.groups | join(',') }}"},
                    },
                ],
            },
        ],
    }
    config_file = directory / "vmcp.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    dev = _DevProcess(config_file)
    try:
        yield Stack(dev.wait_ready(wait_until), temporal, issuer, endpoint)
    finally:
        dev.stop()
        issuer.close()
        endpoint.close()


async def test_a_run_knows_its_caller_and_no_history_holds_a_secret(stack: Stack) -> None:
    token = stack.issuer.token(sub="dana", groups=["ops", "eng"])
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
        Client(streamable_http_client(stack.url, http_client=http)) as client,  # type: ignore[arg-type]
    ):
        result = await client.call_tool("whose", {})
    assert not result.is_error, result
    steps = result.structured_content or {}
    assert steps["note"]["output"]["text"] == "dana of ops,eng"
    issued = {hashlib.sha256(f"Bearer {t}".encode()).hexdigest()[:16]: t for t in stack.endpoint.issued}
    assert steps["who"]["output"]["authorization"] in issued  # the worker's own client-credentials token

    temporal = await TemporalClient.connect(stack.temporal)
    secrets = [token, token.split(".")[2], CLIENT_SECRET, *stack.endpoint.issued]
    histories = 0
    async for execution in temporal.list_workflows("WorkflowType = 'vmcp.CompositeTool'"):
        history = readable(await temporal.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history())
        if execution.id == (result.meta or {}).get("io.vmcp/run_id"):
            assert "dana" in history  # the caller's summary is there, as intended (and payloads are searched)
        for secret in secrets:
            assert secret not in history, f"a secret is in the history of {execution.id}"
        histories += 1
    assert histories >= 1


async def _call_as(stack: Stack, token: str, tool: str, arguments: dict[str, Any]) -> Any:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
        Client(streamable_http_client(stack.url, http_client=http)) as client,  # type: ignore[arg-type]
    ):
        return await client.call_tool(tool, arguments)


async def test_an_approver_in_an_mcp_client_is_who_the_token_says(stack: Stack) -> None:
    """Through MCP, the approver and its groups come from the token, not from what it declares."""
    erin = stack.issuer.token(sub="erin", groups=["eng"])
    olga = stack.issuer.token(sub="olga", groups=["ops"])
    waiting = await _call_as(stack, erin, "gated", {})
    run_id = (waiting.structured_content or {})["run_id"]
    assert (waiting.structured_content or {})["state"] == "awaiting_approval"

    refused = await _call_as(stack, erin, "vmcp_run_approve", {"run_id": run_id, "groups": ["ops"]})
    assert refused.is_error and "'erin' may not decide gate 'gate'" in refused.content[0].text
    approved = await _call_as(stack, olga, "vmcp_run_approve", {"run_id": run_id, "comment": "go"})
    assert not approved.is_error and (approved.structured_content or {})["by"] == "olga"
    result = await _call_as(stack, olga, "vmcp_run_result", {"run_id": run_id, "wait_seconds": 30})
    assert not result.is_error and (result.structured_content or {})["gate"]["output"]["approver"] == "olga"
    again = await _call_as(stack, olga, "vmcp_run_reject", {"run_id": run_id, "reason": "too late"})
    assert again.is_error and "nothing to decide" in again.content[0].text
