"""A composite run survives the death of any one process: worker, Temporal, façade.

Every part is a real process started here: a Temporal dev server (the command line `vmcp dev`
builds, on a SQLite file, so it can be killed -9 and started again on the same data and port),
`python worker.py`, `vmcp serve`, and the fault server over HTTP as the only backend, in its own
process so that its counters outlive every crash. The run is a chain `a → b → c → d` whose `b`
is a `slow` call; each test waits until `b` is in progress at the backend, kills one process with
SIGKILL, starts its replacement, and fetches the result through the façade.

What "exactly once" means here, and what is asserted:
- A step that completed before the crash, or started after it, ran exactly once: Temporal
  recorded its completion, so it is never called again (`a`, `c`, `d`: one call each at the
  backend, each under its own idempotency key `<run id>/<step id>`).
- The step in flight at the crash is at-least-once by design (DESIGN.md: "an in-flight activity
  may run twice after a crash"). The run's history says how many times `b` was called (one more
  than the attempts Temporal timed out, every call under the key `<run id>/b`), and the backend's
  counters must account for each call exactly: completed there, or abandoned when its client died.
  A worker killed mid-call: two calls. Temporal killed mid-call: one call if the worker could
  report its result after the restart, two if it gave up first. The façade killed: one call.
"""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
import yaml
from mcp import Client

from tests.support.processes import DEADLINE, Child, poll, tail
from tests.support.tasks_client import CreatedTask, TasksExtension, get_task, until_terminal
from tests.support.temporal import TemporalServer

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SLOW_SECONDS = 6  # long enough to kill something while `b` is in progress
TOOL = "durable_chain"
GATED = "durable_gate"
QUICK = "quick_tally"
LOCAL = "durable_local_chain"

pytestmark = [pytest.mark.integration, pytest.mark.temporal, pytest.mark.anyio]


@pytest.fixture(scope="module")
async def temporal(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """This module's own Temporal: its tests kill it."""
    server = await TemporalServer(tmp_path_factory.mktemp("temporal")).start()
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- the stack


def composite(wait: str = "1s", *, name: str = "", local: bool = False) -> dict[str, Any]:
    """`a → b → c → d`; `b` is slow. `wait` is short: a call answers with the run id at once.
    `local`: `b`, `c` and `d` may run as local activities (`a` may not): `b` and `d` do, `c` is
    a regular one because the step before it ran locally."""

    def tally(step: str, after: str | None) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": step,
            "tool": "fault.tally",
            "arguments": {"label": f"{{{{ params.tag }}}}-{step}"},
        }
        if after:
            entry["depends_on"] = [after]
        return entry

    steps: list[dict[str, Any]] = [
        tally("a", None),
        {
            "id": "b",
            "tool": "fault.slow",
            "arguments": {"seconds": SLOW_SECONDS, "label": "{{ params.tag }}-b"},
            "depends_on": ["a"],
        },
        tally("c", "b"),
        tally("d", "c"),
    ]
    for step in steps:
        step["local"] = local and step["id"] != "a"
    return {
        "name": name or TOOL,
        "description": "Four sequential steps; the second takes a while.",
        "parameters": {"type": "object", "properties": {"tag": {"type": "string"}}, "required": ["tag"]},
        "wait": wait,
        "timeout": "5m",
        "steps": steps,
    }


@dataclass
class Stack:
    """One test's processes around the module's Temporal: fault server, workers, façade."""

    temporal: TemporalServer
    procs: Any  # conftest.Processes
    directory: Path
    fault: Any  # conftest.FaultHttp
    config: dict[str, Any]
    config_file: Path
    facade: Any = None  # conftest.Vmcp
    workers: list[Child] = field(default_factory=list)

    @property
    def url(self) -> str:
        return str(self.facade.url)

    def start_facade(self) -> Any:
        self.facade = self.procs.vmcp(self.config, filename=self.config_file.name)
        return self.facade

    async def start_worker(self) -> Child:
        index = len(self.workers) + 1
        args = [sys.executable, str(ROOT / "worker.py"), "--config", str(self.config_file)]
        worker = Child(args, self.directory / f"worker-{index}.log", self.directory).start()
        self.workers.append(worker)

        async def polling() -> bool:
            if not worker.running:
                raise AssertionError(f"worker {index} exited:\n{tail(worker.log)}")
            return "vmcp worker: polling" in worker.output()

        await poll(polling, f"worker {index} to poll its task queue")
        return worker

    async def call(self, name: str, arguments: dict[str, Any], url: str | None = None) -> types.CallToolResult:
        async with Client(url or self.url, read_timeout_seconds=DEADLINE + 30) as client:
            return await client.call_tool(name, arguments)

    async def start_run(self, tag: str, tool: str = TOOL) -> str:
        started = await self.call(tool, {"tag": tag})
        assert not started.is_error, started
        body = started.structured_content
        assert body is not None and body["state"] == "running", (body, self.logs())
        run_id = body["run_id"]
        assert isinstance(run_id, str) and run_id.startswith(f"vmcp-{tool}-"), run_id
        return run_id

    async def counters(self) -> dict[str, Any]:
        async with Client(self.fault.url) as client:
            result = await client.call_tool("count", {})
        assert result.structured_content is not None
        return dict(result.structured_content)

    async def wait_until_b_is_in_progress(self, run_id: str, tag: str) -> None:
        """`b`'s call has reached the backend and not finished: the moment to kill something."""

        async def b_running() -> bool:
            status = await self.call("vmcp_run_status", {"run_id": run_id})
            assert not status.is_error, status
            steps = (status.structured_content or {}).get("steps", {})
            return bool(steps.get("b", {}).get("status") == "running")

        await poll(b_running, "step b to be running (vmcp_run_status)")

        async def at_backend() -> bool:
            counted = await self.counters()
            return bool(counted["max_running"] >= 1)  # `b` is the only slow call this fault server sees

        await poll(at_backend, "step b's call to reach the fault server")
        counted = await self.counters()
        assert f"{tag}-b" not in counted["tallies"], "b finished before anything was killed; make it slower"

    async def result(self, run_id: str, url: str | None = None) -> types.CallToolResult:
        return await self.call("vmcp_run_result", {"run_id": run_id, "wait_seconds": 60}, url=url)

    def logs(self) -> str:
        parts = [f"--- worker {i + 1}\n{tail(w.log)}" for i, w in enumerate(self.workers)]
        if self.facade is not None:
            parts.append(f"--- façade\n{self.facade.log_tail()}")
        if self.temporal.child is not None:
            parts.append(f"--- temporal\n{tail(self.temporal.child.log)}")
        return "\n".join(parts)


@pytest.fixture
async def stack(temporal: TemporalServer, procs: Any, tmp_path: Path) -> Any:
    await temporal.ensure_running()  # a failed earlier test may have left it down
    fault = procs.fault_http("fault")
    config = {
        "temporal": {"address": temporal.address, "task_queue": f"durability-{uuid.uuid4().hex[:8]}"},
        "backends": [{"name": "fault", "transport": "streamable-http", "url": fault.url}],
        "composite_tools": [
            composite(),
            composite(name=LOCAL, local=True),
            {
                "name": QUICK,
                "description": "One step, answered within the call.",
                "parameters": {"type": "object", "properties": {"tag": {"type": "string"}}, "required": ["tag"]},
                "wait": "60s",
                "steps": [{"id": "only", "tool": "fault.tally", "arguments": {"label": "{{ params.tag }}"}}],
            },
            {
                "name": GATED,
                "description": "A step, an approval gate that may wait for days, then a step.",
                "parameters": {"type": "object", "properties": {"tag": {"type": "string"}}, "required": ["tag"]},
                "timeout": "7d",
                "steps": [
                    {"id": "before", "tool": "fault.tally", "arguments": {"label": "{{ params.tag }}-before"}},
                    {
                        "id": "gate",
                        "type": "approval",
                        "message": "Go on with {{ params.tag }}?",
                        "approvers": ["alice"],
                        "timeout": "24h",
                        "depends_on": ["before"],
                    },
                    {
                        "id": "after",
                        "tool": "fault.tally",
                        "arguments": {"label": "{{ params.tag }}-after"},
                        "depends_on": ["gate"],
                    },
                ],
            },
        ],
    }
    config_file = tmp_path / "vmcp.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    built = Stack(temporal, procs, tmp_path, fault, config, config_file)
    try:
        yield built
    finally:
        for worker in built.workers:
            worker.stop()


# --------------------------------------------------------------------------- assertions


def assert_completed(result: types.CallToolResult, run_id: str, tag: str, stack: Stack) -> None:
    body = result.structured_content
    assert not result.is_error and body is not None, f"{result}\n{stack.logs()}"
    assert "state" not in body, f"the run did not finish: {body}\n{stack.logs()}"
    assert (result.meta or {}).get("io.vmcp/run_id") == run_id
    assert set(body) == {"a", "b", "c", "d"}, body
    for step in "abcd":
        assert body[step]["status"] == "completed", body
    assert body["b"]["output"] == {"slept": SLOW_SECONDS, "label": f"{tag}-b"}
    for step in "acd":
        assert body[step]["output"]["label"] == f"{tag}-{step}"
        assert body[step]["output"]["key"] == f"{run_id}/{step}"


def assert_tallies_ran_once(counted: dict[str, Any], run_id: str, tag: str) -> None:
    """`a`, `c`, `d` each reached the backend once, under its own key `<run id>/<step id>`."""
    for step in "acd":
        assert counted["tallies"].get(f"{tag}-{step}") == 1, counted
    run_keys = {key: calls for key, calls in counted["keys"].items() if key.startswith(f"{run_id}/")}
    assert run_keys == {f"{run_id}/a": 1, f"{run_id}/c": 1, f"{run_id}/d": 1}, counted["keys"]


async def activity_history(temporal: TemporalServer, run_id: str) -> tuple[list[str], list[str]]:
    """The run's activity events in order (their kinds, `completed`, `timed_out`, ...) and the
    idempotency key each scheduled call carried, in order."""
    client = await temporal.client()
    kinds: list[str] = []
    keys: list[str] = []
    async for event in client.get_workflow_handle(run_id).fetch_history_events():
        kind = event.WhichOneof("attributes") or ""
        if not kind.startswith("activity_task_"):
            continue
        kinds.append(kind.removeprefix("activity_task_").removesuffix("_event_attributes"))
        if kind == "activity_task_scheduled_event_attributes":
            payload = event.activity_task_scheduled_event_attributes.input.payloads[0]
            keys.append(json.loads(payload.data)["idempotency_key"])
    return kinds, keys


# --------------------------------------------------------------------------- the tests


async def test_a_task_outlives_kill_9_of_facade_and_worker_mid_step_and_any_replica_answers(stack: Stack) -> None:
    """A composite called as an MCP task by the Python SDK's client (with a tasks extension): the
    task comes back at once, a second façade replica answers `tasks/get` for it, and after the
    façade and the worker are killed mid-step and restarted, `tasks/get` ends with the completed
    result, every step's call made once (the interrupted one again under its key)."""
    stack.start_facade()
    await stack.start_worker()
    replica = stack.procs.vmcp(stack.config, filename="replica.yaml")
    tag = f"task-{uuid.uuid4().hex[:6]}"
    async with Client(stack.url, mode="2026-07-28", extensions=[TasksExtension()]) as client:
        created = await client.session.call_tool(TOOL, {"tag": tag}, allow_claimed=True)
    assert isinstance(created, CreatedTask) and created.status == "working", created
    run_id = created.task_id
    assert run_id.startswith(f"vmcp-{TOOL}-"), run_id
    await stack.wait_until_b_is_in_progress(run_id, tag)
    async with Client(str(replica.url), mode="2026-07-28", extensions=[TasksExtension()]) as other:
        seen = await get_task(other, run_id)
    assert seen.status == "working" and "running: b" in (seen.status_message or ""), seen

    stack.workers[-1].kill()
    stack.facade.proc.kill()
    await stack.start_worker()
    stack.start_facade()
    async with Client(stack.url, mode="2026-07-28", extensions=[TasksExtension()]) as client:
        done = await until_terminal(client, run_id, seconds=DEADLINE)
    assert done.status == "completed" and done.result is not None, f"{done}\n{stack.logs()}"
    assert_completed(types.CallToolResult.model_validate(done.result), run_id, tag, stack)
    counted = await stack.counters()
    assert_tallies_ran_once(counted, run_id, tag)
    # the crash hit `b` mid-call: Temporal timed that attempt out (no heartbeat) and the call was
    # made again, by the new worker, under the same idempotency key
    kinds, keys = await activity_history(stack.temporal, run_id)
    assert kinds.count("timed_out") == 1 and kinds.count("completed") == 4, kinds
    assert keys == [f"{run_id}/{step}" for step in "abbcd"], keys
    # both calls of `b` reached the backend; each either completed there or was abandoned when
    # its client went away (the killed worker's). The run's own result came from a completed one.
    b_completions = counted["tallies"].get(f"{tag}-b", 0)
    assert b_completions >= 1, counted
    assert b_completions + counted["cancelled"] == 2, counted


async def test_local_activity_steps_survive_kill_9_of_the_worker_mid_step(stack: Stack) -> None:
    """`a` a regular activity, `b` (slow) and `d` local activities, `c` regular (it follows a local
    step): kill -9 of the worker while `b` runs inside its workflow task. The run completes on the
    next worker: `a`, `c` and `d` ran once, `b` again under the same idempotency key (its first
    call was abandoned with the worker). The history shows `b` and `d` as markers named after
    their step and tool, and `a` and `c` as activities."""
    stack.start_facade()
    await stack.start_worker()
    tag = f"local-{uuid.uuid4().hex[:6]}"
    # a local activity runs inside a workflow task, and a query waits for that task: so `b` is
    # watched at the backend, and the run id read from the visibility store, not asked of the run
    async with anyio.create_task_group() as group:
        group.start_soon(stack.call, LOCAL, {"tag": tag})

        async def b_at_backend() -> bool:
            return bool((await stack.counters())["max_running"] >= 1)

        await poll(b_at_backend, "step b's call to reach the fault server")
        stack.workers[-1].kill()
        group.cancel_scope.cancel()
    run_id = await newest_run(stack.temporal, LOCAL)
    await stack.start_worker()
    result = await stack.result(run_id)
    assert_completed(result, run_id, tag, stack)
    counted = await stack.counters()
    assert_tallies_ran_once(counted, run_id, tag)
    b_completions = counted["tallies"].get(f"{tag}-b", 0)
    assert b_completions >= 1 and b_completions + counted["cancelled"] == 2, counted
    kinds, keys = await activity_history(stack.temporal, run_id)
    assert keys == [f"{run_id}/a", f"{run_id}/c"] and kinds.count("completed") == 2, (kinds, keys)
    assert await marker_summaries(stack.temporal, run_id) == ["b: fault.slow", "d: fault.tally"]


async def newest_run(temporal: TemporalServer, tool: str) -> str:
    client = await temporal.client()
    async for execution in client.list_workflows(f"WorkflowId STARTS_WITH 'vmcp-{tool}-'"):
        return execution.id
    raise AssertionError(f"no run of {tool}")


async def marker_summaries(temporal: TemporalServer, run_id: str) -> list[str]:
    """The summaries of a run's local-activity markers, in order (what the Web UI shows)."""
    client = await temporal.client()
    found: list[str] = []
    async for event in client.get_workflow_handle(run_id).fetch_history_events():
        if event.WhichOneof("attributes") == "marker_recorded_event_attributes" and event.HasField("user_metadata"):
            found.append(json.loads(event.user_metadata.summary.data))
    return found


async def test_a_run_survives_temporal_killed_mid_step(stack: Stack) -> None:
    stack.start_facade()
    worker = await stack.start_worker()
    tag = f"temporal-{uuid.uuid4().hex[:6]}"
    run_id = await stack.start_run(tag)
    await stack.wait_until_b_is_in_progress(run_id, tag)

    stack.temporal.kill()

    # the worker keeps running `b`, which finishes while Temporal is away: the worker holds a
    # result it cannot report yet
    async def b_finished() -> bool:
        return f"{tag}-b" in (await stack.counters())["tallies"]

    await poll(b_finished, "b to finish at the backend while Temporal is down")
    await stack.temporal.start()  # same database file, same port
    result = await stack.result(run_id)

    assert_completed(result, run_id, tag, stack)
    assert worker.running and len(stack.workers) == 1, "the worker must ride out Temporal's restart by itself"
    counted = await stack.counters()
    assert_tallies_ran_once(counted, run_id, tag)
    # `b` ran once when the worker could report its result after the restart; if it could not
    # (the SDK stops retrying a completion after several seconds of outage), Temporal timed the
    # attempt out and `b` ran once more, under the same key: at-least-once, and accounted for
    kinds, keys = await activity_history(stack.temporal, run_id)
    retried = kinds.count("timed_out")
    assert retried <= 1 and kinds.count("completed") == 4, kinds
    assert keys == [f"{run_id}/{step}" for step in "ab" + "b" * retried + "cd"], keys
    assert counted["tallies"][f"{tag}-b"] == 1 + retried, counted
    assert counted["cancelled"] == 0, counted


async def test_a_run_does_not_depend_on_the_facade_that_started_it(stack: Stack) -> None:
    first = stack.start_facade()
    await stack.start_worker()
    tag = f"facade-{uuid.uuid4().hex[:6]}"
    run_id = await stack.start_run(tag)
    await stack.wait_until_b_is_in_progress(run_id, tag)

    first.proc.kill()
    first.proc.wait(timeout=10)
    second = stack.start_facade()
    assert second.url != first.url
    result = await stack.result(run_id, url=second.url)

    assert_completed(result, run_id, tag, stack)
    counted = await stack.counters()
    assert_tallies_ran_once(counted, run_id, tag)
    # no worker died and Temporal stayed up: even the step in flight ran exactly once
    assert counted["tallies"].get(f"{tag}-b") == 1, counted
    assert counted["cancelled"] == 0, counted
    kinds, keys = await activity_history(stack.temporal, run_id)
    assert kinds.count("timed_out") == 0, kinds
    assert keys == [f"{run_id}/{step}" for step in "abcd"], keys


async def answer(stack: Stack, name: str, arguments: dict[str, Any]) -> types.CallToolResult | str:
    """The façade's answer to a call, or a description of the protocol error it raised instead."""
    try:
        return await stack.call(name, arguments)
    except Exception as exc:  # the SDK client wraps a JSON-RPC error in exception groups
        errors: list[BaseException] = [exc]
        while errors and isinstance(errors[0], BaseExceptionGroup):
            errors = list(errors[0].exceptions)
        return f"{type(errors[0]).__name__}: {errors[0]}"


async def test_while_temporal_is_down_forwarding_works_and_run_tools_answer_with_an_error(stack: Stack) -> None:
    """DESIGN.md: plain calls keep working while Temporal is down, and no exception escapes a
    façade handler: the run tools answer with an `isError` result that names Temporal (not a
    JSON-RPC internal error), and the same façade serves runs again once Temporal is back."""
    stack.start_facade()
    await stack.start_worker()
    tag = f"down-{uuid.uuid4().hex[:6]}"
    done = await stack.call(QUICK, {"tag": tag})  # the façade is connected to Temporal from here on
    assert not done.is_error and done.structured_content is not None, done
    run_id = (done.meta or {})["io.vmcp/run_id"]

    stack.temporal.kill()
    forwarded = await answer(stack, "fault_echo", {"text": "still here"})
    status = await answer(stack, "vmcp_run_status", {"run_id": run_id})
    started = await answer(stack, QUICK, {"tag": f"{tag}-2"})
    await stack.temporal.start()
    status_again = await answer(stack, "vmcp_run_status", {"run_id": run_id})

    assert isinstance(forwarded, types.CallToolResult) and not forwarded.is_error, forwarded
    assert forwarded.structured_content == {"text": "still here"}
    for what, outcome in (("vmcp_run_status", status), (QUICK, started)):
        assert isinstance(outcome, types.CallToolResult), f"{what} while Temporal is down raised {outcome}"
        assert outcome.is_error, outcome
        text = outcome.content[0].text if isinstance(outcome.content[0], types.TextContent) else ""
        assert "Temporal" in text and "not reachable" in text, text
    assert isinstance(status_again, types.CallToolResult) and not status_again.is_error, status_again
    assert (status_again.structured_content or {}).get("state") == "completed", status_again


async def test_a_gate_outlives_kill_9_of_worker_facade_and_temporal(stack: Stack) -> None:
    """The decision still counts after every process the run touched was killed and restarted."""
    stack.start_facade()
    await stack.start_worker()
    tag = f"gate-{uuid.uuid4().hex[:6]}"
    waiting = await stack.call(GATED, {"tag": tag})
    body = waiting.structured_content or {}
    assert body.get("state") == "awaiting_approval", waiting
    run_id = body["run_id"]

    stack.workers[-1].kill()
    stack.facade.proc.kill()
    stack.temporal.kill()
    await stack.temporal.ensure_running()
    await stack.start_worker()
    stack.start_facade()

    vmcp = str(Path(sys.executable).parent / "vmcp")
    decided = await anyio.run_process(
        [vmcp, "approve", run_id, "--as", "alice", "--config", str(stack.config_file)], check=False
    )
    assert decided.returncode == 0, decided.stderr.decode() + stack.logs()
    result = await stack.result(run_id)
    assert not result.is_error, f"{result}\n{stack.logs()}"
    counted = (await stack.counters())["tallies"]
    assert counted[f"{tag}-before"] == 1 and counted[f"{tag}-after"] == 1, counted
