"""Composite tools end to end: one real `vmcp dev` stack (Temporal dev server, worker, façade) per module.

The backends are the fault server twice: `fault` over streamable HTTP in its own process (the tests
also ask it directly what it saw: calls, tallies, idempotency keys, cancellations) and `fe` over
stdio (a child of `vmcp dev`, used only by the `for_each` test so its `max_running` high-water mark
belongs to that test alone). Clients are the MCP SDK's real client; Temporal is inspected with the
Python SDK's client.

No assertion is about wall-clock time: ordering and overlap are proved with the steps' own
`started_at`/`finished_at` (workflow time) from `vmcp_run_status`, and "the call returned before
the step ended" with what the result says.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
import yaml
from mcp import Client
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client as TemporalClient
from temporalio.common import SearchAttributeKey
from temporalio.converter import PayloadConverter

from tests.history_text import readable
from tests.support.processes import DevStack

pytestmark = [pytest.mark.integration, pytest.mark.temporal, pytest.mark.anyio]

BIN = Path(sys.executable).parent
VMCP = str(BIN / "vmcp")
CALL_DEADLINE = 60.0
RUN_ID = re.compile(
    r"^vmcp-(?P<tool>[A-Za-z0-9_.-]+)-(?P<uuid>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)
FINISHED = ("completed", "failed", "skipped")

SLOW = "fault.slow"
LABEL_PARAM = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}


FAULT_TOKEN = f"fault-secret-{uuid.uuid4().hex}"


def composites() -> list[dict[str, Any]]:
    """The composite tools this module's stack serves (one per behaviour under test), and
    `local_retrying`: `retrying` with its steps as local activities (the retry policy and
    `on_error` hold as they are)."""
    tools = _composites()
    retrying = next(tool for tool in tools if tool["name"] == "retrying")
    local_steps = [{**step, "local": True} for step in retrying["steps"]]
    return [*tools, {**retrying, "name": "local_retrying", "steps": local_steps}]


def _composites() -> list[dict[str, Any]]:
    return [
        {
            # the README's wrapper: a name resolved to an id first, then the real call with safe values
            "name": "profile_page",
            "description": "Fetch a person's profile page by name.",
            "parameters": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
            "steps": [
                {"id": "find", "tool": "fault.lookup", "arguments": {"name": "{{ params.name }}"}},
                {
                    "id": "page",
                    "tool": "fault.fetch",
                    "depends_on": ["find"],
                    "arguments": {
                        "url": "https://people.example.test/{{ steps.find.output.id }}",
                        "max_length": 1000,
                        "raw": False,
                    },
                },
            ],
            "output": {"id": "{{ steps.find.output.id }}", "page": "{{ steps.page.output }}"},
        },
        {"name": "credentials", "steps": [{"id": "who", "tool": "fault.whoami", "arguments": {}}]},
        {
            "name": "guarded_fetch",  # fault.fetch has a URL policy (see `stack`): steps meet it too
            "parameters": {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]},
            "steps": [
                {
                    "id": "get",
                    "tool": "fault.fetch",
                    "arguments": {"url": "{{ params.url }}"},
                    "retry": {"max_attempts": 3, "initial_interval": "100ms"},
                }
            ],
        },
        {
            "name": "parallel3",
            "description": "Three independent slow steps",
            "parameters": LABEL_PARAM,
            "steps": [
                {"id": f"s{i}", "tool": SLOW, "arguments": {"seconds": 1, "label": f"{{{{ params.label }}}}-{i}"}}
                for i in (1, 2, 3)
            ],
        },
        {
            "name": "diamond",
            "description": "root, then a short branch of two steps and a long one, then a join",
            "steps": [
                {"id": "root", "tool": "fault_echo", "arguments": {"text": "root"}},  # an advertised name
                {"id": "short", "tool": SLOW, "arguments": {"seconds": 0.1}, "depends_on": ["root"]},
                {"id": "short_next", "tool": SLOW, "arguments": {"seconds": 0.1}, "depends_on": ["short"]},
                {"id": "long", "tool": SLOW, "arguments": {"seconds": 2.5}, "depends_on": ["root"]},
                {
                    "id": "join",
                    "tool": "fault.echo",
                    "arguments": {"text": "{{ steps.short_next.output.slept }}+{{ steps.long.output.slept }}"},
                    "depends_on": ["short_next", "long"],
                },
            ],
        },
        {
            # the diamond with every step offered as a local activity: root, short_next run locally;
            # short, long and join follow a local step, so they are regular activities
            "name": "local_diamond",
            "steps": [
                {"id": "root", "tool": "fault_echo", "arguments": {"text": "root"}, "local": True},
                {"id": "short", "tool": SLOW, "arguments": {"seconds": 0.1}, "depends_on": ["root"], "local": True},
                {
                    "id": "short_next",
                    "tool": SLOW,
                    "arguments": {"seconds": 0.1},
                    "depends_on": ["short"],
                    "local": True,
                },
                {"id": "long", "tool": SLOW, "arguments": {"seconds": 0.5}, "depends_on": ["root"], "local": True},
                {
                    "id": "join",
                    "tool": "fault.echo",
                    "arguments": {"text": "{{ steps.short_next.output.slept }}+{{ steps.long.output.slept }}"},
                    "depends_on": ["short_next", "long"],
                    "local": True,
                },
            ],
        },
        {
            "name": "gated",
            "parameters": {"type": "object", "properties": {"go": {"type": "boolean", "default": False}}},
            "steps": [
                {
                    "id": "maybe",
                    "tool": "fault.echo",
                    "arguments": {"text": "ran"},
                    "when": "params.go",
                    "default_output": {"text": "fallback"},
                },
                {
                    "id": "after",
                    "tool": "fault.echo",
                    "arguments": {"text": "{{ steps.maybe.status }}:{{ steps.maybe.output.text }}"},
                    "depends_on": ["maybe"],
                },
            ],
            "output": {"after": "{{ steps.after.output.text }}", "maybe": "{{ steps.maybe.status }}"},
        },
        {
            "name": "tolerant",
            "steps": [
                {
                    "id": "bad",
                    "tool": "fault.fail",
                    "arguments": {"message": "boom-tolerated"},
                    "on_error": "continue",
                    "default_output": {"n": 7},
                },
                {
                    "id": "after",
                    "tool": "fault.echo",
                    "arguments": {"text": "{{ steps.bad.status }}/{{ steps.bad.output.n }}"},
                    "depends_on": ["bad"],
                },
            ],
            "output": {"after": "{{ steps.after.output.text }}", "error": "{{ steps.bad.error }}"},
        },
        {
            "name": "strict",
            "parameters": LABEL_PARAM,
            "steps": [
                {"id": "bad", "tool": "fault.fail", "arguments": {"message": "kaput-{{ params.label }}"}},
                {
                    "id": "later",
                    "tool": "fault.tally",
                    "arguments": {"label": "{{ params.label }}"},
                    "depends_on": ["bad"],
                },
            ],
        },
        {
            "name": "strict_parallel",
            "parameters": LABEL_PARAM,
            "steps": [
                {"id": "bad", "tool": "fault.fail", "arguments": {"message": "kaput"}},
                {"id": "busy", "tool": SLOW, "arguments": {"seconds": 30, "label": "{{ params.label }}"}},
            ],
        },
        {
            "name": "retrying",
            "parameters": LABEL_PARAM,
            "steps": [
                {
                    "id": "enough",
                    "tool": "fault.flaky",
                    "arguments": {"label": "{{ params.label }}-a", "failures": 2},
                    "retry": {"max_attempts": 3, "initial_interval": "100ms", "backoff": 1.0},
                },
                {
                    "id": "too_few",
                    "tool": "fault.flaky",
                    "arguments": {"label": "{{ params.label }}-b", "failures": 2},
                    "retry": {"max_attempts": 2, "initial_interval": "100ms", "backoff": 1.0},
                    "on_error": "continue",
                },
            ],
        },
        {
            # one long step run as a local activity: the run's status query waits for it to end
            "name": "busy_local",
            "parameters": LABEL_PARAM,
            "wait": "1s",
            "steps": [
                {
                    "id": "nap",
                    "tool": SLOW,
                    "arguments": {"seconds": 25, "label": "{{ params.label }}"},
                    "timeout": "30s",
                    "local": True,
                }
            ],
        },
        {
            "name": "timeboxed",
            "parameters": LABEL_PARAM,
            "steps": [
                {
                    "id": "sleepy",
                    "tool": SLOW,
                    "arguments": {"seconds": 5, "label": "{{ params.label }}"},
                    "timeout": "1s",
                    "on_error": "continue",
                }
            ],
        },
        {
            "name": "fanout",
            "parameters": {
                "type": "object",
                # not `items`: `params.items` is the dict method in Jinja (see test_templating.py)
                "properties": {"labels": {"type": "array", "items": {"type": "string"}}},
                "required": ["labels"],
            },
            "steps": [
                {
                    "id": "each",
                    "type": "for_each",
                    "collection": "{{ params.labels }}",
                    "item_var": "it",
                    "max_parallel": 2,
                    "step": {"tool": "fe.slow", "arguments": {"seconds": 0.5, "label": "{{ it }}"}},
                }
            ],
            "output": {
                "labels": "{{ steps.each.output | map(attribute='label') | list }}",
                "count": "{{ steps.each.output | length }}",
                "summary": "{{ steps.each.output | length }} items",
            },
        },
        {
            "name": "keys",
            "parameters": LABEL_PARAM,
            "steps": [
                {"id": "one", "tool": "fault.tally", "arguments": {"label": "{{ params.label }}"}},
                {
                    "id": "many",
                    "type": "for_each",
                    "collection": "[0, 1, 2]",
                    "step": {"tool": "fault.tally", "arguments": {"label": "{{ params.label }}-{{ item }}"}},
                },
            ],
        },
        {
            "name": "typed",
            "parameters": {
                "type": "object",
                "properties": {
                    "n": {"type": "integer"},
                    "tag": {"type": "string", "default": "dflt"},
                    "extra": {"type": "array", "items": {"type": "integer"}, "default": [1, 2]},
                },
                "required": ["n"],
                "additionalProperties": False,
            },
            "steps": [{"id": "plus", "tool": "fault.add", "arguments": {"a": "{{ params.n }}", "b": 1}}],
            "output": {
                "sum": "{{ steps.plus.output.result }}",
                "tag": "{{ params.tag }}",
                "extra": "{{ params.extra }}",
                "text": "n={{ params.n }}",
            },
        },
        {
            "name": "waiter",
            "wait": "1s",
            "parameters": LABEL_PARAM,
            "steps": [{"id": "nap", "tool": SLOW, "arguments": {"seconds": 4, "label": "{{ params.label }}"}}],
        },
        {
            "name": "cancellable",
            "wait": "1s",
            "parameters": LABEL_PARAM,
            "steps": [{"id": "forever", "tool": SLOW, "arguments": {"seconds": 120, "label": "{{ params.label }}"}}],
        },
    ]


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    mcp_url: str
    temporal_address: str
    fault_url: str
    log: list[str] = field(default_factory=list)
    config_file: Path | None = None

    def log_tail(self, lines: int = 60) -> str:
        return "".join(self.log[-lines:])


@pytest.fixture(scope="module")
def stack(
    module_procs: Any,
    tmp_path_factory: pytest.TempPathFactory,
    free_port: Callable[[], int],
    fault_stdio_backend: Callable[..., dict[str, Any]],
    wait_until: Callable[..., Any],
) -> Iterator[Stack]:
    fault = module_procs.fault_http("fault")
    directory = tmp_path_factory.mktemp("composite-stack")
    temporal_address = f"127.0.0.1:{free_port()}"
    config = {
        "server": {"host": "127.0.0.1", "port": 0, "path": "/mcp"},
        "temporal": {
            "address": temporal_address,
            "namespace": "default",
            "task_queue": f"vmcp-composite-{uuid.uuid4().hex[:8]}",
            "dev_server": {"db_file": ".vmcp/temporal.db", "ui_port": 0},
        },
        "backends": [
            # its credential comes from the environment: workers resolve it, runs never carry it
            {
                "name": "fault",
                "transport": "streamable-http",
                "url": fault.url,
                "auth": {"type": "bearer", "token": "${VMCP_TEST_FAULT_TOKEN}"},
            },
            fault_stdio_backend("fe"),
        ],
        "aggregation": {
            "conflict_resolution": "prefix",
            "backends": {
                "fault": {"overrides": {"fetch": {"policy": {"url": {"url": {"hosts": ["*.example.test"]}}}}}}
            },
        },
        "composite_tools": composites(),
        "audit": {"file": "audit.jsonl"},  # beside the config: façade and worker both append to it
    }
    config_file = directory / "vmcp.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    os.environ["VMCP_TEST_FAULT_TOKEN"] = FAULT_TOKEN
    dev = DevStack(config_file)
    try:
        url, _ = dev.wait_ready()
        yield Stack(url, temporal_address, fault.url, dev.err, config_file)  # its logs
    finally:
        dev.shut_down()
        os.environ.pop("VMCP_TEST_FAULT_TOKEN", None)


# --------------------------------------------------------------------------- helpers


def _text(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


async def call(stack: Stack, tool: str, arguments: dict[str, Any] | None = None, **kwargs: Any) -> types.CallToolResult:
    with anyio.fail_after(CALL_DEADLINE):
        async with Client(stack.mcp_url) as client:
            return await client.call_tool(tool, arguments or {}, **kwargs)


async def ok(stack: Stack, tool: str, arguments: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """Call a composite that must succeed: (structuredContent, run id)."""
    result = await call(stack, tool, arguments)
    assert result.is_error is not True, f"{_text(result)}\n{stack.log_tail()}"
    assert isinstance(result.structured_content, dict), result
    return dict(result.structured_content), run_id_of(result)


def run_id_of(result: types.CallToolResult) -> str:
    meta = result.meta or {}
    run_id = meta.get("io.vmcp/run_id")
    assert isinstance(run_id, str), f"no io.vmcp/run_id in the result's _meta: {meta}"
    return run_id


async def status(stack: Stack, run_id: str) -> dict[str, Any]:
    result = await call(stack, "vmcp_run_status", {"run_id": run_id})
    assert result.is_error is not True, _text(result)
    assert isinstance(result.structured_content, dict)
    return dict(result.structured_content)


async def fault_count(stack: Stack) -> dict[str, Any]:
    """What the HTTP fault server saw, asked directly (not through vmcp)."""
    with anyio.fail_after(CALL_DEADLINE):
        async with Client(stack.fault_url) as client:
            result = await client.call_tool("count", {})
    assert isinstance(result.structured_content, dict)
    return dict(result.structured_content)


async def fe_count(stack: Stack) -> dict[str, Any]:
    """What the stdio fault server `fe` saw (a child of vmcp dev: asked through vmcp's forwarding)."""
    result = await call(stack, "fe_count")
    assert isinstance(result.structured_content, dict), _text(result)
    return dict(result.structured_content)


async def poll(condition: Callable[[], Any], what: str, timeout: float = CALL_DEADLINE) -> Any:
    """Await `condition()` (an async callable) until it returns something truthy; fail naming `what`."""
    deadline = anyio.current_time() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if anyio.current_time() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await anyio.sleep(0.1)


def when(step: dict[str, Any], key: str) -> datetime:
    value = step.get(key)
    assert isinstance(value, str), f"step has no {key}: {step}"
    return datetime.fromisoformat(value)


def label() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


async def temporal(stack: Stack) -> TemporalClient:
    return await TemporalClient.connect(stack.temporal_address)


# --------------------------------------------------------------------------- listing and arguments


async def test_composites_are_listed_with_their_parameter_schemas_and_the_builtin_tools(stack: Stack) -> None:
    async with Client(stack.mcp_url) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    for composite in composites():
        assert composite["name"] in tools, sorted(tools)  # never prefixed
    assert tools["typed"].input_schema["properties"]["tag"] == {"type": "string", "default": "dflt"}
    assert tools["typed"].input_schema["required"] == ["n"]
    assert tools["diamond"].description.startswith("root, then")
    for builtin in ("vmcp_run_status", "vmcp_run_result", "vmcp_run_cancel"):
        assert builtin in tools
        assert "run_id" in tools[builtin].input_schema["required"]


async def test_defaults_are_applied_and_output_templates_keep_native_types(stack: Stack) -> None:
    result, run_id = await ok(stack, "typed", {"n": 41})
    assert result == {"sum": 42, "tag": "dflt", "extra": [1, 2], "text": "n=41"}
    assert isinstance(result["sum"], int)
    found = RUN_ID.match(run_id)
    assert found and found.group("tool") == "typed", run_id
    uuid.UUID(found.group("uuid"))


@pytest.mark.parametrize(
    ("arguments", "field_name"),
    [({"n": "forty-one"}, "n"), ({}, "n"), ({"n": 1, "tag": 5}, "tag"), ({"n": 1, "bogus": True}, "bogus")],
)
async def test_bad_arguments_are_an_error_naming_the_field_and_start_no_run(
    stack: Stack, arguments: dict[str, Any], field_name: str
) -> None:
    before = await fault_count(stack)
    client = await temporal(stack)
    runs_before = [w.id async for w in client.list_workflows("VmcpTool='typed'")]

    result = await call(stack, "typed", arguments)
    assert result.is_error is True, result
    assert field_name in _text(result), _text(result)
    assert "invalid arguments" in _text(result)

    after = await fault_count(stack)
    assert after["calls"] == before["calls"] + 1  # only the `count` call itself: no step reached the backend
    # no run was started: a good call made afterwards is the only new run of `typed` Temporal lists
    _, run_id = await ok(stack, "typed", {"n": 1})

    async def listed() -> list[str] | None:
        ids = [w.id async for w in client.list_workflows("VmcpTool='typed'")]
        return ids if run_id in ids else None

    runs_after = await poll(listed, "the good run in Temporal visibility")
    assert set(runs_after) - set(runs_before) == {run_id}


# --------------------------------------------------------------------------- scheduling


async def test_independent_steps_run_in_parallel(stack: Stack) -> None:
    tag = label()
    result, run_id = await ok(stack, "parallel3", {"label": tag})
    assert set(result) == {"s1", "s2", "s3"}
    steps = (await status(stack, run_id))["steps"]
    starts = [when(steps[s], "started_at") for s in ("s1", "s2", "s3")]
    ends = [when(steps[s], "finished_at") for s in ("s1", "s2", "s3")]
    # the three [started_at, finished_at] intervals share a moment: every step started before any ended
    assert max(starts) < min(ends), steps
    counted = await fault_count(stack)
    assert all(counted["tallies"].get(f"{tag}-{i}") == 1 for i in (1, 2, 3)), counted["tallies"]


async def test_a_step_starts_when_its_own_dependencies_finish(stack: Stack) -> None:
    result, run_id = await ok(stack, "diamond")
    assert result["join"]["status"] == "completed"
    assert result["join"]["output"] == {"text": "0.1+2.5"}
    steps = (await status(stack, run_id))["steps"]
    for branch in ("short", "long"):
        assert when(steps[branch], "started_at") >= when(steps["root"], "finished_at")
    assert when(steps["short_next"], "started_at") >= when(steps["short"], "finished_at")
    # the short branch went on while the long one was still running: not level by level
    assert when(steps["short_next"], "started_at") < when(steps["long"], "finished_at"), steps
    assert when(steps["short_next"], "finished_at") < when(steps["long"], "finished_at"), steps
    # the join waited for both branches
    assert when(steps["join"], "started_at") >= when(steps["long"], "finished_at")
    assert when(steps["join"], "started_at") >= when(steps["short_next"], "finished_at")


# --------------------------------------------------------------------------- when, on_error, retry, timeout


async def test_when_false_skips_the_step_and_dependents_see_default_output(stack: Stack) -> None:
    result, run_id = await ok(stack, "gated")  # go defaults to false
    assert result == {"after": "skipped:fallback", "maybe": "skipped"}
    steps = (await status(stack, run_id))["steps"]
    assert steps["maybe"]["status"] == "skipped"
    assert steps["maybe"]["output"] == {"text": "fallback"}
    assert steps["after"]["status"] == "completed"

    result, _ = await ok(stack, "gated", {"go": True})
    assert result == {"after": "completed:ran", "maybe": "completed"}


async def test_on_error_continue_runs_dependents_with_status_failed_and_default_output(stack: Stack) -> None:
    result, run_id = await ok(stack, "tolerant")
    assert result["after"] == "failed/7"
    assert "boom-tolerated" in result["error"]
    steps = (await status(stack, run_id))["steps"]
    assert steps["bad"]["status"] == "failed"
    assert steps["bad"]["output"] == {"n": 7}
    assert steps["after"]["status"] == "completed"


async def test_on_error_fail_fails_the_run_names_the_step_and_runs_nothing_after(stack: Stack) -> None:
    tag = label()
    result = await call(stack, "strict", {"label": tag})
    assert result.is_error is True, result
    text = _text(result)
    assert "step 'bad'" in text, text
    assert f"kaput-{tag}" in text
    run_id = run_id_of(result)
    state = await status(stack, run_id)
    assert state["steps"]["bad"]["status"] == "failed"
    assert state["steps"]["later"]["status"] == "skipped"
    assert state["state"] == "failed"
    assert (await fault_count(stack))["tallies"].get(tag, 0) == 0  # `later` never reached the backend


async def test_a_step_meets_the_tools_argument_policy_before_any_call(stack: Stack) -> None:
    before = len((await fault_count(stack))["fetched"])
    refused = await call(stack, "guarded_fetch", {"url": "https://docs.example.test@evil.com/"})
    assert refused.is_error is True, refused
    state = await status(stack, run_id_of(refused))
    step = state["steps"]["get"]
    assert step["status"] == "failed" and step["attempts"] == 1, step  # not retried: it cannot pass later
    assert "argument `url` refused by policy (url): userinfo:" in step["error"], step["error"]
    served = await call(stack, "guarded_fetch", {"url": "https://docs.example.test/ok"})
    assert served.is_error is not True, _text(served)
    fetched = (await fault_count(stack))["fetched"][before:]
    assert [item["url"] for item in fetched] == ["https://docs.example.test/ok"]

    # the audit trail has the composite call (façade) and its step (worker), under the run id
    lines = [json.loads(line) for line in (stack.config_file.parent / "audit.jsonl").read_text().splitlines()]
    refused_run, served_run = run_id_of(refused), run_id_of(served)
    step_lines = {(line["run_id"], line.get("step")): line for line in lines if line.get("backend") == "fault"}
    assert step_lines[(refused_run, "get")]["decision"] == "policy"
    assert step_lines[(refused_run, "get")]["outcome"] == "refused"
    assert step_lines[(served_run, "get")]["outcome"] == "ok"
    assert step_lines[(served_run, "get")]["tool"] == "fault.fetch"
    calls = [line for line in lines if line["tool"] == "guarded_fetch" and line.get("run_id") == served_run]
    assert calls and calls[0]["outcome"] == "ok" and calls[0]["subject"] == "anonymous"


async def test_a_wrapper_resolves_a_name_then_makes_the_real_call_with_safe_values(stack: Stack) -> None:
    result = await call(stack, "profile_page", {"name": "Ada"})
    assert result.is_error is not True, _text(result)
    assert result.structured_content == {
        "id": "u-ada",
        "page": {"url": "https://people.example.test/u-ada", "max_length": 1000, "raw": False, "user": ""},
    }
    unknown = await call(stack, "profile_page", {"name": "Ada Lovelace"})
    assert unknown.is_error is True and "nobody is called 'Ada Lovelace'" in _text(unknown)


async def test_steps_use_the_workers_backend_credential_and_no_history_holds_it(stack: Stack) -> None:
    result = await call(stack, "credentials", {})
    assert result.is_error is not True, _text(result)
    seen = (result.structured_content or {})["who"]["output"]
    assert seen["authorization"] == hashlib.sha256(f"Bearer {FAULT_TOKEN}".encode()).hexdigest()[:16]
    client = await temporal(stack)
    searched = 0
    async for execution in client.list_workflows("WorkflowType = 'vmcp.CompositeTool'"):
        history = readable(await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history())
        assert FAULT_TOKEN not in history, execution.id
        if execution.id == run_id_of(result):
            assert seen["authorization"] in history  # a control: the step's (decoded) result is searched
        searched += 1
    assert searched >= 1  # every composite run of this stack so far, this one included


async def test_a_failing_step_cancels_the_steps_still_running(stack: Stack) -> None:
    tag = label()
    baseline = await fault_count(stack)
    result = await call(stack, "strict_parallel", {"label": tag})
    assert result.is_error is True, result
    assert "step 'bad'" in _text(result)

    async def backend_cancelled() -> bool:
        return bool((await fault_count(stack))["cancelled"] > baseline["cancelled"])

    await poll(backend_cancelled, "the backend to see the sibling's 30 s call cancelled")
    assert (await fault_count(stack))["tallies"].get(tag, 0) == 0
    busy = (await status(stack, run_id_of(result)))["steps"]["busy"]
    # it did not fail: it was stopped because `bad` failed (what the interpreter means to report)
    assert busy["status"] == "skipped", busy
    assert "cancelled" in busy["error"].lower(), busy


@pytest.mark.parametrize("tool", ["retrying", "local_retrying"])
async def test_retry_max_attempts_counts_every_attempt(stack: Stack, tool: str) -> None:
    tag = label()
    result, run_id = await ok(stack, tool, {"label": tag})
    if tool == "local_retrying":  # every attempt ran inside the workflow task: markers, no activities
        history = await (await temporal(stack)).get_workflow_handle(run_id).fetch_history()
        kinds = {event.event_type for event in history.events}
        assert EventType.EVENT_TYPE_MARKER_RECORDED in kinds
        assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in kinds
    assert result["enough"]["status"] == "completed"
    assert result["enough"]["attempts"] == 3
    assert result["enough"]["output"] == {"label": f"{tag}-a", "calls": 3}
    assert result["too_few"]["status"] == "failed"
    assert result["too_few"]["attempts"] == 2
    tallies = (await fault_count(stack))["tallies"]
    assert tallies[f"{tag}-a"] == 3
    assert tallies[f"{tag}-b"] == 2  # max_attempts 2: exactly two calls, no third


async def test_step_timeout_bounds_one_attempt(stack: Stack) -> None:
    tag = label()
    result, _ = await ok(stack, "timeboxed", {"label": tag})
    sleepy = result["sleepy"]
    assert sleepy["status"] == "failed", sleepy
    # the message says the attempt ran out of time, and after how long
    assert re.search(r"time[sd]?[ _-]?out|did not answer within 1s", sleepy["error"], re.IGNORECASE), sleepy
    assert sleepy["attempts"] == 1
    assert (await fault_count(stack))["tallies"].get(tag, 0) == 0  # the 5 s call never completed


# --------------------------------------------------------------------------- for_each and idempotency keys


async def test_for_each_keeps_item_order_and_respects_max_parallel(stack: Stack) -> None:
    items = [f"{label()}-{i}" for i in range(6)]
    result, run_id = await ok(stack, "fanout", {"labels": items})
    assert result == {"labels": items, "count": 6, "summary": "6 items"}
    steps = (await status(stack, run_id))["steps"]
    assert steps["each"]["status"] == "completed"
    seen = await fe_count(stack)  # `fe` serves this test only: its high-water mark is this run's
    assert seen["max_running"] <= 2, seen
    assert seen["max_running"] == 2, seen  # and it did run two at a time
    assert all(seen["tallies"].get(item) == 1 for item in items), seen["tallies"]


async def test_every_step_call_carries_its_idempotency_key(stack: Stack) -> None:
    tag = label()
    result, run_id = await ok(stack, "keys", {"label": tag})
    assert result["one"]["output"]["key"] == f"{run_id}/one"
    assert [item["key"] for item in result["many"]["output"]] == [f"{run_id}/many/{i}" for i in range(3)]
    assert [item["label"] for item in result["many"]["output"]] == [f"{tag}-{i}" for i in range(3)]
    keys = (await fault_count(stack))["keys"]
    for key in (f"{run_id}/one", *(f"{run_id}/many/{i}" for i in range(3))):
        assert keys.get(key) == 1, (key, keys)


async def test_without_output_the_result_is_keyed_by_step_id(stack: Stack) -> None:
    result, _ = await ok(stack, "keys", {"label": label()})
    assert set(result) == {"one", "many"}
    for step in result.values():
        assert {"status", "output", "duration_ms", "attempts"} <= set(step), step
        assert step["status"] == "completed"
        assert isinstance(step["duration_ms"], int) and step["duration_ms"] >= 0
    assert result["one"]["attempts"] == 1
    assert result["many"]["attempts"] == 3  # one attempt per item


# --------------------------------------------------------------------------- runs that outlast the call


async def test_a_run_that_outlasts_wait_answers_with_its_id_and_is_reachable_later(stack: Stack) -> None:
    tag = label()
    first = await call(stack, "waiter", {"label": tag})
    assert first.is_error is not True, _text(first)
    body = first.structured_content
    assert isinstance(body, dict)
    assert body["state"] == "running", body  # answered while the 4 s step was still going
    assert set(body) >= {"run_id", "state", "waiting_for"}
    assert RUN_ID.match(body["run_id"]) and body["run_id"].startswith("vmcp-waiter-")
    assert "vmcp_run_result" in _text(first)

    running = await status(stack, body["run_id"])
    assert running["state"] == "running"
    assert running["steps"]["nap"]["status"] in ("pending", "running")

    final = await call(stack, "vmcp_run_result", {"run_id": body["run_id"], "wait_seconds": 30})
    assert final.is_error is not True, _text(final)
    assert final.structured_content is not None
    assert final.structured_content["nap"]["status"] == "completed"
    assert final.structured_content["nap"]["output"] == {"slept": 4, "label": tag}
    assert run_id_of(final) == body["run_id"]
    done = await status(stack, body["run_id"])
    assert done["state"] == "completed"
    assert done["steps"]["nap"]["status"] == "completed"


async def test_cancel_stops_the_run_and_its_backend_call(stack: Stack) -> None:
    tag = label()
    baseline = await fault_count(stack)
    first = await call(stack, "cancellable", {"label": tag})
    assert first.structured_content is not None and first.structured_content["state"] == "running", first
    run_id = first.structured_content["run_id"]

    asked = 0

    async def slow_call_in_flight() -> bool:
        nonlocal asked
        asked += 1
        now = await fault_count(stack)
        return now["calls"] - baseline["calls"] - asked >= 1  # calls other than our own `count`s

    await poll(slow_call_in_flight, "the 120 s step to reach the backend")
    cancelled = await call(stack, "vmcp_run_cancel", {"run_id": run_id})
    assert cancelled.is_error is not True, _text(cancelled)

    async def closed() -> dict[str, Any] | None:
        state = await status(stack, run_id)
        return state if state.get("closed_at") else None

    final = await poll(closed, "the run to close")
    assert final["state"] in ("cancelled", "canceled"), final

    async def backend_cancelled() -> bool:
        return bool((await fault_count(stack))["cancelled"] > baseline["cancelled"])

    await poll(backend_cancelled, "the backend to see its slow call cancelled")
    assert (await fault_count(stack))["tallies"].get(tag, 0) == 0


async def test_a_cancelled_run_says_cancelled_in_its_status_and_search_attribute(stack: Stack) -> None:
    """After vmcp_run_cancel the run's state is `cancelled`, as vmcp spells it elsewhere, and its
    VmcpStatus search attribute leaves `running` (`vmcp runs list` reads it)."""
    first = await call(stack, "cancellable", {"label": label()})
    assert first.structured_content is not None
    run_id = first.structured_content["run_id"]
    await call(stack, "vmcp_run_cancel", {"run_id": run_id})

    async def closed() -> dict[str, Any] | None:
        state = await status(stack, run_id)
        return state if state.get("closed_at") else None

    final = await poll(closed, "the run to close")
    client = await temporal(stack)
    status_key = SearchAttributeKey.for_keyword("VmcpStatus")

    async def visible_status() -> str | None:
        async for execution in client.list_workflows(f"WorkflowId='{run_id}' AND ExecutionStatus='Canceled'"):
            return execution.typed_search_attributes.get(status_key) or "<unset>"
        return None

    attribute = await poll(visible_status, "the cancelled run in Temporal visibility")
    assert (final["state"], attribute) == ("cancelled", "cancelled"), final


async def test_builtin_tools_name_an_unknown_run(stack: Stack) -> None:
    for tool in ("vmcp_run_status", "vmcp_run_result", "vmcp_run_cancel"):
        for run_id in ("vmcp-nothing-00000000-0000-0000-0000-000000000000", "not-a-run-id"):
            result = await call(stack, tool, {"run_id": run_id})
            assert result.is_error is True, (tool, result)
            assert f"no run {run_id!r} of yours" in _text(result)


# --------------------------------------------------------------------------- progress, Temporal side


async def test_progress_notification_per_finished_step(stack: Stack) -> None:
    received: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        received.append((progress, total, message))

    result = await call(stack, "diamond", {}, progress_callback=on_progress)
    assert result.is_error is not True, _text(result)
    assert [p for p, _, _ in received] == [1, 2, 3, 4, 5], received
    assert {t for _, t, _ in received} == {5}
    named = [m or "" for _, _, m in received]
    for step in ("root", "short", "short_next", "long", "join"):
        assert sum(f"step {step}:" in m for m in named) == 1, named


async def test_progress_notifications_follow_the_order_steps_finish_in(stack: Stack) -> None:
    """A step is announced after every step it depends on (it cannot finish before them)."""
    received: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        received.append((message or "").removeprefix("step ").partition(":")[0])

    result = await call(stack, "diamond", {}, progress_callback=on_progress)
    assert result.is_error is not True, _text(result)
    position = {step: index for index, step in enumerate(received)}
    depends_on = {"short": ["root"], "short_next": ["short"], "long": ["root"], "join": ["short_next", "long"]}
    for step, deps in depends_on.items():
        for dep in deps:
            assert position[dep] < position[step], f"{step} announced before its dependency {dep}: {received}"


async def test_runs_carry_search_attributes_and_activity_summaries(stack: Stack) -> None:
    _, run_id = await ok(stack, "parallel3", {"label": label()})
    client = await temporal(stack)
    tool_key = SearchAttributeKey.for_keyword("VmcpTool")
    status_key = SearchAttributeKey.for_keyword("VmcpStatus")

    async def listed() -> Any:
        async for execution in client.list_workflows(f"VmcpTool='parallel3' AND WorkflowId='{run_id}'"):
            if execution.typed_search_attributes.get(status_key) == "completed":
                return execution
        return None

    execution = await poll(listed, "the run in Temporal visibility with VmcpStatus=completed")
    assert execution.workflow_type == "vmcp.CompositeTool"
    assert execution.typed_search_attributes.get(tool_key) == "parallel3"
    found = [e.id async for e in client.list_workflows(f"VmcpStatus='completed' AND WorkflowId='{run_id}'")]
    assert found == [run_id]

    history = await client.get_workflow_handle(run_id).fetch_history()
    converter = PayloadConverter.default
    summaries = sorted(
        converter.from_payload(event.user_metadata.summary, str)
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED and event.user_metadata.HasField("summary")
    )
    assert summaries == [f"s{i}: fault.slow" for i in (1, 2, 3)], summaries
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert scheduled == ["vmcp.call_backend_tool"] * 3


# --------------------------------------------------------------------------- the operator's CLI


def _vmcp_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    assert stack.config_file is not None
    return subprocess.run(
        [VMCP, *args, "--config", str(stack.config_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=stack.config_file.parent,
    )


async def test_runs_list_and_show_read_runs_from_temporal(stack: Stack) -> None:
    result = await call(stack, "diamond")
    assert not result.is_error, _text(result)
    run_id = (result.meta or {})["io.vmcp/run_id"]

    listed = _vmcp_cli(stack, "runs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    runs = {run["run_id"]: run for run in json.loads(listed.stdout)}
    assert runs[run_id]["tool"] == "diamond" and runs[run_id]["state"] == "completed"

    table = _vmcp_cli(stack, "runs", "list")
    assert table.returncode == 0 and run_id in table.stdout and "Traceback" not in table.stderr

    shown = _vmcp_cli(stack, "runs", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert "state    completed" in shown.stdout
    table_lines = shown.stdout.split("STEP", 1)[1].splitlines()[1:]
    steps = [line.split()[0] for line in table_lines if line.strip()]
    assert steps[0] == "root" and steps[-1] == "join", shown.stdout  # in the order they started

    missing = _vmcp_cli(stack, "runs", "show", "vmcp-diamond-00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1 and "no run" in missing.stderr and "Traceback" not in missing.stderr


async def test_local_steps_report_progress_audit_and_read_step_by_step(stack: Stack) -> None:
    """Steps run as local activities keep what regular ones give: a progress notification each,
    in dependency order; an audit line each under the run id; `vmcp runs show` lists them all;
    and the history names each one (markers for the local steps, activities for the rest)."""
    received: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        received.append((message or "").removeprefix("step ").partition(":")[0])

    result = await call(stack, "local_diamond", {}, progress_callback=on_progress)
    assert result.is_error is not True, _text(result)
    run_id = run_id_of(result)
    assert sorted(received) == sorted(["root", "short", "short_next", "long", "join"]), received
    position = {step: index for index, step in enumerate(received)}
    for step, deps in {
        "short": ["root"],
        "short_next": ["short"],
        "long": ["root"],
        "join": ["short_next", "long"],
    }.items():
        assert all(position[dep] < position[step] for dep in deps), received

    lines = [json.loads(line) for line in (stack.config_file.parent / "audit.jsonl").read_text().splitlines()]
    steps = {line["step"]: line for line in lines if line.get("run_id") == run_id and line.get("step")}
    assert set(steps) == {"root", "short", "short_next", "long", "join"}, steps
    assert all(line["outcome"] == "ok" and line["backend"] == "fault" for line in steps.values()), steps

    shown = _vmcp_cli(stack, "runs", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    table_lines = shown.stdout.split("STEP", 1)[1].splitlines()[1:]
    listed = {line.split()[0]: line for line in table_lines if line.strip()}
    assert set(listed) == {"root", "short", "short_next", "long", "join"}, shown.stdout
    assert all("completed" in line for line in listed.values()), shown.stdout

    history = await (await temporal(stack)).get_workflow_handle(run_id).fetch_history()
    converter = PayloadConverter.default
    markers, activities = [], []
    for event in history.events:
        if not event.user_metadata.HasField("summary"):
            continue
        summary = converter.from_payload(event.user_metadata.summary, str)
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            markers.append(summary)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            activities.append(summary)
    assert sorted(markers) == ["root: fault.echo", "short_next: fault.slow"], markers
    assert sorted(activities) == ["join: fault.echo", "long: fault.slow", "short: fault.slow"], activities


async def test_a_run_busy_in_a_local_step_still_answers_its_status(stack: Stack) -> None:
    """A query waits for the workflow task, and a local step runs inside one: the status tool,
    `vmcp runs show` and `tasks/get`'s reading answer while the 25 s step runs, from the run's
    search attributes and marked busy, instead of waiting for the step to end (the run is left to
    finish on its own: a loaded machine may take seconds to start the CLI, hence the long step)."""
    started = await call(stack, "busy_local", {"label": label()})  # its `wait` (1 s) ends first
    run_id = (started.structured_content or {}).get("run_id")
    assert isinstance(run_id, str) and (started.structured_content or {}).get("state") == "running", started
    # before the step ends: busy, or (on a slow machine, past the workflow task's heartbeat at
    # 8 s, when the run answers between two parts of the task) the step still running
    state = await status(stack, run_id)
    assert state["state"] == "running", state
    assert ("busy" in state and state["steps"] == {}) or state["steps"]["nap"]["status"] == "running", state
    shown = _vmcp_cli(stack, "runs", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert "state    running" in shown.stdout, shown.stdout
    assert "busy     a step is running" in shown.stdout or re.search(r"\nnap +running", shown.stdout), shown.stdout
