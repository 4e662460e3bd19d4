"""Elicitation steps as the façade asks them: the run's question goes to the client that called.

A run at an `elicitation` step waits for an `answer` signal. While the calling client is still on
the line, the façade asks it and signals what it answered:
- a handshake-era (2025-11-25) client gets `elicitation/create` mid-call;
- a 2026-07-28 client gets an `InputRequiredResult` whose sealed `requestState` names the run and
  the steps asked; its retry of the same `tools/call` carries the answers, on any replica.
A client that declared no elicitation capability, or that cannot answer, gets the run id and state
`awaiting_input` instead; anyone may then answer by signal (`vmcp answer`, `temporal workflow signal`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mcp_types as types
from mcp.server.context import ServerRequestContext

from vmcp.clients.relay import ask
from vmcp.composite.contracts import SIGNAL_ANSWER, run_owner
from vmcp.runs.errors import RunNotWaiting
from vmcp.runs.request_state import InvalidState, PendingQuestions, RequestStateSealer

if TYPE_CHECKING:  # an instance is handed in; the module loads the Temporal client
    from vmcp.runs.orchestrator import Orchestrator

RESPONDER = "the calling client"
_MAX_REFUSALS_KEPT = 1000


def open_questions(status: dict[str, Any]) -> list[dict[str, Any]]:
    """The elicitation steps a run's status says are waiting for an answer."""
    waiting = status.get("waiting_for") or {}
    gates = waiting.get("gates", [waiting] if waiting else [])
    return [gate for gate in gates if gate.get("kind") == "input"]


def can_elicit(ctx: ServerRequestContext[Any]) -> bool:
    capabilities = ctx.session.client_capabilities
    return capabilities is not None and capabilities.elicitation is not None


class Questions:
    def __init__(self, orchestrator: Orchestrator, key_file: Path) -> None:
        self.orchestrator = orchestrator
        self._key_file = key_file
        self._sealer: RequestStateSealer | None = None
        self._refusals: dict[tuple[str, str], str] = {}  # why the last answer to (run, step) was refused

    @property
    def sealer(self) -> RequestStateSealer:
        if self._sealer is None:  # the key file is made on first use, not by every `vmcp serve`
            self._sealer = RequestStateSealer.from_environment_or_file(self._key_file)
        return self._sealer

    def input_required(
        self, run_id: str, tool: str, questions: list[dict[str, Any]], caller: Mapping[str, Any]
    ) -> types.InputRequiredResult:
        """The 2026-07-28 way to ask: the client answers and retries the call with `requestState`,
        which is sealed to this run and to `caller` (nobody else may answer with it)."""
        requests: types.InputRequests = {q["step"]: self.request(run_id, q) for q in questions}
        steps = {q["step"]: q["step"] for q in questions}
        state = self.sealer.seal(PendingQuestions(run_id, tool, steps, run_owner(dict(caller))))
        return types.InputRequiredResult(input_requests=requests, request_state=state)

    def opened(self, request_state: str, caller: Mapping[str, Any]) -> PendingQuestions:
        """The questions a retry answers; InvalidState when the state was not issued to `caller`."""
        pending = self.sealer.open(request_state)
        if pending.asked != run_owner(dict(caller)):
            raise InvalidState("requestState was issued to another caller: call the tool again")
        return pending

    async def ask_mid_call(
        self, ctx: ServerRequestContext[Any], run_id: str, questions: list[dict[str, Any]], caller: Mapping[str, Any]
    ) -> bool:
        """The handshake-era way: `elicitation/create` now, the answer sent to the run. False when
        the client could not answer (the run then waits for an answer by signal or Update)."""
        for question in questions:
            answer = await ask(ctx, self.request(run_id, question))
            if not isinstance(answer, types.ElicitResult):
                return False
            await self.deliver(run_id, question["step"], answer, caller)
        return True

    async def deliver_all(
        self, pending: PendingQuestions, responses: types.InputResponses | None, caller: Mapping[str, Any]
    ) -> None:
        """The answers a 2026-07-28 client sent with its retry, each to the step it was asked for."""
        for key, response in (responses or {}).items():
            step = pending.steps.get(key)
            if step is not None and isinstance(response, types.ElicitResult):
                await self.deliver(pending.run_id, step, response, caller)

    async def deliver(
        self, run_id: str, step: str, answer: types.ElicitResult, caller: Mapping[str, Any]
    ) -> str | None:
        """Send `answer` to the run's question `step`; why the run refused it, or None."""
        payload = {
            "id": str(uuid.uuid4()),
            "step": step,
            "action": answer.action,
            "content": answer.content,
            "responder": caller.get("subject") or RESPONDER,
        }
        try:
            record = await self.orchestrator.decide(run_id, SIGNAL_ANSWER, payload)
        except RunNotWaiting:
            return None  # answered by someone else meanwhile, or the run ended: its result says how
        if record.get("outcome") == "refused" and record.get("problem"):
            if len(self._refusals) > _MAX_REFUSALS_KEPT:
                self._refusals.clear()  # only a hint for the next question; never worth memory
            self._refusals[(run_id, step)] = str(record["problem"])
            return str(record["problem"])
        self._refusals.pop((run_id, step), None)
        return None

    def request(self, run_id: str, question: dict[str, Any]) -> types.ElicitRequest:
        """The `elicitation/create` request that asks `question`, telling why the previous answer
        was refused when this process delivered it (a refused answer leaves no trace in the run)."""
        message = str(question.get("message", ""))
        refused = self._refusals.get((run_id, question["step"]))
        if refused:
            message = f"{message}\n(The previous answer was not accepted: {refused})"
        schema = question.get("requested_schema") or {"type": "object", "properties": {}}
        return types.ElicitRequest(params=types.ElicitRequestFormParams(message=message, requested_schema=schema))
