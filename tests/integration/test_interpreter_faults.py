"""The interpreter never hangs: an unexpected exception inside a step fails the workflow task
(Temporal retries it, the history says why) instead of leaving the step `running` and its
dependants waiting until the run's deadline; once the fault is gone — a fixed deploy — the same
run resumes and completes.

A real Temporal dev server (its workflow-task retries capped at a second, so the retry comes
quickly), a real worker in this process (unsandboxed, as workers run the interpreter, so the
fault injected into the interpreter module is the one it runs) and the fault server on stdio.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus

import workflows.calls
from tests.support.temporal import TemporalServer
from vmcp.backends.pool import BackendPool
from vmcp.catalog.aggregate import build_catalog
from vmcp.catalog.steps import resolve
from vmcp.composite.contracts import CompositeRunInput
from vmcp.config.loading import parse_config
from vmcp.runs.calls import with_defaults
from vmcp.runs.orchestrator import Orchestrator
from worker import run_worker

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.temporal, pytest.mark.anyio]


async def test_an_unexpected_exception_fails_the_workflow_task_and_a_fix_resumes_the_run(
    monkeypatch: pytest.MonkeyPatch, temporal_server: TemporalServer
) -> None:
    fault = {
        "name": "fault",
        "transport": "stdio",
        "command": sys.executable,
        "args": ["-m", "tests.servers.fault_server", "--transport", "stdio", "--name", "fault"],
        "cwd": str(ROOT),
    }
    composite = {
        "name": "two_steps",
        "steps": [
            {"id": "first", "tool": "fault.echo", "arguments": {"text": "one"}},
            {"id": "second", "tool": "fault.echo", "arguments": {"text": "two"}, "depends_on": ["first"]},
        ],
    }
    real_output_of = workflows.calls._output_of
    injected = {"on": True}

    def faulty_output_of(structured: Any, text: str) -> Any:
        if injected["on"] and text == "one":
            raise KeyError("injected interpreter fault")
        return real_output_of(structured, text)

    monkeypatch.setattr(workflows.calls, "_output_of", faulty_output_of)
    client = await temporal_server.client()
    address = temporal_server.address
    config = parse_config(
        {
            "temporal": {"address": address, "task_queue": f"faults-{uuid.uuid4().hex[:8]}"},
            "backends": [fault],
            "composite_tools": [composite],
        },
        base_dir=ROOT,
    )
    async with BackendPool(config.backends, config.base_dir) as pool:
        await pool.wait_settled(60)
        catalog = build_catalog(config.aggregation, ["fault"], pool.listings())
        tool = config.composite_tools[0]
        resolved, issues = resolve(tool, catalog, ["fault"], 0)
        assert not issues, issues
        run_id = f"vmcp-two_steps-{uuid.uuid4()}"
        run = CompositeRunInput(tool.name, resolved.model_dump(mode="json"), with_defaults(tool.parameters, {}))
        handle = client.get_workflow_handle(run_id)
        stop, ready = anyio.Event(), anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: run_worker(config, pool=pool, stop=stop, ready=ready))
            await ready.wait()
            await Orchestrator(config).start(run_id, run, tool.run_timeout)

            failure = ""
            with anyio.fail_after(60):
                while not failure:
                    async for event in handle.fetch_history_events():
                        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                            failure = event.workflow_task_failed_event_attributes.failure.message
                    await anyio.sleep(0.1)
            assert "injected interpreter fault" in failure  # the history says what went wrong
            assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING  # not given up

            injected["on"] = False  # the fixed deploy: the task's next attempt runs on
            with anyio.fail_after(60):
                output = await handle.result()
            stop.set()
    steps = output["structured"]
    assert steps["first"]["status"] == "completed" and steps["second"]["status"] == "completed"
    assert steps["second"]["output"]["text"] == "two"
