"""Composite runs as MCP tasks: the `io.modelcontextprotocol/tasks` extension (SEP-2663).

A 2026-07-28 client that declares the extension in a request's client capabilities and calls a
composite tool gets a `CreateTaskResult` as soon as the run is durably started: the task id is the
run id, so any façade replica answers `tasks/get`, `tasks/update` and `tasks/cancel` for it, after
a restart of every process too (the run's state lives in Temporal, nothing in the façade).

How a run reads as a task:
- running                -> `working`, with the steps finished so far as `statusMessage`;
- a question (an `elicitation` step) -> `input_required`, the question as an `elicitation/create`
  input request; `tasks/update` delivers the answer to the run (checked there like every answer);
- an approval gate       -> `working`, the gate named in `statusMessage`: an approval is another
  person's decision (by `vmcp approve`, `vmcp_run_approve`), not input the calling client owes;
- finished               -> `completed` with the call's result inlined (a failed run is a tool
  error: `completed` with `isError`, as the extension wants); cancelled -> `cancelled`.
A task is reached by whoever started the run and by operators an authorization rule lets reach
others' runs; to anyone else it does not exist (the same error as an unknown id).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from vmcp.catalog.aggregate import TASKS_EXTENSION
from vmcp.clients.relay import is_modern
from vmcp.runs.errors import RunNotFound
from vmcp.runs.questions import Questions, open_questions
from vmcp.runs.tools import RunTools, result_of

if TYPE_CHECKING:  # an instance is handed in; the module loads the Temporal client
    from vmcp.runs.orchestrator import Orchestrator

TASK_METHODS = ("tasks/get", "tasks/update", "tasks/cancel")
POLL_INTERVAL_MS = 1000
_KEY_SEPARATOR = "#"  # input request key: <step id>#<digest of the asking>
_READ_CLOSED_RESULT = 10.0  # seconds; a closed run's result is read at once, this only bounds a slow Temporal


class TaskParams(types.RequestParams):
    """`tasks/get` and `tasks/cancel` params (and `tasks/update`'s, with its responses)."""

    task_id: str
    input_responses: dict[str, Any] | None = None


def declares_tasks(ctx: ServerRequestContext[Any]) -> bool:
    """Whether this request's client declared the tasks extension (a 2026-07-28 request only: the
    extension's results have no handshake-era wire form)."""
    if not is_modern(ctx):
        return False
    capabilities = ctx.session.client_capabilities
    return capabilities is not None and TASKS_EXTENSION in (capabilities.extensions or {})


def missing_capability() -> MCPError:
    return MCPError(
        code=types.MISSING_REQUIRED_CLIENT_CAPABILITY,
        message=f"Missing required client capability: the {TASKS_EXTENSION} extension",
        data={"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}},
    )


def not_found(task_id: str) -> MCPError:
    return MCPError(code=types.INVALID_PARAMS, message=f"Failed to retrieve task: no task {task_id[:120]!r}")


def created(run_id: str) -> dict[str, Any]:
    """The `CreateTaskResult` for a run just started (its start is durable once Temporal accepted it)."""
    now = _now()
    return {
        "resultType": "task",
        "taskId": run_id,
        "status": "working",
        "statusMessage": "The run has started.",
        "createdAt": now,
        "lastUpdatedAt": now,
        "ttlMs": None,  # a run may wait for people for days; it is kept for the namespace's retention once closed
        "pollIntervalMs": POLL_INTERVAL_MS,
    }


class RunTasks:
    def __init__(self, orchestrator: Orchestrator, run_tools: RunTools, questions: Questions) -> None:
        self.orchestrator = orchestrator
        self.run_tools = run_tools
        self.questions = questions

    async def get(self, caller: Mapping[str, Any], task_id: str, *, others: bool) -> dict[str, Any]:
        await self._reach(caller, task_id, others=others)
        return await self.detailed(task_id)

    async def update(
        self, caller: Mapping[str, Any], task_id: str, responses: Mapping[str, Any] | None, *, others: bool
    ) -> dict[str, Any]:
        """Answers to the task's outstanding input requests, each delivered to its step; keys that
        are not outstanding (never issued, answered, superseded) are ignored. An answer the run
        refuses (its step's schema, say) is Invalid Params saying why, and its key stays
        outstanding: the client answers it again."""
        await self._reach(caller, task_id, others=others)
        if not isinstance(responses, Mapping):
            raise MCPError(code=types.INVALID_PARAMS, message="tasks/update: `inputResponses` must be an object")
        outstanding = self._asked(task_id, await self.orchestrator.status(task_id))
        for key, response in responses.items():
            if key not in outstanding:
                continue
            try:
                answer = types.ElicitResult.model_validate(response)
            except ValidationError:
                raise MCPError(
                    code=types.INVALID_PARAMS,
                    message=f"tasks/update: inputResponses[{key!r}] is not an elicitation result",
                ) from None
            refused = await self.questions.deliver(task_id, outstanding[key][0], answer, caller)
            if refused is not None:
                raise MCPError(
                    code=types.INVALID_PARAMS,
                    message=f"tasks/update: inputResponses[{key!r}] was not accepted: {refused}",
                )
        return {}

    async def cancel(self, caller: Mapping[str, Any], task_id: str, *, others: bool) -> dict[str, Any]:
        """Cancel the run; an ended one stays as it ended (the same empty acknowledgement)."""
        await self._reach(caller, task_id, others=others)
        await self.orchestrator.cancel(task_id)
        return {}

    async def detailed(self, run_id: str) -> dict[str, Any]:
        """The run as a `DetailedTask`."""
        status = await self.orchestrator.status(run_id, prompt=True)
        state = str(status.get("state", "running"))
        task: dict[str, Any] = {
            "taskId": run_id,
            "status": "working",
            "createdAt": status.get("started_at") or _now(),
            "lastUpdatedAt": _last_update(status),
            "ttlMs": None,
            "pollIntervalMs": POLL_INTERVAL_MS,
        }
        if state == "cancelled":
            return {**task, "status": "cancelled", "statusMessage": "The run was cancelled."}
        if status.get("closed_at"):  # the workflow has closed: its result is there to read
            output = await self.orchestrator.result(run_id, _READ_CLOSED_RESULT)
            if output is not None:
                result = result_of(run_id, output).model_dump(by_alias=True, mode="json", exclude_none=True)
                return {**task, "status": "completed", "statusMessage": f"The run {state}.", "result": result}
        asked = self._asked(run_id, status)
        if asked:
            requests = {
                key: request.model_dump(by_alias=True, mode="json", exclude_none=True)
                for key, (_, request) in asked.items()
            }
            return {
                **task,
                "status": "input_required",
                "statusMessage": "The run asks a question.",
                "inputRequests": requests,
            }
        return {**task, "statusMessage": _progress(status)}

    def _asked(self, run_id: str, status: Mapping[str, Any]) -> dict[str, tuple[str, types.ElicitRequest]]:
        """The open questions as input requests: key -> (step, request). A key names one opening
        of a question (its step and when it opened), so every replica computes the same key, and a
        step asked again later (another opening) is a new request under a new key."""
        asked: dict[str, tuple[str, types.ElicitRequest]] = {}
        for question in open_questions(dict(status)):
            step = str(question["step"])
            opened = hashlib.sha256(str(question.get("since")).encode()).hexdigest()[:12]
            asked[f"{step}{_KEY_SEPARATOR}{opened}"] = (step, self.questions.request(run_id, question))
        return asked

    async def _reach(self, caller: Mapping[str, Any], task_id: str, *, others: bool) -> None:
        try:
            reachable = await self.run_tools.reaches(caller, task_id, others=others)
        except RunNotFound:
            reachable = False
        if not reachable:
            raise not_found(task_id)


def _progress(status: Mapping[str, Any]) -> str:
    steps: Mapping[str, Any] = status.get("steps") or {}
    done = sorted(sid for sid, s in steps.items() if s.get("status") in ("completed", "failed", "skipped"))
    running = sorted(sid for sid, s in steps.items() if s.get("status") == "running")
    waiting = status.get("waiting_for") or {}
    parts = [f"{len(done)} of {len(steps)} steps finished" if steps else "The run is starting."]
    if running:
        parts.append(f"running: {', '.join(running)}")
    gates = waiting.get("gates", [waiting] if waiting else [])
    for gate in gates:
        if gate.get("kind") != "input":
            approvers = ", ".join(gate.get("approvers") or [])
            parts.append(f"waiting for approval of step {gate.get('step')} by {approvers}: {gate.get('message', '')}")
    return "; ".join(parts)


def _last_update(status: Mapping[str, Any]) -> str:
    times = [status.get("closed_at"), status.get("started_at")]
    for step in (status.get("steps") or {}).values():
        times.append(step.get("finished_at"))
    for gate in (status.get("waiting_for") or {}).get("gates", [status.get("waiting_for") or {}]):
        times.append(gate.get("since"))
    known = [t for t in times if isinstance(t, str) and t]
    return max(known, key=_instant) if known else _now()


def _instant(stamp: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _now() -> str:
    return datetime.now(UTC).isoformat()
