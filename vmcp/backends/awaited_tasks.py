"""Tools that a 2025-11-25 backend runs only as tasks, called through vmcp as plain tools.

The 2025-11-25 revision let a server require that a tool be called as a task (`execution.taskSupport:
"required"`): the call carries `params.task`, the answer is a `CreateTaskResult`, and the client then
waits on `tasks/result`, through whose response the backend's questions (elicitation) arrive.
server-everything's `simulate-research-query` is one. vmcp does not hand such a task to its caller:
in that revision a task belongs to the session that created it (the TypeScript SDK keeps them per
server instance), and vmcp's sessions to a backend are its own, one per replica, so a later
`tasks/get` reaching another replica could never be routed to it. Instead vmcp awaits the task
itself inside the caller's call — create, then `tasks/result` — and the caller gets the tool's
result, as from any tool: every client can call it, in either era, and so can composite steps.
Meanwhile the task's status messages become progress notifications when the caller asked for
progress, the backend's questions reach the caller as any mid-call question does, and a caller
who gives up (cancels, or the call times out) has the backend's task cancelled too.

(The 2026-07-28 tasks extension is another matter: its tasks are relayed to the caller, with
their route sealed into the id: `vmcp.pipeline.backend_tasks`.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import anyio
import mcp_types as types
from mcp import Client
from mcp.shared.dispatcher import CallOptions, ProgressFnT
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from vmcp.backends.common import without_meta_key

logger = logging.getLogger(__name__)

RELATED_TASK = "io.modelcontextprotocol/related-task"
TASK_TTL_MS = 3_600_000  # the backend may drop the task an hour after creating it: vmcp awaits it at once
_POLL_FLOOR_SECONDS = 0.5  # status polls for progress, never faster than this whatever the backend asks
_CANCEL_SECONDS = 5.0


def awaitable(client: Client, tools: Iterable[types.Tool]) -> tuple[tuple[types.Tool, ...], frozenset[str]]:
    """A backend's tools as vmcp offers them, and the names vmcp must call as 2025-11-25 tasks.

    Only a handshake-era backend that declares task-augmented `tools/call` gets this treatment; its
    task-required tools lose `execution.taskSupport` (through vmcp they are plain tools)."""
    caps = client.server_capabilities
    listed = tuple(tools)
    if client.protocol_version in MODERN_PROTOCOL_VERSIONS or caps is None or not _creates_tool_tasks(caps.tasks):
        return listed, frozenset()
    offered: list[types.Tool] = []
    awaited: set[str] = set()
    for tool in listed:
        if tool.execution is not None and tool.execution.task_support == "required":
            awaited.add(tool.name)
            tool = tool.model_copy(update={"execution": None})
        offered.append(tool)
    return tuple(offered), frozenset(awaited)


def _creates_tool_tasks(tasks: Any) -> bool:
    dumped = tasks.model_dump(by_alias=True) if hasattr(tasks, "model_dump") else tasks
    requests = dumped.get("requests") if isinstance(dumped, Mapping) else None
    tools = requests.get("tools") if isinstance(requests, Mapping) else None
    return isinstance(tools, Mapping) and tools.get("call") is not None


async def call_as_task(
    client: Client, params: Mapping[str, Any], timeout: float, progress: ProgressFnT | None
) -> dict[str, Any]:
    """One tools/call made as a 2025-11-25 task and awaited to its result (the backend's own
    answer when it chose to answer at once)."""
    created = await _request(client, "tools/call", {**params, "task": {"ttl": TASK_TTL_MS}}, timeout)
    task = created.get("task")
    if not isinstance(task, Mapping) or not isinstance(task.get("taskId"), str):
        return _call_result(created)  # a plain result: the backend did not make a task of it
    task_id = str(task["taskId"])
    try:
        async with anyio.create_task_group() as following:
            if progress is not None:
                following.start_soon(_report_status, client, task_id, task, progress)
            result = await _request(client, "tasks/result", {"taskId": task_id}, timeout)
            following.cancel_scope.cancel()
    except BaseException:
        # the caller gave up, the wait timed out, or the session failed: the backend's task must
        # not run on unobserved (a closed session ends it anyway; the attempt is bounded)
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CANCEL_SECONDS):
            try:
                await _request(client, "tasks/cancel", {"taskId": task_id}, _CANCEL_SECONDS)
            except Exception as exc:  # already finished, or the session is gone
                logger.debug("cancelling task %s after its call ended: %s", task_id, exc)
        raise
    return _call_result(_without_related_task(result))


def _call_result(raw: dict[str, Any]) -> dict[str, Any]:
    """In the shape every session-path answer takes (the SDK's model of it), valid in either era."""
    answer = types.CallToolResult.model_validate(raw, by_name=False)
    return answer.model_dump(by_alias=True, mode="json", exclude_none=True)


async def _report_status(client: Client, task_id: str, task: Mapping[str, Any], progress: ProgressFnT) -> None:
    """The task's status messages as progress notifications, polled at the backend's pace."""
    last: str | None = None
    reported = 0
    while True:
        message = task.get("statusMessage")
        if isinstance(message, str) and message != last:
            last = message
            reported += 1
            await progress(float(reported), None, message)
        interval = task.get("pollInterval")
        seconds = interval / 1000 if isinstance(interval, int | float) and not isinstance(interval, bool) else 1.0
        await anyio.sleep(max(seconds, _POLL_FLOOR_SECONDS))
        task = await _request(client, "tasks/get", {"taskId": task_id}, 30.0)


def _without_related_task(result: dict[str, Any]) -> dict[str, Any]:
    """The backend's task id stays between vmcp and the backend."""
    return without_meta_key(result, RELATED_TASK)


def without_related_task(request: types.InputRequest) -> types.InputRequest:
    """A backend's question about one of its 2025-11-25 tasks, as the caller (who knows no such
    task) is asked it."""
    params = request.params
    meta = params.meta if params is not None else None
    if params is None or not meta or RELATED_TASK not in meta:
        return request
    rest = {key: value for key, value in meta.items() if key != RELATED_TASK}
    return request.model_copy(update={"params": params.model_copy(update={"meta": rest or None})})


async def _request(client: Client, method: str, params: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    # The SDK's typed `send_request` validates a tools/call answer as a CallToolResult, which a
    # CreateTaskResult is not, and knows no 2025-11-25 task methods: so the session's raw channel,
    # stamped (headers) as the session stamps every request it sends.
    session = client.session
    data: dict[str, Any] = {"method": method, "params": dict(params)}
    options: CallOptions = {"timeout": timeout}
    session._stamp(data, options)
    return await session._dispatcher.send_raw_request(method, data["params"], options)
