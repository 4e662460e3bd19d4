"""Composite runs in Temporal: start, result, status, owner, cancel, decisions, listing — the
operations the façade, the CLI and the tests use on runs, by workflow id. With
`vmcp.runs.temporal_client` (how vmcp connects), the only code in `vmcp/` that uses
`temporalio.client`.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

import anyio
import anyio.lowlevel
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from vmcp.composite.contracts import (
    COMPOSITE_WORKFLOW,
    MEMO_OWNER,
    QUERY_STATUS,
    RUN_ID_PATTERN,
    SEARCH_ATTRIBUTE_PENDING_APPROVAL,
    SEARCH_ATTRIBUTE_STATUS,
    SEARCH_ATTRIBUTE_TOOL,
    UPDATE_WATCH,
    CompositeRunInput,
    CompositeRunOutput,
    run_owner,
)
from vmcp.config.models import VmcpConfig
from vmcp.runs.errors import NotARun, RunNotFound, RunNotWaiting, TemporalUnreachable
from vmcp.runs.temporal_client import connect, describe_error

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- composite runs


_GONE = (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED)
STATUS_QUERY_WAIT = 2.0  # seconds a prompt status waits for the run's own answer
_STATUS_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_STATUS)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _reaching(
    method: Callable[Concatenate[Orchestrator, _P], Coroutine[Any, Any, _R]],
) -> Callable[Concatenate[Orchestrator, _P], Coroutine[Any, Any, _R]]:
    """An RPC that failed because Temporal is not there (down, restarting) raises
    TemporalUnreachable, which the façade answers with an `isError` result naming Temporal."""

    async def wrapper(self: Orchestrator, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return await method(self, *args, **kwargs)
        except RPCError as exc:
            if exc.status in _GONE:
                address = self.config.temporal.address
                raise TemporalUnreachable(f"Temporal at {address} is not reachable: {describe_error(exc)}") from None
            raise

    return wrapper


_RUN_ID = re.compile(RUN_ID_PATTERN)


class Orchestrator:
    """Starts, awaits, inspects and cancels composite runs for the façade and the CLI.

    Connects lazily: plain forwarding never needs Temporal, so a façade whose Temporal is down
    serves everything but composite tools, and connects once Temporal is back.
    """

    def __init__(self, config: VmcpConfig) -> None:
        self.config = config
        self._client: Client | None = None
        self._lock = anyio.Lock()

    def use_client(self, client: Client) -> None:
        """Start runs with `client` (a worker's in the same process: eager workflow start)."""
        self._client = client

    async def client(self) -> Client:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await connect(self.config)
        return self._client

    @_reaching
    async def start(self, run_id: str, run: CompositeRunInput, timeout: float) -> None:
        client = await self.client()
        await client.start_workflow(
            COMPOSITE_WORKFLOW,
            run,
            id=run_id,
            task_queue=self.config.temporal.task_queue,
            execution_timeout=timedelta(seconds=timeout),
            # set at start, so the run is findable before its first task (and that task need not upsert)
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_TOOL), run.tool),
                    SearchAttributePair(_STATUS_KEY, "running"),
                ]
            ),
            memo={MEMO_OWNER: run_owner(run.caller)},
            static_summary=f"composite tool {run.tool}",
            # honoured when this client also runs a worker on the queue (`vmcp dev`): the first
            # workflow task is handed to it in the start response
            request_eager_start=True,
        )

    @_reaching
    async def result(self, run_id: str, wait: float) -> CompositeRunOutput | None:
        """The run's output, or None if it is still going after `wait` seconds."""
        handle = (await self.client()).get_workflow_handle(run_id, result_type=CompositeRunOutput)
        with anyio.move_on_after(wait):
            try:
                output: CompositeRunOutput = await handle.result(follow_runs=True)
                return output
            except WorkflowFailureError as exc:
                return CompositeRunOutput(
                    structured={"error": describe_error(exc.cause or exc)}, text=str(exc), is_error=True
                )
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:
                    raise RunNotFound(run_id) from None
                raise
        return None

    @_reaching
    async def status(self, run_id: str, *, prompt: bool = False) -> dict[str, Any]:
        """State and steps of a run: its own query while it runs, its description once closed.

        A query is answered between workflow tasks, and a step running as a local activity runs
        inside one (up to `local_step_timeout`, 30 s by default): the query waits for it. With
        `prompt` (what people and pollers read: the status tool, `tasks/get`, `vmcp runs show`),
        a query not answered within `STATUS_QUERY_WAIT` gives way to what the run's search
        attributes say, marked `busy`; callers that act on the run's questions wait for the query."""
        handle, description = await self._described(run_id)
        closed = description.status not in (None, WorkflowExecutionStatus.RUNNING)
        status: dict[str, Any] = _busy_status(description)  # unless the run answers in time
        with anyio.move_on_after(STATUS_QUERY_WAIT if prompt and not closed else math.inf):
            try:
                status = dict(await handle.query(QUERY_STATUS))
            except (RPCError, WorkflowQueryFailedError) as exc:
                status = {"state": "unknown", "error": f"the run did not answer its status query: {exc}"}
        if closed and description.status is not None:
            status.setdefault("state", description.status.name.lower())
            if description.status != WorkflowExecutionStatus.COMPLETED:
                name = description.status.name.lower()
                status["state"] = "cancelled" if name == "canceled" else name
        status["run_id"] = run_id
        status["started_at"] = description.start_time.isoformat() if description.start_time else None
        status["closed_at"] = description.close_time.isoformat() if description.close_time else None
        return status

    async def _described(self, run_id: str) -> tuple[WorkflowHandle[Any, Any], WorkflowExecutionDescription]:
        """The run's handle and description; NotARun (before Temporal is asked, when the id's shape
        already says so) for anything but a composite run on this vmcp's task queue."""
        if not _RUN_ID.fullmatch(run_id):
            raise NotARun(run_id)
        handle = (await self.client()).get_workflow_handle(run_id)
        try:
            description = await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise RunNotFound(run_id) from None
            raise
        if description.workflow_type != COMPOSITE_WORKFLOW or description.task_queue != self.config.temporal.task_queue:
            raise NotARun(run_id)
        return handle, description

    @_reaching
    async def owner(self, run_id: str) -> dict[str, Any] | None:
        """Who started the run (`MEMO_OWNER`; None for a run from before owners were recorded).
        NotARun or RunNotFound for ids that name no run of this vmcp."""
        _, description = await self._described(run_id)
        owner = await description.memo_value(MEMO_OWNER, None)
        return dict(owner) if isinstance(owner, dict) else None

    @_reaching
    async def cancel(self, run_id: str) -> None:
        handle = (await self.client()).get_workflow_handle(run_id)
        try:
            await handle.cancel()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise RunNotFound(run_id) from None
            raise

    @_reaching
    async def list_runs(self, *, pending_only: bool = False, limit: int = 50) -> list[dict[str, Any]]:
        """Composite runs from Temporal visibility, newest first."""
        query = f"WorkflowType = '{COMPOSITE_WORKFLOW}'"
        if pending_only:
            query += f" AND {SEARCH_ATTRIBUTE_PENDING_APPROVAL} = true"
        runs: list[dict[str, Any]] = []
        async for execution in (await self.client()).list_workflows(query, limit=limit):
            attributes = execution.typed_search_attributes
            status = execution.status.name.lower() if execution.status is not None else "unknown"
            runs.append(
                {
                    "run_id": execution.id,
                    "tool": attributes.get(SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_TOOL)),
                    "state": attributes.get(SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_STATUS)) or status,
                    "temporal_status": "cancelled" if status == "canceled" else status,
                    "started_at": execution.start_time.isoformat() if execution.start_time else None,
                    "closed_at": execution.close_time.isoformat() if execution.close_time else None,
                }
            )
        return runs

    @_reaching
    async def run_counts(self, tools: Sequence[str]) -> tuple[dict[tuple[str, str], int], int]:
        """Composite runs by (tool, state), and the runs waiting at an approval gate, from
        visibility. A run that timed out or was terminated keeps the state it last upserted, so
        the live states count only running executions, and those two are counted by Temporal's."""
        client = await self.client()
        base = f"WorkflowType = '{COMPOSITE_WORKFLOW}'"
        counts: dict[tuple[str, str], int] = {}
        for tool in tools:
            mine = f"{base} AND {SEARCH_ATTRIBUTE_TOOL} = '{tool}'"
            for state in ("running", "awaiting_approval", "awaiting_input"):
                query = f"{mine} AND {SEARCH_ATTRIBUTE_STATUS} = '{state}' AND ExecutionStatus = 'Running'"
                counts[(tool, state)] = (await client.count_workflows(query)).count
            for state in ("completed", "failed", "cancelled"):
                counts[(tool, state)] = (
                    await client.count_workflows(f"{mine} AND {SEARCH_ATTRIBUTE_STATUS} = '{state}'")
                ).count
            for state, status in (("timed_out", "TimedOut"), ("terminated", "Terminated")):
                counts[(tool, state)] = (await client.count_workflows(f"{mine} AND ExecutionStatus = '{status}'")).count
        pending = f"{base} AND {SEARCH_ATTRIBUTE_PENDING_APPROVAL} = true AND ExecutionStatus = 'Running'"
        return counts, (await client.count_workflows(pending)).count

    @_reaching
    async def decide(self, run_id: str, kind: str, decision: dict[str, Any], wait: float = 15.0) -> dict[str, Any]:
        """Send an `approve` / `reject` decision or an `answer` as an Update, and return how the run
        took it: the record of an accepted one, or `{"outcome": "refused", "problem": …}` — a
        refused decision is turned away by the Update's validator and never enters the history."""
        handle, description = await self._described(run_id)
        if description.status != WorkflowExecutionStatus.RUNNING:
            name = description.status.name.lower() if description.status is not None else "closed"
            raise RunNotWaiting(f"run {run_id} is {'cancelled' if name == 'canceled' else name}: nothing to decide")
        try:
            with anyio.fail_after(wait):
                record = await handle.execute_update(kind, decision, result_type=dict)
        except TimeoutError:
            raise RunNotWaiting(
                f"run {run_id} did not take the decision within {wait:g}s (is a worker running?)"
            ) from None
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            problem = cause.message if isinstance(cause, ApplicationError) else str(cause or exc)
            return {"id": decision.get("id"), "kind": kind, "outcome": "refused", "problem": problem}
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:  # it closed meanwhile
                raise RunNotWaiting(f"run {run_id} has ended: nothing to decide") from None
            raise
        return dict(record)

    async def watch(self, run_id: str, known: Sequence[str]) -> dict[str, Any] | None:
        """The run's status as soon as it waits for a person or a step not in `known` finishes (the
        run answers; nothing polls). None when the run is ending or cannot be watched: its result
        says how it ended."""
        handle = (await self.client()).get_workflow_handle(run_id)
        while True:
            try:
                status = await handle.execute_update(UPDATE_WATCH, list(known), result_type=dict)
            except WorkflowUpdateRPCTimeoutOrCancelledError:
                # the long poll ran out before anything happened (or the wait was cancelled: the
                # checkpoint below then ends it): ask again
                await anyio.lowlevel.checkpoint()
                continue
            except (WorkflowUpdateFailedError, RPCError) as exc:
                logger.debug("watching %s ended: %s", run_id, exc)
                return None
            return dict(status)


def _busy_status(description: WorkflowExecutionDescription) -> dict[str, Any]:
    """A running run that could not answer its status query in time: its state as its search
    attribute has it, and why its steps are missing."""
    state = description.typed_search_attributes.get(_STATUS_KEY) or "running"
    return {
        "state": state,
        "steps": {},
        "busy": "a step is running inside the run's workflow task (a local activity): the run "
        "answers with its steps when that step ends",
    }
