"""Observe: every request, answered or refused, in the metrics and the audit trail.

The last stage of every request, whichever way it came in (the lean path or the SDK's session
machinery) and whatever it asked (a tool, a prompt, a resource, a completion, a subscription).
Metrics labels only take names the catalogue offers — an unknown name is counted as `(unknown)` —
so a caller sending random names cannot grow the number of series. The audit line keeps what was
asked for (clipped), because that is what an investigation needs.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from vmcp.ops.audit import AuditLog, audit_outcome, run_id_in
from vmcp.ops.metrics import Metrics
from vmcp.pipeline.police import Refusal
from vmcp.pipeline.route import UNKNOWN, Target

_MAX_NAME = 200  # characters of a requested name the audit trail keeps


class Observer:
    def __init__(self, metrics: Metrics, audit: AuditLog) -> None:
        self.metrics = metrics
        self.audit = audit
        self.policy_denials: Counter[str] = Counter()  # "<name>: <rule>" -> requests refused (in /status)

    def refused(
        self, caller: Mapping[str, Any], method: str, name: str, target: Target | None, refusal: Refusal, started: float
    ) -> None:
        label = target.label if target is not None else UNKNOWN
        self.metrics.denials.labels(method, label, refusal.reason).inc()
        if refusal.rule is not None:
            self.policy_denials[f"{label}: {refusal.rule}"] += 1
        self._count(method, target, "refused", started)
        self._audit(caller, method, name, target, refusal.decision, "refused", started, str(refusal))

    def answered(
        self,
        caller: Mapping[str, Any],
        method: str,
        name: str,
        target: Target | None,
        started: float,
        *,
        result: Any = None,
        failure: str | None = None,
    ) -> None:
        """A request that was forwarded (or answered by vmcp): `result` for tools (its outcome is
        read from it), `failure` when it ended in an error rather than a result."""
        if method == "tools/call" and failure is None:
            outcome, detail = audit_outcome(result)
        else:
            outcome, detail = ("error", failure) if failure is not None else ("ok", None)
        self._count(method, target, outcome, started)
        self._audit(caller, method, name, target, "allow", outcome, started, detail, run_id_in(result))

    def _count(self, method: str, target: Target | None, outcome: str, started: float) -> None:
        backend = target.backend if target is not None else None
        seconds = time.monotonic() - started
        if method == "tools/call":
            self.metrics.observe_call(target.label if target is not None else UNKNOWN, backend, outcome, seconds)
        else:
            self.metrics.observe_request(method, backend, outcome, seconds)

    def _audit(
        self,
        caller: Mapping[str, Any],
        method: str,
        name: str,
        target: Target | None,
        decision: str,
        outcome: str,
        started: float,
        detail: str | None,
        run_id: str | None = None,
    ) -> None:
        if not self.audit.enabled:
            return
        shown = name if len(name) <= _MAX_NAME else name[: _MAX_NAME - 1] + "…"
        self.audit.record(
            caller=dict(caller),
            method=method,
            tool=shown if method == "tools/call" else None,
            target=None if method == "tools/call" else shown,
            backend=target.backend if target is not None else None,
            decision=decision,
            outcome=outcome,
            started=started,
            run_id=run_id,
            detail=detail,
        )
