"""Composite runs under OAuth on a real `vmcp dev` stack: the run knows who called (subject, groups),
its steps reach a backend with vmcp's own client-credentials token, and no secret — the caller's
token, the backend's token, the client secret — appears in any workflow history."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import mcp_types as types
import pytest
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from temporalio.client import Client as TemporalClient

from tests.history_text import readable
from tests.integration.test_auth import Issuer
from tests.integration.test_backend_credentials import CLIENT_SECRET, TokenEndpoint
from tests.integration.test_tasks import Wire, terminal
from tests.support.processes import DevStack

pytestmark = [pytest.mark.integration, pytest.mark.temporal, pytest.mark.anyio]


class Stack:
    def __init__(self, url: str, temporal: str, issuer: Issuer, endpoint: TokenEndpoint, exchanging: str) -> None:
        self.url = url
        self.temporal = temporal
        self.issuer = issuer
        self.endpoint = endpoint
        self.exchanging = exchanging  # the token_exchange backend, called directly


@pytest.fixture(scope="module")
def stack(
    module_procs: Any, tmp_path_factory: pytest.TempPathFactory, free_port: Callable[[], int], wait_until: Any
) -> Iterator[Stack]:
    issuer, endpoint = Issuer(), TokenEndpoint()
    directory = tmp_path_factory.mktemp("auth-runs")
    (directory / "client-secret").write_text(CLIENT_SECRET)
    fault = module_procs.fault_http("fault")
    exchanging = module_procs.fault_http("exchanging")
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
            },
            {
                "name": "ex",
                "transport": "streamable-http",
                "url": exchanging.url,
                "auth": {
                    "type": "token_exchange",
                    "token_url": endpoint.url,
                    "client_id": "vmcp",
                    "client_secret_file": "client-secret",
                    "audience": "https://ex.test",
                },
            },
        ],
        "composite_tools": [
            {
                "name": "gated",
                "steps": [
                    {"id": "gate", "type": "approval", "message": "Ship?", "approvers": ["group:ops"]},
                    {"id": "ship", "tool": "fault.echo", "arguments": {"text": "shipped"}, "depends_on": ["gate"]},
                ],
            },
            {  # names the tool by its advertised name: only the worker can catch it
                "name": "exchanged",
                "steps": [{"id": "who", "tool": "ex_whoami", "arguments": {}}],
            },
            {
                "name": "asking",
                "steps": [
                    {
                        "id": "ask",
                        "type": "elicitation",
                        "message": "Which branch?",
                        "requested_schema": {
                            "type": "object",
                            "properties": {"branch": {"type": "string"}},
                            "required": ["branch"],
                        },
                    }
                ],
                "output": {"branch": "{{ steps.ask.output.content.branch }}", "by": "{{ steps.ask.output.responder }}"},
            },
            {
                "name": "team_gated",
                "steps": [{"id": "gate", "type": "approval", "message": "Ship?", "approvers": ["group:eng"]}],
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
        "authorization": {
            "default": "deny",
            "rules": [
                # operators (group sre) may follow and cancel anybody's runs
                {"tools": ["vmcp_run_status", "vmcp_run_cancel"], "runs": "any", "when": {"groups": ["sre"]}},
                {"tools": ["*"]},
            ],
        },
    }
    config_file = directory / "vmcp.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    dev = DevStack(config_file)
    try:
        yield Stack(dev.wait_ready()[0], temporal, issuer, endpoint, exchanging.url)
    finally:
        dev.shut_down()
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
    assert refused.is_error and "'erin' started this run and may not decide" in refused.content[0].text
    approved = await _call_as(stack, olga, "vmcp_run_approve", {"run_id": run_id, "comment": "go"})
    assert not approved.is_error and (approved.structured_content or {})["by"] == "olga"
    result = await _call_as(stack, erin, "vmcp_run_result", {"run_id": run_id, "wait_seconds": 30})
    assert not result.is_error and (result.structured_content or {})["gate"]["output"]["approver"] == "olga"
    again = await _call_as(stack, olga, "vmcp_run_reject", {"run_id": run_id, "reason": "too late"})
    assert again.is_error and "nothing to decide" in again.content[0].text


async def test_a_run_belongs_to_its_caller(stack: Stack) -> None:
    """Another caller can neither read, await nor cancel a run, nor decide a gate it is not an
    approver of; an operator whom a `runs: any` rule allows can follow and cancel it."""
    erin = stack.issuer.token(sub="erin", groups=["eng"])
    mallory = stack.issuer.token(sub="mallory", groups=["eng"])
    oscar = stack.issuer.token(sub="oscar", groups=["sre"])
    waiting = await _call_as(stack, erin, "gated", {})
    run_id = (waiting.structured_content or {})["run_id"]
    for tool, arguments in [
        ("vmcp_run_status", {}),
        ("vmcp_run_result", {"wait_seconds": 0}),
        ("vmcp_run_cancel", {}),
        ("vmcp_run_approve", {}),
        ("vmcp_run_reject", {"reason": "mine now"}),
    ]:
        refused = await _call_as(stack, mallory, tool, {"run_id": run_id, **arguments})
        assert refused.is_error, (tool, refused)
    own = await _call_as(stack, erin, "vmcp_run_status", {"run_id": run_id})
    assert not own.is_error and (own.structured_content or {})["state"] == "awaiting_approval"  # unaffected
    decisions = (own.structured_content or {}).get("decisions") or []
    assert decisions == []  # mallory's attempts never entered the run
    unknown = await _call_as(stack, mallory, "vmcp_run_status", {"run_id": run_id})
    missing = await _call_as(stack, mallory, "vmcp_run_status", {"run_id": f"vmcp-gated-{uuid.uuid4()}"})
    assert unknown.content[0].text.replace(run_id, "ID") == missing.content[0].text.replace(
        missing.content[0].text.split("'")[1], "ID"
    )  # somebody else's run reads exactly like no run at all
    watched = await _call_as(stack, oscar, "vmcp_run_status", {"run_id": run_id})
    assert not watched.is_error and (watched.structured_content or {})["state"] == "awaiting_approval"
    assert (await _call_as(stack, oscar, "vmcp_run_result", {"run_id": run_id})).is_error  # not granted to sre
    cancelled = await _call_as(stack, oscar, "vmcp_run_cancel", {"run_id": run_id})
    assert not cancelled.is_error


async def test_the_run_tools_refuse_workflows_that_are_not_vmcp_runs(stack: Stack) -> None:
    """Another application's workflow in the same namespace — whatever its id looks like — is
    neither read nor cancelled; it keeps running."""
    erin = stack.issuer.token(sub="erin", groups=["eng"])
    temporal = await TemporalClient.connect(stack.temporal)
    ids = ["billing-nightly", f"vmcp-gated-{uuid.uuid4()}"]  # the second looks like a run id
    for workflow_id in ids:  # no worker polls this queue: the workflows just stay running
        await temporal.start_workflow("billing.Nightly", id=workflow_id, task_queue="billing")
    for workflow_id in ids:
        for tool in ("vmcp_run_status", "vmcp_run_cancel", "vmcp_run_approve"):
            refused = await _call_as(stack, erin, tool, {"run_id": workflow_id})
            assert refused.is_error and "no run" in refused.content[0].text, (tool, refused)
        description = await temporal.get_workflow_handle(workflow_id).describe()
        assert description.status is not None and description.status.name == "RUNNING"
        history = await temporal.get_workflow_handle(workflow_id).fetch_history()
        assert not [e for e in history.events if e.HasField("workflow_execution_cancel_requested_event_attributes")]
        assert not [e for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")]
        await temporal.get_workflow_handle(workflow_id).terminate("test over")


async def test_a_caller_cannot_approve_its_own_run_and_a_subject_is_no_group(stack: Stack) -> None:
    erin = stack.issuer.token(sub="erin", groups=["eng"])
    ed = stack.issuer.token(sub="ed", groups=["eng"])
    impostor = stack.issuer.token(sub="group:eng", groups=[])
    waiting = await _call_as(stack, erin, "team_gated", {})
    run_id = (waiting.structured_content or {})["run_id"]
    own = await _call_as(stack, erin, "vmcp_run_approve", {"run_id": run_id})
    assert own.is_error and "started this run" in own.content[0].text
    spelt = await _call_as(stack, impostor, "vmcp_run_approve", {"run_id": run_id})
    assert spelt.is_error and "may not decide" in spelt.content[0].text
    approved = await _call_as(stack, ed, "vmcp_run_approve", {"run_id": run_id, "comment": "lgtm"})
    assert not approved.is_error and (approved.structured_content or {})["by"] == "ed"
    result = await _call_as(stack, erin, "vmcp_run_result", {"run_id": run_id, "wait_seconds": 30})
    assert not result.is_error and (result.structured_content or {})["gate"]["output"]["approver"] == "ed"


async def test_a_request_state_answers_only_for_the_caller_it_was_issued_to(stack: Stack) -> None:
    """A 2026-07-28 question's requestState is sealed to the run and to the caller asked: replayed by
    somebody else it is refused, and the run takes nothing from them; the answer records who gave it."""
    erin = stack.issuer.token(sub="erin", groups=["eng"])
    mallory = stack.issuer.token(sub="mallory", groups=["eng"])

    async def never(context: Any, params: Any) -> types.ElicitResult:  # declares the capability only
        return types.ElicitResult(action="cancel")

    async def call(token: str, **extra: Any) -> Any:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
            Client(
                streamable_http_client(stack.url, http_client=http),  # type: ignore[arg-type]
                mode="2026-07-28",
                elicitation_callback=never,
            ) as client,
        ):
            return await client.session.call_tool("asking", {}, allow_input_required=True, **extra)

    asked = await call(erin)
    assert isinstance(asked, types.InputRequiredResult), asked
    answer = {"ask": types.ElicitResult(action="accept", content={"branch": "evil"})}
    replayed = await call(mallory, input_responses=answer, request_state=asked.request_state)
    assert replayed.is_error and "issued to another caller" in replayed.content[0].text
    answer = {"ask": types.ElicitResult(action="accept", content={"branch": "main"})}
    done = await call(erin, input_responses=answer, request_state=asked.request_state)
    assert not done.is_error, done
    assert done.structured_content == {"branch": "main", "by": "erin"}


async def test_a_composite_gains_no_access_the_callers_own_token_lacks(stack: Stack) -> None:
    """A step on a token_exchange backend has no caller token: it would call as vmcp's service
    identity, so it is refused (the backend never sees it) unless the operator consents."""
    erin = stack.issuer.token(sub="erin", groups=["eng"])
    async with Client(stack.exchanging) as direct:
        before = (await direct.call_tool("count", {})).structured_content or {}
    result = await _call_as(stack, erin, "exchanged", {})
    assert result.is_error and "exchanges each caller's token" in str(result.structured_content)
    async with Client(stack.exchanging) as direct:
        after = (await direct.call_tool("count", {})).structured_content or {}
    assert after["calls"] == before["calls"] + 1  # the count calls themselves: whoami never arrived
    plain = await _call_as(stack, erin, "ex_whoami", {})  # the caller's own, exchanged token
    assert not plain.is_error, plain


async def test_a_composite_task_belongs_to_its_caller(stack: Stack) -> None:
    """The same ownership through the tasks extension: another caller's `tasks/get`,
    `tasks/update` and `tasks/cancel` of erin's task answer as for no task at all, a listen
    stream does not honour it for them, and an operator a `runs: any` rule allows follows and
    cancels it."""
    erin, mallory, oscar = (
        Wire(stack.url, token=stack.issuer.token(sub=who, groups=groups))
        for who, groups in (("erin", ["eng"]), ("mallory", ["eng"]), ("oscar", ["sre"]))
    )
    task_id = (await erin.call("gated", {}))["taskId"]
    waiting = await erin.until(task_id, lambda task: "approval" in (task.get("statusMessage") or ""))
    assert waiting["status"] == "working" and "group:ops" in waiting["statusMessage"], waiting
    for method, extra in (("tasks/get", {}), ("tasks/update", {"inputResponses": {}}), ("tasks/cancel", {})):
        refused = await mallory.error(method, {"taskId": task_id, **extra}, task_id)
        nobodys = f"vmcp-gated-{uuid.uuid4()}"
        missing = await mallory.error(method, {"taskId": nobodys, **extra}, nobodys)
        assert refused["code"] == missing["code"] == -32602, (method, refused, missing)
        # somebody else's task reads exactly like no task at all
        assert refused["message"].replace(task_id, "ID") == missing["message"].replace(nobodys, "ID")
    heard = await mallory.listen({"taskIds": [task_id]}, lambda f: "subscriptions/acknowledged" in f.get("method", ""))
    assert heard[-1]["params"]["notifications"]["taskIds"] == [], heard
    assert (await erin.task("tasks/get", task_id))["status"] == "working"  # mallory's cancel did nothing
    assert (await oscar.task("tasks/get", task_id))["taskId"] == task_id
    await oscar.task("tasks/cancel", task_id)
    assert (await erin.until(task_id, terminal))["status"] == "cancelled"
