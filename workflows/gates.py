"""Approval gates: the decisions a composite run waits for, kept as plain workflow state.

Deterministic (no I/O): signals deliver decisions, the interpreter waits on `decided`. Every
decision is recorded with its outcome, refused ones too, so the approver's CLI can tell from the
status query whether its signal was accepted, and the run's history shows who tried what.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ACCEPTED = "accepted"
REFUSED = "refused"


@dataclass
class Gate:
    step: str
    message: str
    approvers: list[str]
    opened_at: str
    timeout_s: float
    decision: dict[str, Any] | None = None


@dataclass
class Gates:
    open: dict[str, Gate] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)

    def waiting_for(self) -> dict[str, Any]:
        """What the run waits for, as the façade reports it (`waiting_for`)."""
        if not self.open:
            return {}
        gates = [
            {"step": g.step, "message": g.message, "approvers": g.approvers or ["anyone"], "since": g.opened_at}
            for g in self.open.values()
        ]
        return gates[0] if len(gates) == 1 else {"gates": gates}

    def decide(self, kind: str, payload: Any, now: str) -> None:
        """Apply an `approve` / `reject` signal, or record why it was refused."""
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
        gate, problem = self._target(payload.get("step"))
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

    def _target(self, step: Any) -> tuple[Gate | None, str | None]:
        if not self.open:
            return None, "no approval gate is waiting in this run"
        if step is None:
            if len(self.open) > 1:
                return None, f"several gates wait ({', '.join(sorted(self.open))}): name one with `step`"
            return next(iter(self.open.values())), None
        gate = self.open.get(str(step))
        if gate is None:
            return None, f"no gate {step!r} is waiting (waiting: {', '.join(sorted(self.open))})"
        return gate, None


def _not_allowed(gate: Gate, approver: Any, groups: Any) -> str | None:
    if not isinstance(approver, str) or not approver:
        return "the decision names no approver"
    if not gate.approvers:
        return None
    if approver in gate.approvers:
        return None
    member_of = {f"group:{g}" for g in groups} if isinstance(groups, list) else set()
    if member_of & set(gate.approvers):
        return None
    return f"{approver!r} may not decide gate {gate.step!r} (approvers: {', '.join(gate.approvers)})"
