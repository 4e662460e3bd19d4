"""The MCP tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663) on the Python SDK's own
client, which has no tasks support but takes extensions: a `ResultClaim` for `resultType: "task"`
(resolved by polling `tasks/get`, so a plain `call_tool` returns the task's final result) and the
three task requests, sent with `Mcp-Name` set to the task id as the extension wants.

    async with Client(url, mode="2026-07-28", extensions=[TasksExtension()]) as client:
        created = await client.session.call_tool("tool", {...}, allow_claimed=True)  # the task, at once
        task = await get_task(client, created.task_id)
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import anyio
import mcp_types as types
from mcp import Client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.session import ClientSession

TASKS = "io.modelcontextprotocol/tasks"
TERMINAL = ("completed", "failed", "cancelled")


class TaskParams(types.RequestParams):
    task_id: str


class UpdateTaskParams(TaskParams):
    input_responses: dict[str, Any]


class GetTask(types.Request[TaskParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    name_param: ClassVar[str | None] = "taskId"


class UpdateTask(types.Request[UpdateTaskParams, Literal["tasks/update"]]):
    method: Literal["tasks/update"] = "tasks/update"
    name_param: ClassVar[str | None] = "taskId"


class CancelTask(types.Request[TaskParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    name_param: ClassVar[str | None] = "taskId"


class Task(types.Result):
    """A `DetailedTask` as `tasks/get` returns it."""

    result_type: str | None = None
    task_id: str
    status: str
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None = None
    poll_interval_ms: int | None = None
    input_requests: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class CreatedTask(types.Result):
    """A `CreateTaskResult`: `tools/call` answered with a task."""

    result_type: Literal["task"]
    task_id: str
    status: str
    created_at: str
    last_updated_at: str
    ttl_ms: int | None = None
    poll_interval_ms: int | None = None


class Ack(types.Result):
    result_type: str | None = None


async def get_task(client: Client | ClientSession, task_id: str) -> Task:
    return await _session(client).send_request(GetTask(params=TaskParams(task_id=task_id)), Task)


async def update_task(client: Client | ClientSession, task_id: str, responses: dict[str, Any]) -> Ack:
    request = UpdateTask(params=UpdateTaskParams(task_id=task_id, input_responses=responses))
    return await _session(client).send_request(request, Ack)


async def cancel_task(client: Client | ClientSession, task_id: str) -> Ack:
    return await _session(client).send_request(CancelTask(params=TaskParams(task_id=task_id)), Ack)


async def until_terminal(client: Client | ClientSession, task_id: str, seconds: float = 120) -> Task:
    with anyio.fail_after(seconds):
        while True:
            task = await get_task(client, task_id)
            if task.status in TERMINAL:
                return task
            await anyio.sleep(min((task.poll_interval_ms or 500) / 1000, 0.5))


class TasksExtension(ClientExtension):
    identifier = TASKS

    def claims(self) -> list[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=CreatedTask, resolve=self._resolve)]

    @staticmethod
    async def _resolve(created: CreatedTask, ctx: ClaimContext) -> types.CallToolResult:
        task = await until_terminal(ctx.session, created.task_id)
        if task.status != "completed" or task.result is None:
            raise RuntimeError(f"task {created.task_id} ended {task.status}: {task.error or task.status_message}")
        return types.CallToolResult.model_validate(task.result)


def _session(client: Client | ClientSession) -> ClientSession:
    return client.session if isinstance(client, Client) else client
