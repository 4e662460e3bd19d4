"""How a composite run's tool steps call their backends: the activity `vmcp.call_backend_tool`,
under the step's retry policy, as a local activity when the step is short.

An object the interpreter (`workflows.composite`) holds, one per run. A short step (attempt
timeout at most the composite's `local_step_timeout`, or `local: true`) runs as a local activity,
inside the workflow task: no task-queue round trip, no further workflow task to learn its result.
Its result is recorded only when that workflow task completes, so the step right after a local
one, and every step once a gate has opened, is a regular activity: scheduling it completes the
task. Regular activities heartbeat; a worker that dies mid-call is noticed by the heartbeat
timeout and the call is made again elsewhere, under the same idempotency key.
Deterministic like the rest of the interpreter.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, TimeoutError, TimeoutType

with workflow.unsafe.imports_passed_through():
    from vmcp.composite.contracts import (
        CALL_BACKEND_TOOL,
        ERROR_TOOL,
        PERMANENT_ERRORS,
        CallBackendToolInput,
        CallBackendToolOutput,
    )
    from vmcp.config.composite import CompositeTool, NestedToolStep, ToolStep

from workflows.waiting import StepFailed

HEARTBEAT_TIMEOUT = timedelta(seconds=10)  # how soon a dead worker's call is noticed and retried
DEFAULT_ATTEMPT_TIMEOUT = 300.0
_INFRA_RETRIES = 5  # re-runs of a call whose worker vanished after its retry policy was spent
_LOCAL_STEPS = "vmcp-local-steps"  # runs recorded before short steps ran as local activities replay as they ran


class StepCalls:
    """The backend calls of one run's tool steps (and `for_each` items)."""

    def __init__(self, tool: CompositeTool, caller: dict[str, Any] | None) -> None:
        self._tool = tool
        self._caller = caller
        self.gate_passed = False  # an approval or a question answered: later steps are regular activities
        self._ran_locally: set[str] = set()  # steps whose call ran as a local activity

    def runs_locally(self, step_id: str, call: ToolStep | NestedToolStep, attempt_timeout: float) -> bool:
        """A local activity for a short step (`local_step_timeout`, or the step's own `local`), but
        never once a gate has opened (a run that waited for people is not in a hurry), and never
        right after a step that ran locally: a local activity's result is recorded only when its
        workflow task completes, and scheduling a regular activity is what completes it — so a
        worker lost during the dependent step cannot take the finished one's result with it."""
        if self.gate_passed:
            return False
        step = next((step for step in self._tool.steps if step.id == step_id), None)
        if step is not None and any(dep in self._ran_locally for dep in step.depends_on):
            return False
        return call.local if call.local is not None else attempt_timeout <= self._tool.local_step_timeout

    async def call(
        self, step_id: str, suffix: str, call: ToolStep | NestedToolStep, arguments: Any
    ) -> tuple[Any, str, int]:
        """One backend call under the step's retry policy: (output, text, attempts)."""
        assert call.backend is not None and call.original is not None, "definition was not resolved"
        spec = call.retry
        policy = RetryPolicy(
            maximum_attempts=spec.max_attempts,
            initial_interval=timedelta(seconds=spec.initial_interval),
            backoff_coefficient=spec.backoff,
            maximum_interval=timedelta(seconds=spec.max_interval) if spec.max_interval else None,
            non_retryable_error_types=list(PERMANENT_ERRORS),
        )
        attempt_timeout = call.timeout or DEFAULT_ATTEMPT_TIMEOUT
        request = CallBackendToolInput(
            backend=call.backend,
            tool=call.original,
            arguments=arguments if isinstance(arguments, dict) else {},
            idempotency_key=f"{workflow.info().workflow_id}/{step_id}{suffix}",
            step_id=step_id,
            timeout_seconds=call.timeout,
            fail_on_error=True,
            caller=self._caller or None,
        )
        summary = f"{step_id}{suffix}: {call.backend}.{call.original}"
        # the activity enforces the attempt timeout itself (a clean error); this is the net
        net = timedelta(seconds=attempt_timeout + 15)
        if self.runs_locally(step_id, call, attempt_timeout) and workflow.patched(_LOCAL_STEPS):
            # Inside the workflow task that schedules it: no task-queue round trip, no further
            # workflow task to learn the result. A worker lost meanwhile loses the workflow task
            # too, and the next worker runs the call again under the same idempotency key.
            try:
                result = await workflow.execute_local_activity(
                    CALL_BACKEND_TOOL,
                    request,
                    result_type=CallBackendToolOutput,
                    start_to_close_timeout=net,
                    retry_policy=policy,
                    summary=summary,
                )
            except (ActivityError, ApplicationError, TimeoutError) as exc:
                # a local activity's failure arrives as itself, not wrapped in an ActivityError
                cause = exc.cause if isinstance(exc, ActivityError) else exc
                if isinstance(cause, CancelledError):
                    raise asyncio.CancelledError from None
                self._ran_locally.add(step_id)  # its failure is a result too: recorded before dependents run
                raise _failure_of(cause, spec.max_attempts, exc) from None
            self._ran_locally.add(step_id)
            return _output_of(result.structured_content, result.text), result.text, result.attempt
        for _ in range(_INFRA_RETRIES + 1):
            try:
                result = await workflow.execute_activity(
                    CALL_BACKEND_TOOL,
                    request,
                    result_type=CallBackendToolOutput,
                    start_to_close_timeout=net,
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=policy,
                    summary=summary,
                )
                return _output_of(result.structured_content, result.text), result.text, result.attempt
            except ActivityError as exc:
                cause = exc.cause
                if isinstance(cause, CancelledError):
                    raise asyncio.CancelledError from None  # the step was stopped, it did not fail
                if isinstance(cause, TimeoutError) and cause.type == TimeoutType.HEARTBEAT:
                    continue  # the worker running it vanished: run the call again
                raise _step_failure(exc, spec.max_attempts) from None
        raise StepFailed("the call was lost with its worker too many times", spec.max_attempts)


def _step_failure(exc: ActivityError, max_attempts: int) -> StepFailed:
    return _failure_of(exc.cause, max_attempts, exc)


def _failure_of(cause: BaseException | None, max_attempts: int, exc: BaseException) -> StepFailed:
    """What a failed call becomes: the step's failure, with its attempts and any tool output."""
    if isinstance(cause, ApplicationError):
        details = cause.details[0] if cause.details else None
        attempts = details.get("attempt", max_attempts) if isinstance(details, dict) else max_attempts
        if cause.type in PERMANENT_ERRORS:
            attempts = details.get("attempt", 1) if isinstance(details, dict) else 1
        output = None
        if cause.type == ERROR_TOOL and isinstance(details, dict):
            output = _output_of(details.get("structured_content"), details.get("text", ""))
        return StepFailed(cause.message, attempts, output)
    if isinstance(cause, TimeoutError):
        return StepFailed(f"timed out ({cause.type.name.lower() if cause.type else 'timeout'})", max_attempts)
    return StepFailed(str(cause or exc), max_attempts)


def _output_of(structured: Any, text: str) -> Any:
    """What later steps see as `steps.<id>.output`: structuredContent, else the text parsed as
    JSON when it parses, else the text."""
    if structured is not None:
        return structured
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return text
