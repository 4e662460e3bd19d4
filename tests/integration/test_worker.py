"""The backend-call activity and the worker process, against real MCP servers and a real Temporal.

The activity runs in `ActivityEnvironment` over a real backend pool (`mcp-server-time`, plus a
small MCP server written here that sleeps or echoes its request `_meta`); `python worker.py` runs
as a real process against a real Temporal dev server, and a workflow defined in this module
calls the activity by its contract name through Temporal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from temporalio import workflow
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.backend_tools import BackendToolActivities
from tests.support.processes import Process, free_port
from vmcp.backends.pool import BackendPool
from vmcp.composite.contracts import (
    CALL_BACKEND_TOOL,
    ERROR_BACKEND_UNAVAILABLE,
    ERROR_INVALID_PARAMS,
    ERROR_UNKNOWN_BACKEND,
    IDEMPOTENCY_META_KEY,
    CallBackendToolInput,
    CallBackendToolOutput,
)
from vmcp.config.loading import parse_config
from vmcp.config.models import VmcpConfig

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TEMPORAL = str(BIN / "temporal")
DEADLINE = 90.0  # generous: two cores shared with other test runs

TIME = {"name": "time", "transport": "stdio", "command": "mcp-server-time", "args": ["--local-timezone", "UTC"]}

# A backend with the behaviour the time server lacks: a slow tool and one that shows its `_meta`.
FIXTURE_SERVER = '''
import anyio
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("worker-fixture")


@server.tool()
async def echo_meta(ctx: Context) -> dict:
    """Return the request's _meta."""
    meta = ctx.request_context.meta
    return {"meta": dict(meta) if meta else {}}


@server.tool()
async def slow(seconds: float) -> str:
    """Answer after `seconds`."""
    await anyio.sleep(seconds)
    return "done"


if __name__ == "__main__":
    server.run("stdio")
'''


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def backends_config(tmp_path: Path) -> VmcpConfig:
    script = tmp_path / "fixture_server.py"
    script.write_text(FIXTURE_SERVER)
    return parse_config(
        {
            "backends": [
                TIME,
                {"name": "fixture", "transport": "stdio", "command": sys.executable, "args": [str(script)]},
                # exits at once: never connects
                {
                    "name": "dead",
                    "transport": "stdio",
                    "command": sys.executable,
                    "args": ["-c", "pass"],
                    "connect_timeout": "2s",
                },
            ]
        },
        base_dir=tmp_path,
    )


@pytest.fixture
async def activities(tmp_path: Path) -> AsyncIterator[BackendToolActivities]:
    config = backends_config(tmp_path)
    async with BackendPool(config.backends, config.base_dir) as pool:
        await pool.wait_settled(30)
        yield BackendToolActivities(pool, {})


def call(backend: str, tool: str, arguments: dict[str, Any], **extra: Any) -> CallBackendToolInput:
    return CallBackendToolInput(backend, tool, arguments, idempotency_key=f"wf-{uuid.uuid4()}/step", **extra)


# --------------------------------------------------------------------------- the activity


@pytest.mark.integration
@pytest.mark.anyio
async def test_activity_returns_the_tool_result_as_plain_json(activities: BackendToolActivities) -> None:
    env = ActivityEnvironment()
    output = await env.run(activities.call_backend_tool, call("time", "get_current_time", {"timezone": "UTC"}))
    assert isinstance(output, CallBackendToolOutput)
    assert output.is_error is False
    assert output.structured_content is not None
    assert output.structured_content["timezone"] == "UTC"
    assert output.content and output.content[0]["type"] == "text"
    assert '"timezone": "UTC"' in output.text


@pytest.mark.integration
@pytest.mark.anyio
async def test_activity_sends_the_idempotency_key_in_meta(activities: BackendToolActivities) -> None:
    request = call("fixture", "echo_meta", {})
    output = await ActivityEnvironment().run(activities.call_backend_tool, request)
    assert json.loads(output.text)["meta"][IDEMPOTENCY_META_KEY] == request.idempotency_key


@pytest.mark.integration
@pytest.mark.anyio
async def test_a_failing_tool_is_data_not_an_exception(activities: BackendToolActivities) -> None:
    output = await ActivityEnvironment().run(
        activities.call_backend_tool, call("time", "get_current_time", {"timezone": "Nowhere/Atlantis"})
    )
    assert output.is_error is True
    assert "Nowhere/Atlantis" in output.text


@pytest.mark.integration
@pytest.mark.anyio
async def test_unknown_tool_is_a_permanent_failure(activities: BackendToolActivities) -> None:
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(activities.call_backend_tool, call("time", "no_such_tool", {}))
    assert caught.value.non_retryable is True
    assert caught.value.type == ERROR_INVALID_PARAMS
    assert "no_such_tool" in str(caught.value)


@pytest.mark.integration
@pytest.mark.anyio
async def test_unavailable_backend_and_timeouts_are_retryable(activities: BackendToolActivities) -> None:
    env = ActivityEnvironment()
    with pytest.raises(ApplicationError) as down:
        await env.run(activities.call_backend_tool, call("dead", "anything", {}))
    assert down.value.non_retryable is False
    assert down.value.type == ERROR_BACKEND_UNAVAILABLE

    with pytest.raises(ApplicationError) as slow:
        await env.run(activities.call_backend_tool, call("fixture", "slow", {"seconds": 30}, timeout_seconds=0.5))
    assert slow.value.non_retryable is False
    assert slow.value.type == ERROR_BACKEND_UNAVAILABLE

    with pytest.raises(ApplicationError) as unknown:
        await env.run(activities.call_backend_tool, call("nowhere", "anything", {}))
    assert unknown.value.type == ERROR_UNKNOWN_BACKEND
    assert unknown.value.non_retryable is False


@pytest.mark.integration
@pytest.mark.anyio
async def test_activity_heartbeats_while_waiting_and_honours_cancellation(
    activities: BackendToolActivities,
) -> None:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=timedelta(seconds=0.3))
    beats: list[Any] = []
    three_beats = anyio.Event()

    def on_heartbeat(*details: Any) -> None:
        beats.append(details)
        if len(beats) >= 3:
            three_beats.set()

    env.on_heartbeat = on_heartbeat
    outcome: dict[str, Any] = {}

    async def run_it() -> None:
        try:
            await env.run(activities.call_backend_tool, call("fixture", "slow", {"seconds": 60}, timeout_seconds=120))
            outcome["result"] = "completed"
        except asyncio.CancelledError:  # the activity's task was cancelled, not this one
            outcome["result"] = "cancelled"

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(run_it)
            await three_beats.wait()  # several beats during one call: the loop runs while it is awaited
            env.cancel()
    assert outcome["result"] == "cancelled"
    assert beats[0][0]["tool"] == "slow"


# --------------------------------------------------------------------------- the worker process


@workflow.defn(name="vmcp-test.CallBackendToolOnce")
class CallBackendToolOnce:
    """Stands in for the composite interpreter: one activity call, by name, on vmcp's task queue."""

    @workflow.run
    async def run(self, request: CallBackendToolInput, task_queue: str) -> CallBackendToolOutput:
        output: CallBackendToolOutput = await workflow.execute_activity(
            CALL_BACKEND_TOOL,
            request,
            task_queue=task_queue,
            start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=3, initial_interval=timedelta(milliseconds=100)),
            result_type=CallBackendToolOutput,
        )
        return output


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.kill()


def worker_config(tmp_path: Path, temporal_port: int, task_queue: str) -> Path:
    script = tmp_path / "fixture_server.py"
    script.write_text(FIXTURE_SERVER)
    path = tmp_path / "worker.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "temporal": {"address": f"127.0.0.1:{temporal_port}", "task_queue": task_queue},
                "backends": [
                    TIME,
                    {"name": "fixture", "transport": "stdio", "command": sys.executable, "args": [str(script)]},
                ],
            }
        )
    )
    return path


@pytest.mark.integration
@pytest.mark.temporal
@pytest.mark.anyio
async def test_worker_waits_for_temporal_runs_the_activity_and_stops_on_sigterm(
    tmp_path: Path, processes: list[Process]
) -> None:
    port = free_port()
    queue = f"vmcp-test-{uuid.uuid4().hex[:8]}"
    config = worker_config(tmp_path, port, queue)
    worker = Process([sys.executable, str(ROOT / "worker.py"), "--config", str(config)], cwd=tmp_path)
    processes.append(worker)
    # Temporal is not up yet: the worker says so and keeps trying, without a traceback
    worker.wait_for("not reachable")
    assert worker.popen.poll() is None

    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=TEMPORAL, port=port, dev_server_log_level="error"
    ) as env:
        worker.wait_for("vmcp worker: polling")
        async with Worker(
            env.client,
            task_queue=f"{queue}-test",
            workflows=[CallBackendToolOnce],
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):
            workflow_id = f"wf-{uuid.uuid4()}"
            request = CallBackendToolInput("fixture", "echo_meta", {}, idempotency_key=f"{workflow_id}/echo")
            output = await env.client.execute_workflow(
                CallBackendToolOnce.run,
                args=[request, queue],
                id=workflow_id,
                task_queue=f"{queue}-test",
            )
            assert json.loads(output.text)["meta"][IDEMPOTENCY_META_KEY] == f"{workflow_id}/echo"

            output = await env.client.execute_workflow(
                CallBackendToolOnce.run,
                args=[call("time", "get_current_time", {"timezone": "UTC"}), queue],
                id=f"wf-{uuid.uuid4()}",
                task_queue=f"{queue}-test",
            )
            assert output.structured_content is not None
            assert output.structured_content["timezone"] == "UTC"

            # a permanent failure is not retried: one attempt, and the error type survives the trip
            handle = await env.client.start_workflow(
                CallBackendToolOnce.run,
                args=[call("time", "no_such_tool", {}), queue],
                id=f"wf-{uuid.uuid4()}",
                task_queue=f"{queue}-test",
            )
            with pytest.raises(WorkflowFailureError) as failed:
                await handle.result()
            activity_error = failed.value.cause
            assert isinstance(activity_error, ActivityError)
            assert isinstance(activity_error.cause, ApplicationError)
            assert activity_error.cause.type == ERROR_INVALID_PARAMS
            assert activity_error.cause.non_retryable
            attempts = [
                event
                async for event in handle.fetch_history_events()
                if event.HasField("activity_task_started_event_attributes")
            ]
            assert attempts[0].activity_task_started_event_attributes.attempt == 1
            assert len(attempts) == 1

        assert worker.stop(signal.SIGTERM) == 0, worker.text()
    # (the SDK logs the failed activity above with its traceback; the shutdown itself is clean)
    shutdown = worker.text().partition("SIGTERM, stopping")[2]
    assert "worker stopped" in shutdown
    assert "Traceback" not in shutdown


@pytest.mark.integration
def test_worker_stops_with_exit_0_on_sigint_while_waiting_for_temporal(
    tmp_path: Path, processes: list[Process]
) -> None:
    config = worker_config(tmp_path, free_port(), "vmcp-test")
    worker = Process([sys.executable, str(ROOT / "worker.py"), "--config", str(config)], cwd=tmp_path)
    processes.append(worker)
    worker.wait_for("not reachable")
    assert worker.stop(signal.SIGINT) == 0, worker.text()
    assert "Traceback" not in worker.text()


@pytest.mark.integration
def test_worker_reports_a_bad_config_file_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("temporal: {adress: x}\n")
    done = subprocess.run(
        [sys.executable, str(ROOT / "worker.py"), "--config", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "temporal.adress" in done.stderr
    assert "Traceback" not in done.stderr
