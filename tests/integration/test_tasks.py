"""Composite runs as MCP tasks (the `io.modelcontextprotocol/tasks` extension, SEP-2663), through a
real `vmcp dev` stack, spoken on the wire as a 2026-07-28 client that declares the extension: the
Python SDK's client has no tasks support, so these requests are JSON-RPC over HTTP, as the
extension defines them.

A composite call answers at once with a task whose id is the run id; `tasks/get` follows the run to
its result (the same result the call gives without tasks), a run's question is an `input_required`
task answered with `tasks/update`, `tasks/cancel` cancels the workflow, and a client that did not
declare the extension neither gets a task nor reaches the task methods."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client

from tests.integration.test_questions import FORM, Stack, dev_stack
from tests.support.tasks_client import CreatedTask, TasksExtension

pytestmark = [pytest.mark.integration, pytest.mark.temporal, pytest.mark.anyio]

TASKS = "io.modelcontextprotocol/tasks"
MODERN = "2026-07-28"


def composites() -> list[dict[str, Any]]:
    return [
        {
            "name": "pair",
            "description": "Two steps, the second after the first.",
            "parameters": {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]},
            "steps": [
                {"id": "first", "tool": "fault.slow", "arguments": {"seconds": 1, "label": "{{ params.label }}-1"}},
                {
                    "id": "second",
                    "tool": "fault.tally",
                    "arguments": {"label": "{{ params.label }}-2"},
                    "depends_on": ["first"],
                },
            ],
            "output": {"second": "{{ steps.second.output.label }}"},
        },
        {
            "name": "ask_branch",
            "parameters": {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]},
            "steps": [
                {
                    "id": "ask",
                    "type": "elicitation",
                    "message": "Branch for {{ params.label }}?",
                    "requested_schema": FORM,
                },
                {
                    "id": "ship",
                    "tool": "fault.tally",
                    "arguments": {"label": "{{ params.label }}/{{ steps.ask.output.content.branch }}"},
                    "depends_on": ["ask"],
                },
            ],
            "output": {"branch": "{{ steps.ask.output.content.branch }}"},
        },
        {
            "name": "long_wait",
            "parameters": {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]},
            "steps": [
                {"id": "nap", "tool": "fault.slow", "arguments": {"seconds": 120, "label": "{{ params.label }}"}}
            ],
        },
    ]


class Wire:
    """A 2026-07-28 client on raw HTTP; `tasks` says whether its requests declare the extension."""

    def __init__(self, url: str, *, tasks: bool = True, token: str | None = None) -> None:
        self.url = url
        self.tasks = tasks
        self.token = token
        self._ids = 0

    async def send(self, method: str, params: dict[str, Any], name: str | None = None) -> httpx.Response:
        self._ids += 1
        capabilities: dict[str, Any] = {"elicitation": {}}
        if self.tasks:
            capabilities["extensions"] = {TASKS: {}}
        meta = {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientInfo": {"name": "tasks-test", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": capabilities,
        }
        body = {"jsonrpc": "2.0", "id": self._ids, "method": method, "params": {**params, "_meta": meta}}
        headers = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "Mcp-Protocol-Version": MODERN,
            "Mcp-Method": method,
        }
        if name is not None:
            headers["Mcp-Name"] = name
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        async with httpx.AsyncClient(timeout=60) as http:
            return await http.post(self.url, json=body, headers=headers)

    async def listen(
        self, notifications: dict[str, Any], until: Callable[[dict[str, Any]], bool]
    ) -> list[dict[str, Any]]:
        """Open a `subscriptions/listen` stream and read its frames (JSON-RPC messages) until one
        satisfies `until`; every frame read, in order."""
        self._ids += 1
        capabilities: dict[str, Any] = {"extensions": {TASKS: {}}} if self.tasks else {}
        meta = {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": capabilities,
        }
        body = {
            "jsonrpc": "2.0",
            "id": self._ids,
            "method": "subscriptions/listen",
            "params": {"notifications": notifications, "_meta": meta},
        }
        headers = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "Mcp-Protocol-Version": MODERN,
            "Mcp-Method": "subscriptions/listen",
        }
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        frames: list[dict[str, Any]] = []
        with anyio.fail_after(60):
            async with (
                httpx.AsyncClient(timeout=60) as http,
                http.stream("POST", self.url, json=body, headers=headers) as response,
            ):
                if not response.headers.get("content-type", "").startswith("text/event-stream"):
                    frames.append(json.loads(await response.aread()))
                    return frames
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        frames.append(json.loads(line[5:]))
                        if until(frames[-1]):
                            return frames
        raise AssertionError(f"the stream ended first: {frames}")

    async def result(self, method: str, params: dict[str, Any], name: str | None = None) -> dict[str, Any]:
        response = await self.send(method, params, name)
        assert response.status_code == 200, response.text
        message = response.json()
        assert "result" in message, message
        return dict(message["result"])

    async def error(self, method: str, params: dict[str, Any], name: str | None = None) -> dict[str, Any]:
        response = await self.send(method, params, name)
        message = response.json()
        assert "error" in message, message
        return dict(message["error"])

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return await self.result("tools/call", {"name": tool, "arguments": arguments}, tool)

    async def task(self, method: str, task_id: str, **params: Any) -> dict[str, Any]:
        return await self.result(method, {"taskId": task_id, **params}, task_id)

    async def until(self, task_id: str, done: Callable[[dict[str, Any]], bool], seconds: float = 60) -> dict[str, Any]:
        seen: list[dict[str, Any]] = []
        with anyio.move_on_after(seconds):
            while True:
                seen.append(await self.task("tasks/get", task_id))
                if done(seen[-1]):
                    return seen[-1]
                await anyio.sleep(0.2)
        raise AssertionError(f"task {task_id} did not get there within {seconds:g}s; last seen: {seen[-1:]}")


def ack(result: dict[str, Any]) -> bool:
    """An empty acknowledgement: `resultType: complete` and no task envelope (`_meta` aside)."""
    return result.get("resultType") == "complete" and not result.keys() - {"resultType", "_meta"}


def terminal(task: dict[str, Any]) -> bool:
    return task["status"] in ("completed", "failed", "cancelled")


@pytest.fixture(scope="module")
def stack(module_procs: Any, tmp_path_factory: pytest.TempPathFactory, free_port: Callable[[], int]) -> Iterator[Stack]:
    yield from dev_stack(module_procs, tmp_path_factory.mktemp("tasks"), free_port(), composites())


async def test_the_extension_is_advertised(stack: Stack) -> None:
    discovered = await Wire(stack.url).result("server/discover", {})
    assert discovered["capabilities"]["extensions"][TASKS] == {}, discovered
    assert "tasks" not in discovered["capabilities"], "the v1 capabilities.tasks slot is not used"


async def test_a_composite_call_is_a_task_that_ends_with_the_calls_own_result(stack: Stack) -> None:
    wire = Wire(stack.url)
    label = f"pair-{uuid.uuid4().hex[:6]}"
    created = await wire.call("pair", {"label": label})
    assert created["resultType"] == "task", created
    run_id = created["taskId"]
    assert run_id.startswith("vmcp-pair-"), created
    assert created["status"] == "working" and created["ttlMs"] is None and created["pollIntervalMs"] > 0, created
    assert not {"result", "error", "inputRequests", "requestState", "task"} & created.keys(), created

    working = await wire.task("tasks/get", run_id)
    assert working["resultType"] == "complete" and working["taskId"] == run_id, working
    assert working["status"] == "working" and "result" not in working, working
    done = await wire.until(run_id, terminal)
    assert done["status"] == "completed", done
    assert done["result"]["structuredContent"] == {"second": f"{label}-2"}, done
    assert done["result"]["isError"] is False and done["result"]["_meta"]["io.vmcp/run_id"] == run_id, done
    tallies = await stack.tallies()
    assert (tallies[f"{label}-1"], tallies[f"{label}-2"]) == (1, 1), tallies  # every step once

    # the same tool, called by a client that did not declare tasks: its result, in the call
    plain = await Wire(stack.url, tasks=False).call("pair", {"label": f"{label}-plain"})
    assert plain.get("resultType") == "complete" and "taskId" not in plain, plain
    assert plain["structuredContent"] == {"second": f"{label}-plain-2"}, plain


async def test_a_question_is_an_input_required_task_answered_by_tasks_update(stack: Stack) -> None:
    wire = Wire(stack.url)
    label = f"ask-{uuid.uuid4().hex[:6]}"
    run_id = (await wire.call("ask_branch", {"label": label}))["taskId"]
    asking = await wire.until(run_id, lambda task: task["status"] != "working")
    assert asking["status"] == "input_required", asking
    [(key, request)] = asking["inputRequests"].items()
    assert request["method"] == "elicitation/create", request
    assert request["params"]["message"] == f"Branch for {label}?", request
    assert request["params"]["requestedSchema"]["required"] == FORM["required"], request

    # an answer the step's schema refuses: Invalid Params saying why, and the same key still asks
    refused = {key: {"action": "accept", "content": {"branch": "x", "copies": 0}}}
    error = await wire.error("tasks/update", {"taskId": run_id, "inputResponses": refused}, run_id)
    assert error["code"] == -32602 and "not accepted" in error["message"] and "copies" in error["message"], error
    again = await wire.task("tasks/get", run_id)
    assert again["status"] == "input_required" and list(again["inputRequests"]) == [key], again

    # a response under a key that was never asked is ignored; the right one finishes the run
    stray = {"ship#000000000000": {"action": "accept", "content": {"branch": "old", "copies": 1}}}
    assert ack(await wire.task("tasks/update", run_id, inputResponses=stray))
    answer = {key: {"action": "accept", "content": {"branch": "main", "copies": 1}}}
    assert ack(await wire.task("tasks/update", run_id, inputResponses=answer))
    done = await wire.until(run_id, terminal)
    assert done["status"] == "completed" and done["result"]["structuredContent"] == {"branch": "main"}, done
    tallies = await stack.tallies()
    assert tallies.get(f"{label}/main") == 1 and f"{label}/old" not in tallies, tallies


async def test_tasks_cancel_cancels_the_run_and_is_idempotent(stack: Stack) -> None:
    wire = Wire(stack.url)
    label = f"nap-{uuid.uuid4().hex[:6]}"
    run_id = (await wire.call("long_wait", {"label": label}))["taskId"]
    assert ack(await wire.task("tasks/cancel", run_id))
    cancelled = await wire.until(run_id, terminal)
    assert cancelled["status"] == "cancelled" and "result" not in cancelled, cancelled
    assert ack(await wire.task("tasks/cancel", run_id))
    assert label not in await stack.tallies()


async def test_a_task_request_naming_another_task_in_mcp_name_is_refused(stack: Stack) -> None:
    run_id = (await Wire(stack.url).call("pair", {"label": f"hdr-{uuid.uuid4().hex[:6]}"}))["taskId"]
    response = await Wire(stack.url).send("tasks/get", {"taskId": run_id}, "vmcp-pair-someone-else")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == -32020, response.text


@pytest.mark.parametrize("method", ["tasks/get", "tasks/update", "tasks/cancel"])
async def test_without_the_extension_the_task_methods_are_refused(stack: Stack, method: str) -> None:
    run_id = (await Wire(stack.url).call("pair", {"label": f"gate-{uuid.uuid4().hex[:6]}"}))["taskId"]
    extra = {"inputResponses": {}} if method == "tasks/update" else {}
    response = await Wire(stack.url, tasks=False).send(method, {"taskId": run_id, **extra}, run_id)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == -32021 and error["data"]["requiredCapabilities"]["extensions"] == {TASKS: {}}, error


@pytest.mark.parametrize(
    "task_id",
    ["vmcp-pair-00000000-0000-0000-0000-000000000000", "not-a-run", "vmcp-pair-" + "x" * 300, "vmcpt.forged"],
)
async def test_an_unknown_task_is_invalid_params(stack: Stack, task_id: str) -> None:
    response = await Wire(stack.url).send("tasks/get", {"taskId": task_id}, task_id)
    error = response.json()["error"]
    assert error["code"] == -32602 and "no task" in error["message"], error


async def test_the_python_sdk_client_with_a_tasks_extension_gets_the_result_through_the_task(stack: Stack) -> None:
    """The SDK's client taking the task (its claim polls `tasks/get`) ends with the same result a
    call without tasks returns."""
    label = f"sdk-{uuid.uuid4().hex[:6]}"
    async with Client(stack.url, mode=MODERN, extensions=[TasksExtension()]) as client:
        created = await client.session.call_tool("pair", {"label": label}, allow_claimed=True)
        assert isinstance(created, CreatedTask), created
        result = await client.call_tool("pair", {"label": f"{label}-again"})
    assert not result.is_error and result.structured_content == {"second": f"{label}-again-2"}, result
    assert (result.meta or {})["io.vmcp/run_id"].startswith("vmcp-pair-"), result


def task_status(frame: dict[str, Any]) -> str | None:
    return frame["params"]["status"] if frame.get("method") == "notifications/tasks" else None


async def test_a_listen_stream_tells_a_tasks_status_as_it_changes_until_it_ends(stack: Stack) -> None:
    wire = Wire(stack.url)
    run_id = (await wire.call("pair", {"label": f"heard-{uuid.uuid4().hex[:6]}"}))["taskId"]
    frames = await wire.listen({"taskIds": [run_id, "vmcp-pair-not-a-task"]}, lambda f: task_status(f) == "completed")
    ack = frames[0]
    assert ack["method"] == "notifications/subscriptions/acknowledged", frames
    assert ack["params"]["notifications"]["taskIds"] == [run_id], "only the caller's own tasks are honored"
    statuses = [task_status(frame) for frame in frames[1:]]
    assert statuses[0] == "working" and statuses[-1] == "completed", statuses
    last = frames[-1]["params"]
    assert last["taskId"] == run_id and last["result"]["structuredContent"]["second"].endswith("-2"), last
    assert (
        last["_meta"]["io.modelcontextprotocol/subscriptionId"]
        == ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"]
    )
    messages = [frame["params"].get("statusMessage") for frame in frames[1:]]
    assert len(set(messages)) == len(messages), f"a notification per change, not per poll: {messages}"


async def test_a_listen_stream_for_tasks_needs_the_extension(stack: Stack) -> None:
    run_id = (await Wire(stack.url).call("pair", {"label": f"noext-{uuid.uuid4().hex[:6]}"}))["taskId"]
    frames = await Wire(stack.url, tasks=False).listen({"taskIds": [run_id]}, lambda frame: "error" in frame)
    assert frames[-1]["error"]["code"] == -32021, frames


@pytest.mark.parametrize("responses", ["yes", ["a"], 7, None])
async def test_tasks_update_with_responses_that_are_not_an_object_is_invalid_params(
    stack: Stack, responses: Any
) -> None:
    wire = Wire(stack.url)
    run_id = (await wire.call("ask_branch", {"label": f"bad-{uuid.uuid4().hex[:6]}"}))["taskId"]
    refused = await wire.error("tasks/update", {"taskId": run_id, "inputResponses": responses}, run_id)
    assert refused["code"] == -32602, refused
    assert (await wire.task("tasks/get", run_id))["status"] in ("working", "input_required")
    await wire.task("tasks/cancel", run_id)
