"""Gates: the people a composite run waits for, kept as plain workflow state.

Two kinds: an approval gate waits for an `approve` / `reject` decision; an input gate (an
`elicitation` step) waits for an `answer` to its form, from the calling client or from anyone
answering for it later. Deterministic (no I/O): Updates (or signals) deliver decisions, the
interpreter waits on the gate. An Update's validator refuses a decision before it enters the
history (its caller learns why at once); a signal cannot be refused, so a refused signal is
recorded with its reason, for the status query and the Web UI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from vmcp.config.composite import answer_problems

ACCEPTED = "accepted"
REFUSED = "refused"
APPROVAL = "approval"
INPUT = "input"
_ANSWER_ACTIONS = ("accept", "decline", "cancel")


@dataclass
class Gate:
    step: str
    message: str
    approvers: list[str]
    opened_at: str
    timeout_s: float
    decision: dict[str, Any] | None = None
    kind: str = APPROVAL
    requested_schema: dict[str, Any] | None = None
    owner: str | None = None  # the subject of the run's caller, who may not decide it...
    allow_self: bool = True  # ...unless the step allows it (runs from before owners were checked do)


@dataclass
class Gates:
    open: dict[str, Gate] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)

    def waiting(self, kind: str) -> bool:
        return any(gate.kind == kind for gate in self.open.values())

    def waiting_for(self) -> dict[str, Any]:
        """What the run waits for, as the façade reports it (`waiting_for`)."""
        if not self.open:
            return {}
        gates = [_describe(gate) for gate in self.open.values()]
        return gates[0] if len(gates) == 1 else {"gates": gates}

    def decision_problem(self, kind: str, payload: Any) -> str | None:
        """Why an `approve` / `reject` decision would be refused, or None (nothing changes)."""
        payload = payload if isinstance(payload, dict) else {}
        gate, problem = self._target(payload.get("step"), APPROVAL)
        if gate is not None and problem is None:
            problem = _not_allowed(gate, payload.get("approver"), payload.get("groups"))
        return problem

    def decide(self, kind: str, payload: Any, now: str) -> dict[str, Any]:
        """Apply an `approve` / `reject` decision, or record why it was refused; the record."""
        record: dict[str, Any] = {"kind": kind, "time": now}
        if not isinstance(payload, dict):
            payload = {}
        approver = payload.get("approver")
        record.update(
            id=payload.get("id"),
            approver=approver,
            step=payload.get("step"),
            comment=payload.get("reason" if kind == "reject" else "comment"),
        )
        gate, problem = self._target(payload.get("step"), APPROVAL)
        if gate is not None and problem is None:
            problem = _not_allowed(gate, approver, payload.get("groups"))
        if problem is not None or gate is None:
            record.update(outcome=REFUSED, problem=problem)
        else:
            record.update(outcome=ACCEPTED, step=gate.step)
            gate.decision = {
                "decision": "approved" if kind == "approve" else "rejected",
                "approver": approver,
                "comment": record["comment"],
                "time": now,
            }
        self.decisions.append(record)
        return record

    def answer_problem(self, payload: Any) -> str | None:
        """Why an `answer` would be refused, or None (nothing changes)."""
        payload = payload if isinstance(payload, dict) else {}
        return self._answer_check(payload)[1]

    def answer(self, payload: Any, now: str) -> dict[str, Any]:
        """Apply an `answer` to an input gate, or record why it was refused; the record. The
        content is checked against the step's `requested_schema` here, so no path around the
        façade's own check (the CLI, `temporal workflow signal`) can hand later steps a malformed
        answer."""
        if not isinstance(payload, dict):
            payload = {}
        action = payload.get("action", "accept")
        content = payload.get("content") if action == "accept" else None
        record: dict[str, Any] = {
            "kind": "answer",
            "time": now,
            "id": payload.get("id"),
            "responder": payload.get("responder"),
            "step": payload.get("step"),
            "action": action,
        }
        gate, problem = self._answer_check(payload)
        if problem is not None or gate is None:
            record.update(outcome=REFUSED, problem=problem)
        else:
            if action == "accept" and content is None:
                content = {}
            record.update(outcome=ACCEPTED, step=gate.step)
            gate.decision = {"action": action, "content": content, "responder": payload.get("responder"), "time": now}
        self.decisions.append(record)
        return record

    def _answer_check(self, payload: dict[str, Any]) -> tuple[Gate | None, str | None]:
        action = payload.get("action", "accept")
        gate, problem = self._target(payload.get("step"), INPUT)
        if gate is not None and problem is None:
            if action not in _ANSWER_ACTIONS:
                problem = f"action must be one of {', '.join(_ANSWER_ACTIONS)}, not {action!r}"
            elif action == "accept":
                content = payload.get("content")
                problems = answer_problems(
                    gate.requested_schema or {"type": "object"}, {} if content is None else content
                )
                problem = "; ".join(problems) or None
        return gate, problem

    def _target(self, step: Any, kind: str) -> tuple[Gate | None, str | None]:
        waiting = {sid: gate for sid, gate in self.open.items() if gate.kind == kind}
        what = "approval gate" if kind == APPROVAL else "question (elicitation step)"
        if not waiting:
            return None, f"no {what} is waiting in this run"
        if step is None:
            if len(waiting) > 1:
                return None, f"several {what}s wait ({', '.join(sorted(waiting))}): name one with `step`"
            return next(iter(waiting.values())), None
        gate = waiting.get(str(step))
        if gate is None:
            return None, f"no {what} {step!r} is waiting (waiting: {', '.join(sorted(waiting))})"
        return gate, None


def _describe(gate: Gate) -> dict[str, Any]:
    if gate.kind == INPUT:
        return {
            "kind": INPUT,
            "step": gate.step,
            "message": gate.message,
            "requested_schema": gate.requested_schema,
            "since": gate.opened_at,
        }
    approvers = gate.approvers or ["anyone" if gate.allow_self else "anyone but the run's caller"]
    return {"step": gate.step, "message": gate.message, "approvers": approvers, "since": gate.opened_at}


def _not_allowed(gate: Gate, approver: Any, groups: Any) -> str | None:
    """Why `approver` (a subject, with its groups) may not decide `gate`, or None. Subjects and
    groups are separate namespaces: a subject spelt `group:x` is no member of group x."""
    if not isinstance(approver, str) or not approver:
        return "the decision names no approver"
    if not gate.allow_self and approver == gate.owner:
        return f"{approver!r} started this run and may not decide its own gate {gate.step!r}"
    if not gate.approvers:
        return None
    subjects = {entry for entry in gate.approvers if not entry.startswith("group:")}
    if approver in subjects:
        return None
    wanted = {entry.removeprefix("group:") for entry in gate.approvers if entry.startswith("group:")}
    member_of = {str(g) for g in groups} if isinstance(groups, list) else set()
    if wanted & member_of:
        return None
    return f"{approver!r} may not decide gate {gate.step!r} (approvers: {', '.join(gate.approvers)})"
