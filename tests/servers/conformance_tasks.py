"""The conformance fixture's tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663).

Served by `tests.servers.conformance_server` for `@modelcontextprotocol/conformance`
0.2.0-alpha.12's `tasks-*` scenarios. `ConformanceTasks.install` wires it into a low-level
`Server`; `ConformanceTasks.lifespan` must be that server's lifespan (the task group the work runs
in, which outlives the `tools/call` that created a task).

The wire contract:

- The server advertises `capabilities.extensions["io.modelcontextprotocol/tasks"] = {}`.
- A task is created only for a 2026-07-28 `tools/call` whose `_meta["io.modelcontextprotocol/
  clientCapabilities"].extensions` names the extension, and only for a task-supporting tool; the
  answer is then a flat `CreateTaskResult`: `resultType: "task"`, `taskId`, `status`,
  `statusMessage`, `createdAt`, `lastUpdatedAt` (ISO 8601), `ttlMs`, `pollIntervalMs` (integer
  milliseconds). Without the extension (or in the handshake era) an `optional` tool runs in the
  call and answers as any tool does; a `required` one is refused with -32021 (data:
  `requiredCapabilities.extensions[<tasks>]`). Tools: `greet` (never a task), `slow_compute`,
  `failing_job` (required), `protocol_error_job`, `confirm_delete`, `multi_input`,
  `test_tool_with_task` (required; asks through MRTR before it creates the task). The task
  support shows in `tools/list` as `execution.taskSupport` in both eras.
- `tasks/get {taskId}` answers the `DetailedTask` (`resultType: "complete"`): `inputRequests`
  while `input_required`, the tool's result under `result` once `completed` (a tool error is
  `completed` with `result.isError`), the JSON-RPC error under `error` once `failed`.
- `tasks/update {taskId, inputResponses}` delivers answers to outstanding `inputRequests` keys
  (server-minted, never reused within a task); answers to other keys are ignored, a partial set is
  kept and the task stays `input_required` with only the unanswered keys. Ack: `{resultType:
  "complete"}`. An answer of the wrong shape for an outstanding key is -32602.
- `tasks/cancel {taskId}` acks the same way; a running task settles to `cancelled` at once (its
  work is cancelled), a terminal one is left as it is.
- `tasks/*` from a request that does not declare the extension: -32021. On the 2026-07-28 HTTP
  wire their `Mcp-Name` header must equal `params.taskId` (-32020 otherwise, as the SDK does for
  `tools/call`). An unknown or expired `taskId`: -32602. `tasks/result` and `tasks/list` (removed in
  this version of the extension) are not served: -32601.

Tasks live in memory under unguessable ids until their TTL (counted from creation) runs out.
The fixture sends no `notifications/tasks`: it serves no `subscriptions/listen` stream, and the
suite's status-notification scenario is skipped (pending its rewrite onto that stream).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import anyio
import mcp_types as types
from anyio.abc import TaskGroup
from mcp.server import Server
from mcp.server.context import CallNext, HandlerResult
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import MCP_NAME_HEADER, decode_header_value
from mcp_types import methods as spec_methods
from pydantic import Field, TypeAdapter, ValidationError

from tests.servers.conformance_2026 import (
    ELICITATION,
    Answers,
    Ctx,
    describe,
    elicit,
    gather_input,
    is_modern,
    require_capability,
)

logger = logging.getLogger(__name__)

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
TASKS = types.ClientCapabilities(extensions={TASKS_EXTENSION: {}})

TASK_TTL_MS = 10 * 60 * 1000  # from creation; a task is dropped (its work cancelled) after it
POLL_INTERVAL_MS = 200
MAX_SECONDS = 600.0  # slow_compute's longest sleep
FAILING_JOB_DELAY = 1.0  # "a tool execution error after ~1s"
PROTOCOL_ERROR_DELAY = 0.5
ESCALATED_WORK_DELAY = 0.5  # test_tool_with_task's work once the task exists

TaskStatus = Literal["working", "input_required", "completed", "failed", "cancelled"]
TaskSupport = Literal["forbidden", "optional", "required"]
TERMINAL: frozenset[TaskStatus] = frozenset({"completed", "failed", "cancelled"})

_SAMPLING_ANSWER: TypeAdapter[types.CreateMessageResult | types.CreateMessageResultWithTools] = TypeAdapter(
    types.CreateMessageResult | types.CreateMessageResultWithTools
)


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text_result(text: str, *, is_error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=is_error)


def _invalid(message: str) -> MCPError:
    return MCPError(code=types.INVALID_PARAMS, message=message)


def _missing_tasks_capability(message: str) -> MCPError:
    data = types.MissingRequiredClientCapabilityErrorData(required_capabilities=TASKS)
    return MCPError(
        code=types.MISSING_REQUIRED_CLIENT_CAPABILITY,
        message=message,
        data=data.model_dump(mode="json", by_alias=True, exclude_none=True),
    )


def _parse_answer(key: str, request: types.InputRequest, raw: Any) -> types.InputResponse:
    """The client's answer to `request`, typed as that kind of request is answered (else -32602)."""
    try:
        if isinstance(request, types.ElicitRequest):
            return types.ElicitResult.model_validate(raw)
        if isinstance(request, types.ListRootsRequest):
            return types.ListRootsResult.model_validate(raw)
        return _SAMPLING_ANSWER.validate_python(raw)
    except ValidationError:
        raise _invalid(f"inputResponses[{key!r}] is not an answer to {request.method}") from None


# --------------------------------------------------------------------------- task state


@dataclass(eq=False)
class TaskRecord:
    """One task: its status, what it waits for, and how it ended."""

    task_id: str
    ttl_ms: int | None
    protocol_version: str  # of the tools/call that created it: the inlined result's wire shape
    created_at: datetime = field(default_factory=_now)
    last_updated_at: datetime = field(init=False)
    status: TaskStatus = "working"
    status_message: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    pending: dict[str, types.InputRequest] = field(default_factory=dict)  # outstanding, by wire key
    answers: dict[str, types.InputResponse] = field(default_factory=dict)  # delivered, not yet consumed
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)  # the work's
    _keys_issued: int = field(default=0, init=False)  # input keys are never reused within a task
    _wakeup: anyio.Event = field(default_factory=anyio.Event, init=False)  # set when answers arrive

    def __post_init__(self) -> None:
        self.last_updated_at = self.created_at

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def expired(self, now: datetime) -> bool:
        return self.ttl_ms is not None and now >= self.created_at + timedelta(milliseconds=self.ttl_ms)

    # ------------------------------------------------------------------ wire shapes

    def envelope(self) -> dict[str, Any]:
        """The `Task` fields: the body of a `CreateTaskResult` (with `resultType: "task"`)."""
        task: dict[str, Any] = {"taskId": self.task_id, "status": self.status}
        if self.status_message is not None:
            task["statusMessage"] = self.status_message
        task.update(
            createdAt=_iso(self.created_at),
            lastUpdatedAt=_iso(self.last_updated_at),
            ttlMs=self.ttl_ms,
            pollIntervalMs=POLL_INTERVAL_MS,
        )
        return task

    def detailed(self) -> dict[str, Any]:
        """The `DetailedTask` a `tasks/get` answers: the envelope plus the current status's payload."""
        task = self.envelope()
        if self.status == "input_required":
            asked = types.InputRequiredResult(input_requests=dict(self.pending))
            task["inputRequests"] = asked.model_dump(mode="json", by_alias=True, exclude_none=True)["inputRequests"]
        elif self.status == "completed":
            task["result"] = self.result
        elif self.status == "failed":
            task["error"] = self.error
        return task

    # ------------------------------------------------------------------ transitions

    def _move(self, status: TaskStatus, message: str | None) -> None:
        self.status, self.status_message = status, message
        self.last_updated_at = _now()

    def complete(self, result: types.CallToolResult) -> None:
        if self.terminal:
            return
        dumped = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        self.result = spec_methods.serialize_server_result("tools/call", self.protocol_version, dumped)
        self.pending.clear()
        self._move("completed", "The tool reported an error" if result.is_error else None)

    def fail(self, error: types.ErrorData) -> None:
        if self.terminal:
            return
        self.error = error.model_dump(mode="json", by_alias=True, exclude_none=True)
        self.pending.clear()
        self._move("failed", error.message)

    def cancel(self) -> None:
        """Settle to `cancelled` and stop the work; a terminal task is left as it is."""
        if self.terminal:
            return
        self.pending.clear()
        self._move("cancelled", "Cancelled at the client's request")
        self.scope.cancel()

    # ------------------------------------------------------------------ input

    async def ask(self, requests: types.InputRequests) -> Answers:
        """Surface `requests` as `inputRequests` (at once, under fresh wire keys) and wait until
        every one of them is answered through `tasks/update`; the answers come back under the
        keys `requests` used."""
        wire_keys: dict[str, str] = {}
        for key, request in requests.items():
            self._keys_issued += 1
            wire_key = f"{key}-{self._keys_issued}"
            wire_keys[wire_key] = key
            self.pending[wire_key] = request
        self._move("input_required", f"Waiting for the client's input: {', '.join(sorted(self.pending))}")
        while any(wire_key in self.pending for wire_key in wire_keys):
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
        return {key: self.answers.pop(wire_key) for wire_key, key in wire_keys.items()}

    def deliver(self, responses: dict[str, Any]) -> None:
        """Take the answers to outstanding keys (all of them checked before any is taken);
        answers to keys not outstanding are ignored."""
        accepted = {
            key: _parse_answer(key, self.pending[key], raw) for key, raw in responses.items() if key in self.pending
        }
        if not accepted:
            return
        for key, answer in accepted.items():
            del self.pending[key]
            self.answers[key] = answer
        if self.pending:
            self._move("input_required", f"Waiting for the client's input: {', '.join(sorted(self.pending))}")
        else:
            self._move("working", "Input received; working")
        self._wakeup.set()


# --------------------------------------------------------------------------- tools


class Job(Protocol):
    """How a tool body asks the client for input, whether it runs in the call or in a task."""

    async def ask(self, requests: types.InputRequests) -> Answers: ...


class _InputRequired(Exception):
    """A body in a 2026-07-28 call needs answers the call did not carry: the call's result."""

    def __init__(self, result: types.InputRequiredResult) -> None:
        super().__init__("input required")
        self.result = result


@dataclass
class _InCall:
    """A body running inside its `tools/call`: asks the MRTR way (or on the stream, handshake era)."""

    ctx: Ctx
    params: types.CallToolRequestParams
    session_requests: bool

    async def ask(self, requests: types.InputRequests) -> Answers:
        answers = await gather_input(self.ctx, self.params, requests, session_requests=self.session_requests)
        if isinstance(answers, types.InputRequiredResult):
            raise _InputRequired(answers)
        return answers


@dataclass
class _InTask:
    """A body running as a task: asks through the task's `inputRequests`."""

    task: TaskRecord

    async def ask(self, requests: types.InputRequests) -> Answers:
        return await self.task.ask(requests)


Work = Callable[[Job], Awaitable[types.CallToolResult]]
"""A tool's body, once its arguments are checked: runs in the call or as a task."""
Prepare = Callable[[Ctx, types.CallToolRequestParams], Awaitable[Work | types.InputRequiredResult]]
"""Runs in the call first: checks arguments and capabilities, may ask through MRTR (before any
task exists), and returns the body."""


@dataclass(frozen=True)
class TaskTool:
    definition: types.Tool
    support: TaskSupport
    prepare: Prepare


def _string_argument(params: types.CallToolRequestParams, name: str, default: str | None = None) -> str:
    value = (params.arguments or {}).get(name, default)
    if not isinstance(value, str):
        raise _invalid(f"{params.name}: `{name}` must be a string")
    return value


def _form_value(answer: types.InputResponse, name: str) -> Any:
    if isinstance(answer, types.ElicitResult) and answer.action == "accept" and answer.content:
        return answer.content.get(name)
    return None


ASK_DELETE = "Delete {filename}?"
ASK_NAME = elicit("What is your name?", {"name": "string"})
ASK_CONFIRM = elicit("Please confirm to continue", {"confirm": "boolean"})


async def _greet(ctx: Ctx, params: types.CallToolRequestParams) -> Work:
    name = _string_argument(params, "name", "World")

    async def work(job: Job) -> types.CallToolResult:
        return _text_result(f"Hello, {name}!")

    return work


async def _slow_compute(ctx: Ctx, params: types.CallToolRequestParams) -> Work:
    seconds = (params.arguments or {}).get("seconds", 1)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= MAX_SECONDS:
        raise _invalid(f"slow_compute: `seconds` must be a number from 0 to {MAX_SECONDS:g}")
    label = _string_argument(params, "label", "compute")

    async def work(job: Job) -> types.CallToolResult:
        await anyio.sleep(seconds)
        return _text_result(f"slow_compute {label}: done after {seconds:g}s")

    return work


async def _failing_job(ctx: Ctx, params: types.CallToolRequestParams) -> Work:
    async def work(job: Job) -> types.CallToolResult:
        await anyio.sleep(FAILING_JOB_DELAY)
        return _text_result("failing_job: the job failed (a tool execution error)", is_error=True)

    return work


async def _protocol_error_job(ctx: Ctx, params: types.CallToolRequestParams) -> Work:
    async def work(job: Job) -> types.CallToolResult:
        await anyio.sleep(PROTOCOL_ERROR_DELAY)
        raise MCPError(code=types.INTERNAL_ERROR, message="protocol_error_job: the job crashed (a protocol error)")

    return work


async def _confirm_delete(ctx: Ctx, params: types.CallToolRequestParams) -> Work:
    require_capability(ctx, ELICITATION)
    filename = _string_argument(params, "filename")
    question = elicit(ASK_DELETE.format(filename=filename), {"confirm": "boolean"})

    async def work(job: Job) -> types.CallToolResult:
        answers = await job.ask({"confirm": question})
        if _form_value(answers["confirm"], "confirm") is True:
            return _text_result(f"Deleted {filename}")
        return _text_result(f"Kept {filename} ({describe(answers['confirm'])})")

    return work


async def _multi_input(ctx: Ctx, params: types.CallToolRequestParams) -> Work:
    require_capability(ctx, ELICITATION)

    async def work(job: Job) -> types.CallToolResult:
        answers = await job.ask({"name": ASK_NAME, "confirm": ASK_CONFIRM})  # both outstanding at once
        name = _form_value(answers["name"], "name")
        confirmed = _form_value(answers["confirm"], "confirm")
        return _text_result(f"multi_input: name={name}, confirm={confirmed}")

    return work


def _tool_with_task(session_requests: bool) -> Prepare:
    async def prepare(ctx: Ctx, params: types.CallToolRequestParams) -> Work | types.InputRequiredResult:
        # MRTR first, in the call: the task is created only on the round that carries the answer.
        require_capability(ctx, ELICITATION)
        answers = await gather_input(ctx, params, {"user_name": ASK_NAME}, session_requests=session_requests)
        if isinstance(answers, types.InputRequiredResult):
            return answers
        name = _form_value(answers["user_name"], "name")

        async def work(job: Job) -> types.CallToolResult:
            await anyio.sleep(ESCALATED_WORK_DELAY)
            return _text_result(f"Hello, {name}!" if name else f"No name given ({describe(answers['user_name'])})")

        return work

    return prepare


def _definition(
    name: str, description: str, support: TaskSupport, properties: dict[str, Any], required: list[str] | None = None
) -> types.Tool:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    execution = None if support == "forbidden" else types.ToolExecution(task_support=support)
    return types.Tool(name=name, description=description, input_schema=schema, execution=execution)


# --------------------------------------------------------------------------- the extension


class TaskIdParams(types.RequestParams):
    task_id: str = Field(alias="taskId")


class UpdateTaskParams(TaskIdParams):
    # Checked per outstanding key in `TaskRecord.deliver`: answers to other keys are ignored, not refused.
    input_responses: dict[str, Any] = Field(alias="inputResponses")


@dataclass
class ConformanceTasks:
    """The tasks-extension tools and the `tasks/*` methods. `session_requests` as in `ConformanceFixture`."""

    session_requests: bool = False
    ttl_ms: int | None = TASK_TTL_MS
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    _group: TaskGroup | None = field(default=None, init=False)

    def catalogue(self) -> list[TaskTool]:
        def tool(
            name: str,
            description: str,
            support: TaskSupport,
            prepare: Prepare,
            properties: dict[str, Any] | None = None,
            required: list[str] | None = None,
        ) -> TaskTool:
            return TaskTool(_definition(name, description, support, properties or {}, required), support, prepare)

        return [
            tool(
                "greet",
                "Says hello to `name`; never a task.",
                "forbidden",
                _greet,
                {"name": {"type": "string", "description": "Who to greet"}},
                ["name"],
            ),
            tool(
                "slow_compute",
                "Sleeps `seconds`, then answers; a task when the client declares the tasks extension.",
                "optional",
                _slow_compute,
                {
                    "seconds": {"type": "number", "minimum": 0, "maximum": MAX_SECONDS, "description": "How long"},
                    "label": {"type": "string", "description": "Echoed in the result"},
                },
            ),
            tool("failing_job", "Task-only: returns a tool error (isError) after ~1s.", "required", _failing_job),
            tool(
                "protocol_error_job",
                "Fails with a JSON-RPC error (-32603): a failed task, or the call's error.",
                "optional",
                _protocol_error_job,
            ),
            tool(
                "confirm_delete",
                "Asks to confirm deleting `filename` (elicitation), then answers.",
                "optional",
                _confirm_delete,
                {"filename": {"type": "string", "description": "What to delete"}},
                ["filename"],
            ),
            tool(
                "multi_input",
                "Asks for a name and a confirmation at once (two elicitations), then answers.",
                "optional",
                _multi_input,
            ),
            tool(
                "test_tool_with_task",
                "Task-only: asks the user's name through MRTR, then greets them from a task.",
                "required",
                _tool_with_task(self.session_requests),
            ),
        ]

    def definitions(self) -> list[types.Tool]:
        return [tool.definition for tool in self.catalogue()]

    # ------------------------------------------------------------------ wiring

    @asynccontextmanager
    async def lifespan(self, server: Server[Any]) -> AsyncIterator[dict[str, Any]]:
        """The server's lifespan: the task group every task's work runs in, cancelled at shutdown."""
        async with anyio.create_task_group() as group:
            self._group = group
            try:
                yield {}
            finally:
                self._group = None
                group.cancel_scope.cancel()

    def install(self, server: Server[Any]) -> None:
        """Advertise the extension, serve `tasks/*`, and route this module's tools' calls here
        (every other name goes to the `tools/call` handler already registered)."""
        server.extensions[TASKS_EXTENSION] = {}
        entry = server.get_request_handler("tools/call")
        if entry is None:
            raise RuntimeError("install the tasks extension after the server's tools/call handler")
        other_tools = entry.handler
        by_name = {tool.definition.name: tool for tool in self.catalogue()}

        async def call_tool(ctx: Ctx, params: types.CallToolRequestParams) -> HandlerResult:
            tool = by_name.get(params.name)
            if tool is None:
                return await other_tools(ctx, params)
            return await self._call(ctx, params, tool)

        server.add_request_handler("tools/call", types.CallToolRequestParams, call_tool)
        server.add_request_handler("tasks/get", TaskIdParams, self._get)
        server.add_request_handler("tasks/update", UpdateTaskParams, self._update)
        server.add_request_handler("tasks/cancel", TaskIdParams, self._cancel)
        support: dict[str, TaskSupport] = {
            name: tool.support for name, tool in by_name.items() if tool.support != "forbidden"
        }
        server.middleware.append(_TaskSupportListing(support))

    # ------------------------------------------------------------------ tools/call

    async def _call(self, ctx: Ctx, params: types.CallToolRequestParams, tool: TaskTool) -> HandlerResult:
        as_task = tool.support != "forbidden" and is_modern(ctx) and ctx.session.check_client_capability(TASKS)
        if tool.support == "required" and not as_task:
            raise _missing_tasks_capability(
                f"{params.name} runs only as a task: call it in 2026-07-28 with the {TASKS_EXTENSION} extension"
            )
        work = await tool.prepare(ctx, params)
        if isinstance(work, types.InputRequiredResult):
            return work
        if not as_task:
            try:
                return await work(_InCall(ctx, params, self.session_requests))
            except _InputRequired as needed:
                return needed.result
        return {"resultType": "task", **self._start(ctx, work).envelope()}

    def _start(self, ctx: Ctx, work: Work) -> TaskRecord:
        """Create the task (resolvable by `tasks/get` from now on) and start its work."""
        group = self._group
        if group is None:
            raise MCPError(code=types.INTERNAL_ERROR, message="Tasks are not running (the server lifespan is not)")
        self._expire()
        task = TaskRecord(secrets.token_urlsafe(24), self.ttl_ms, ctx.protocol_version)
        self.tasks[task.task_id] = task
        group.start_soon(self._run, task, work, name=f"task {task.task_id}")
        return task

    @staticmethod
    async def _run(task: TaskRecord, work: Work) -> None:
        with task.scope:
            try:
                result = await work(_InTask(task))
            except MCPError as exc:
                task.fail(exc.error)
            except Exception:
                logger.exception("task %s crashed", task.task_id)
                task.fail(types.ErrorData(code=types.INTERNAL_ERROR, message="Internal error"))
            else:
                task.complete(result)

    # ------------------------------------------------------------------ tasks/*

    def _task(self, ctx: Ctx, params: TaskIdParams) -> TaskRecord:
        """The named task, for a request that declared the extension and routed itself right."""
        require_capability(ctx, TASKS)
        request = ctx.request
        if is_modern(ctx) and request is not None:
            header = decode_header_value(request.headers.get(MCP_NAME_HEADER))
            if header is None or header.strip() != params.task_id:
                raise MCPError(
                    code=types.HEADER_MISMATCH,
                    message=f"{MCP_NAME_HEADER} header does not match the request body's 'taskId' parameter",
                )
        self._expire()
        task = self.tasks.get(params.task_id)
        if task is None:
            raise _invalid("Failed to retrieve task: Task not found")
        return task

    def _expire(self) -> None:
        now = _now()
        for task_id, task in list(self.tasks.items()):
            if task.expired(now):
                task.scope.cancel()
                del self.tasks[task_id]

    async def _get(self, ctx: Ctx, params: TaskIdParams) -> HandlerResult:
        return self._task(ctx, params).detailed()

    async def _update(self, ctx: Ctx, params: UpdateTaskParams) -> HandlerResult:
        self._task(ctx, params).deliver(params.input_responses)
        return {}

    async def _cancel(self, ctx: Ctx, params: TaskIdParams) -> HandlerResult:
        self._task(ctx, params).cancel()
        return {}


@dataclass(frozen=True)
class _TaskSupportListing:
    """Puts `execution.taskSupport` back on 2026-07-28 `tools/list` entries.

    The SDK's 2026-07-28 result sieve drops `Tool.execution` (a 2025-11-25 field); the tasks
    extension still wants callers to see which tools may (or must) run as tasks."""

    support: dict[str, TaskSupport]

    async def __call__(self, ctx: Ctx, call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if ctx.method != "tools/list" or not is_modern(ctx) or not isinstance(result, dict):
            return result
        listed = result.get("tools")
        if not isinstance(listed, list):
            return result
        tools: list[Any] = []
        for tool in listed:
            name = tool.get("name") if isinstance(tool, dict) else None
            if isinstance(name, str) and name in self.support and "execution" not in tool:
                tool = {**tool, "execution": {"taskSupport": self.support[name]}}
            tools.append(tool)
        return {**result, "tools": tools}
