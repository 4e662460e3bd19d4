"""The backend-call activity: one composite step's MCP `tools/call`, made through the backend pool.

The activity decides only whether a failure is permanent (`ApplicationError(non_retryable=...)`);
retrying is the workflow's retry policy, never a loop in here. A tool that answered `isError` is
a result, not a failure: the workflow decides what it means for the run.

While the backend works, a background loop heartbeats. That keeps a long call alive under a
heartbeat timeout and is how Temporal delivers a cancellation (the run was cancelled, or the
attempt timed out) to this worker: the pending call is then abandoned, not waited out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import anyio
import mcp_types as types
from mcp.shared.exceptions import MCPError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from vmcp.backends.common import RateLimited
from vmcp.backends.pool import BackendConnection, BackendPool, BackendUnavailable
from vmcp.clients.relay import on_nobodys_behalf
from vmcp.composite.contracts import (
    CALL_BACKEND_TOOL,
    ERROR_BACKEND_PROTOCOL,
    ERROR_BACKEND_UNAVAILABLE,
    ERROR_INPUT_REQUIRED,
    ERROR_INVALID_PARAMS,
    ERROR_METHOD_NOT_FOUND,
    ERROR_POLICY,
    ERROR_TOOL,
    ERROR_UNKNOWN_BACKEND,
    IDEMPOTENCY_META_KEY,
    CallBackendToolInput,
    CallBackendToolOutput,
)
from vmcp.config.models import AggregationConfig
from vmcp.config.overrides import ParameterPolicy
from vmcp.ops import logs, telemetry
from vmcp.ops.audit import AuditLog
from vmcp.security.arguments import violation

logger = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_INTERVAL = 5.0
"""Seconds between heartbeats when the activity has no heartbeat timeout (the SDK throttles
what it sends; frequent local heartbeats only make cancellation arrive sooner)."""

_PERMANENT_CODES = {types.INVALID_PARAMS: ERROR_INVALID_PARAMS, types.METHOD_NOT_FOUND: ERROR_METHOD_NOT_FOUND}


class BackendToolActivities:
    """Activities bound to the worker's backend pool (one connection per backend, shared), and to
    the argument policies of its configuration: a composite step meets the same rules as a plain
    call, checked here, before anything is sent."""

    def __init__(
        self,
        pool: BackendPool,
        policies: Mapping[tuple[str, str], Mapping[str, ParameterPolicy]],
        audit: AuditLog | None = None,
    ) -> None:
        self.pool = pool
        self.policies = policies
        self.audit = audit

    @activity.defn(name=CALL_BACKEND_TOOL)
    async def call_backend_tool(self, call: CallBackendToolInput) -> CallBackendToolOutput:
        with logs.about_run(activity.info().workflow_id or "", call.step_id):
            return await self._audited(call)

    async def _audited(self, call: CallBackendToolInput) -> CallBackendToolOutput:
        if self.audit is None or not self.audit.enabled:
            return await self._call_backend_tool(call)
        started = time.monotonic()
        decision, outcome, detail = "allow", "failed", None
        try:
            output = await self._call_backend_tool(call)
            outcome = "tool_error" if output.is_error else "ok"
            return output
        except ApplicationError as exc:
            decision = "policy" if exc.type == ERROR_POLICY else "allow"
            outcome, detail = ("refused" if decision == "policy" else "failed"), exc.message
            raise
        except BaseException as exc:
            detail = type(exc).__name__
            raise
        finally:
            info = activity.info()
            self.audit.record(
                caller=call.caller,
                tool=f"{call.backend}.{call.tool}",
                backend=call.backend,
                decision=decision,
                outcome=outcome,
                started=started,
                run_id=info.workflow_id,
                step=call.step_id,
                detail=f"attempt {info.attempt}" + (f": {detail}" if detail else ""),
            )

    async def _call_backend_tool(self, call: CallBackendToolInput) -> CallBackendToolOutput:
        if call.backend not in self.pool.connections:
            known = ", ".join(sorted(self.pool.connections)) or "none"
            raise ApplicationError(
                f"this worker has no backend {call.backend!r} (its backends: {known}); "
                "is its configuration older than the run's?",
                _attempt(),
                type=ERROR_UNKNOWN_BACKEND,
            )
        connection = self.pool.get(call.backend)
        what = f"{call.backend}.{call.tool}"
        auth = connection.config.auth
        if connection.credentials.per_caller and (auth is None or auth.composite_steps != "service"):
            raise ApplicationError(
                f"{what} was not called: backend {call.backend!r} exchanges each caller's token, and a composite "
                "step has none; it would run as vmcp's service identity, which this backend does not allow "
                "(auth.composite_steps: service)",
                _attempt(),
                type=ERROR_POLICY,
                non_retryable=True,
            )
        broken = violation(self.policies.get((call.backend, call.tool), {}), call.arguments)
        if broken is not None:
            logger.info("policy refused %s (key %s): %s", what, call.idempotency_key, broken[1])
            raise ApplicationError(
                f"{what} was not called: {broken[1]}", _attempt(), type=ERROR_POLICY, non_retryable=True
            )
        result, failure = await _call_with_heartbeats(connection, call)
        if failure is None:
            output = to_output(result, what, attempt=activity.info().attempt)
            if output.is_error and call.fail_on_error:
                raise ApplicationError(
                    f"{what} failed: {output.text or 'isError result'}",
                    asdict(output),
                    type=ERROR_TOOL,
                )
            return output
        logger.info("%s (key %s) failed: %s", what, call.idempotency_key, failure)
        if isinstance(failure, RateLimited):  # the backend's limit: the next attempt once a call is admitted
            raise ApplicationError(
                f"{what}: {failure}",
                _attempt(),
                type=ERROR_BACKEND_UNAVAILABLE,
                next_retry_delay=timedelta(seconds=max(1.0, failure.retry_after)),
            ) from failure
        if isinstance(failure, BackendUnavailable):
            raise ApplicationError(f"{what}: {failure}", _attempt(), type=ERROR_BACKEND_UNAVAILABLE) from failure
        if isinstance(failure, TimeoutError):
            raise ApplicationError(f"{what}: timed out", _attempt(), type=ERROR_BACKEND_UNAVAILABLE) from failure
        if isinstance(failure, MCPError):
            permanent = _PERMANENT_CODES.get(failure.error.code)
            raise ApplicationError(
                f"{what}: the backend refused the call: {failure.error.message} (JSON-RPC {failure.error.code})",
                _attempt(),
                type=permanent or ERROR_BACKEND_PROTOCOL,
                non_retryable=permanent is not None,
            ) from failure
        raise failure  # anything else: Temporal records it as a retryable failure


def step_policies(aggregation: AggregationConfig) -> dict[tuple[str, str], Mapping[str, ParameterPolicy]]:
    """Every configured argument policy, by (backend, original tool name)."""
    return {
        (backend, tool): override.policy
        for backend, settings in aggregation.backends.items()
        for tool, override in settings.overrides.items()
        if override.policy
    }


def _attempt() -> dict[str, int]:
    """Error details: which attempt failed (the workflow reports a step's attempts from it)."""
    return {"attempt": activity.info().attempt}


def to_output(result: types.Result | None, what: str = "tool", attempt: int = 1) -> CallBackendToolOutput:
    """The plain-JSON form of a `CallToolResult` (what workflow history stores)."""
    if isinstance(result, types.InputRequiredResult):
        raise ApplicationError(
            f"{what} asked the caller for more input, which a tool step cannot give (use an elicitation step)",
            type=ERROR_INPUT_REQUIRED,
            non_retryable=True,
        )
    if not isinstance(result, types.CallToolResult):
        raise ApplicationError(
            f"{what} returned {type(result).__name__}, not a tool result", type=ERROR_BACKEND_PROTOCOL
        )
    content = [block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content]
    text = "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))
    structured: dict[str, Any] | None = (
        dict(result.structured_content) if result.structured_content is not None else None
    )
    return CallBackendToolOutput(
        content=content, structured_content=structured, is_error=bool(result.is_error), text=text, attempt=attempt
    )


async def _call_with_heartbeats(
    connection: BackendConnection, call: CallBackendToolInput
) -> tuple[types.Result | None, Exception | None]:
    """Await the backend while heartbeating. The outcome is returned rather than raised: an
    exception leaving a task group arrives wrapped in an ExceptionGroup, and Temporal must see
    the `ApplicationError` itself. Cancellation is not caught: it abandons the call."""
    result: types.Result | None = None
    failure: Exception | None = None
    if activity.info().is_local:  # a local activity cannot heartbeat: its workflow task's own timeout watches it
        try:
            return await _call(connection, call), None
        except Exception as exc:
            return None, exc
    async with anyio.create_task_group() as group:
        group.start_soon(_heartbeat_forever, call, name=f"heartbeat:{call.backend}.{call.tool}")
        try:
            result = await _call(connection, call)
        except Exception as exc:
            failure = exc
        group.cancel_scope.cancel()
    return result, failure


async def _call(connection: BackendConnection, call: CallBackendToolInput) -> types.Result:
    """The backend call, over whichever transport the connection picks (a step needs no progress
    or log relay, so a 2026-07-28 HTTP backend gets one raw POST)."""
    meta = telemetry.inject({IDEMPOTENCY_META_KEY: call.idempotency_key})  # the step's span goes on
    params = {"name": call.tool, "arguments": call.arguments, "_meta": meta}
    with on_nobodys_behalf(call.backend):  # `vmcp dev` shares the pool with the façade's callers
        raw = await connection.requests.call_tool(params, timeout=call.timeout_seconds)
    if raw.get("resultType") == "input_required":
        return types.InputRequiredResult.model_validate(raw)
    return types.CallToolResult.model_validate(raw)


async def _heartbeat_forever(call: CallBackendToolInput) -> None:
    info = activity.info()
    interval = DEFAULT_HEARTBEAT_INTERVAL
    if info.heartbeat_timeout:
        interval = min(max(info.heartbeat_timeout.total_seconds() / 3, 0.1), DEFAULT_HEARTBEAT_INTERVAL)
    started = time.monotonic()
    while True:
        # the details show in the Web UI's pending-activity view
        activity.heartbeat({"backend": call.backend, "tool": call.tool, "waited_s": round(time.monotonic() - started)})
        await anyio.sleep(interval)
