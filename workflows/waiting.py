"""The steps of a composite run that wait for people: approval gates and questions (elicitation).

An object the interpreter (`workflows.composite`) holds: a gate opens in the run's `Gates`, the
run's state and search attributes say what it waits for, and a signal (or the step's timeout)
decides.
Deterministic like the rest of the interpreter: only workflow time, timers and signals.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey

with workflow.unsafe.imports_passed_through():
    from vmcp.composite.contracts import (
        NOTIFY_APPROVERS,
        SEARCH_ATTRIBUTE_PENDING_APPROVAL,
        SEARCH_ATTRIBUTE_STATUS,
        NotifyApproversInput,
    )
    from vmcp.composite.templating import render
    from vmcp.config.composite import DEFAULT_APPROVAL_TIMEOUT, ApprovalStep, CompositeTool, ElicitationStep

from workflows.gates import APPROVAL, INPUT, Gate, Gates

# A gate's webhook: retried for up to an hour, backing off to a minute between attempts
_WEBHOOK_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=60))
_WEBHOOK_DEADLINE = timedelta(hours=1)
_STATUS_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_STATUS)
_PENDING_KEY = SearchAttributeKey.for_bool(SEARCH_ATTRIBUTE_PENDING_APPROVAL)


class StepFailed(Exception):
    def __init__(self, message: str, attempts: int, output: Any = None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.output = output


class WaitingSteps:
    """Approval and elicitation steps of one run, held by its interpreter. The interpreter shares
    the run's `Gates` (its signals decide them), renders messages in the run's template `context`,
    and keeps the run's state: `state()` reads it, `set_state` changes it while a gate waits."""

    def __init__(
        self,
        tool: CompositeTool,
        gates: Gates,
        context: Callable[[], dict[str, Any]],
        state: Callable[[], str],
        set_state: Callable[[str], None],
        owner: str | None,
    ) -> None:
        self._tool = tool
        self._owner = owner  # the subject of the run's caller
        self._gates = gates
        self._context = context
        self._state = state
        self._set_state = set_state

    async def approval(self, step: ApprovalStep, state: dict[str, Any]) -> dict[str, Any]:
        """Wait for a decision (a signal), at most the step's timeout; then `on_timeout` decides."""
        message = str(render(step.message, self._context()))
        timeout = step.timeout or DEFAULT_APPROVAL_TIMEOUT
        gate = Gate(step.id, message, list(step.approvers), workflow.now().isoformat(), timeout)
        if workflow.patched("vmcp-approver-is-not-the-caller"):  # runs started before keep their rules
            gate.owner = self._owner
            gate.allow_self = step.allow_self_approval
        state.update(status="waiting", message=message, approvers=list(step.approvers))
        if step.webhook is not None:
            self._notify(step, message, timeout)
        if not await self._wait_at(gate, timeout):
            gate.decision = {
                "decision": "approved" if step.on_timeout == "approve" else "rejected",
                "approver": None,
                "comment": f"no decision within {timeout:g}s (on_timeout: {step.on_timeout})",
                "time": workflow.now().isoformat(),
            }
        decision = gate.decision
        assert decision is not None
        state["decision"] = decision
        if decision["decision"] == "rejected":
            who = decision["approver"] or "timeout"
            raise StepFailed(f"rejected by {who}: {decision['comment'] or 'no reason given'}", 0)
        return decision

    async def question(self, step: ElicitationStep, state: dict[str, Any]) -> dict[str, Any]:
        """Wait for an answer to the step's form (the `answer` signal: the façade sends what the
        calling client answered; anyone may answer for it later), at most the step's timeout."""
        message = str(render(step.message, self._context()))
        timeout = step.timeout or DEFAULT_APPROVAL_TIMEOUT
        gate = Gate(step.id, message, [], workflow.now().isoformat(), timeout, kind=INPUT)
        gate.requested_schema = dict(step.requested_schema)
        state.update(status="waiting", message=message)
        if not await self._wait_at(gate, timeout):
            raise StepFailed(f"no answer within {timeout:g}s", 0)
        answer = gate.decision
        assert answer is not None
        if answer["action"] != "accept":
            who = answer["responder"] or "the caller"
            raise StepFailed(f"{who} answered {answer['action']!r} to {message!r}", 0)
        return answer

    async def _wait_at(self, gate: Gate, timeout: float) -> bool:
        """Open `gate` until it is decided (True) or `timeout` seconds pass (False)."""
        self._gates.open[gate.step] = gate
        self._waiting_changed()
        try:
            await workflow.wait_condition(lambda: gate.decision is not None, timeout=timedelta(seconds=timeout))
            return True
        except builtins.TimeoutError:
            return False
        finally:
            self._gates.open.pop(gate.step, None)
            self._waiting_changed()

    def _notify(self, step: ApprovalStep, message: str, timeout: float) -> None:
        """Start the gate's webhook and move on: it is retried by Temporal, and the run never waits
        for it (a webhook that is down delays nobody's decision)."""
        notice = NotifyApproversInput(
            tool=self._tool.name,
            step=step.id,
            run_id=workflow.info().workflow_id,
            message=message,
            approvers=list(step.approvers),
            timeout_seconds=timeout,
        )
        notifying = workflow.start_activity(
            NOTIFY_APPROVERS,
            notice,
            start_to_close_timeout=timedelta(seconds=30),
            schedule_to_close_timeout=_WEBHOOK_DEADLINE,
            retry_policy=_WEBHOOK_RETRY,
            summary=f"{step.id}: notify approvers",
        )
        # its failure is in the history already; taking it here keeps the worker's log quiet
        notifying.add_done_callback(lambda done: done.cancelled() or done.exception())

    def _waiting_changed(self) -> None:
        approval = self._gates.waiting(APPROVAL)
        if approval:
            state = "awaiting_approval"
        elif self._gates.waiting(INPUT):
            state = "awaiting_input"
        else:
            state = "running"
        if state != self._state():
            self._set_state(state)
            workflow.upsert_search_attributes([_STATUS_KEY.value_set(state), _PENDING_KEY.value_set(approval)])
