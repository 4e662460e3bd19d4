"""A backend's MCP tasks relayed through vmcp: the conformance fixture (which implements the tasks
extension) behind two `vmcp serve` replicas that share the request-state key, under OAuth.

The task id a caller gets is vmcp's, not the backend's; any replica routes it back to the
backend; only the caller who created the task reaches it; a forged or altered id is an unknown
task; a question inside a task and its cancellation travel through. (The official suite's
`tasks-*` scenarios through vmcp are in tests/conformance.)"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.test_conformance import fixture_server
from tests.integration.test_auth import Issuer
from tests.integration.test_tasks import Wire, task_status, terminal

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

PREFIX = "vmcpt."


@dataclass
class Replicas:
    first: str
    second: str
    issuer: Issuer

    def wire(self, url: str, subject: str = "alice") -> Wire:
        return Wire(url, token=self.issuer.token(sub=subject))


@pytest.fixture(scope="module")
def replicas(
    module_procs: Any,
    tmp_path_factory: pytest.TempPathFactory,
    free_port: Callable[[], int],
    wait_until: Callable[..., Any],
) -> Iterator[Replicas]:
    backend = fixture_server(tmp_path_factory, free_port, wait_until)
    url = next(backend)
    issuer = Issuer()
    key_file = Path(tmp_path_factory.mktemp("shared-key")) / "state.key"
    config = {
        "server": {"host": "127.0.0.1", "port": 0, "request_state_key_file": str(key_file)},
        "auth": issuer.auth_settings(),
        "temporal": {"address": "127.0.0.1:1"},  # no composites here: only the backend's tasks
        "backends": [{"name": "conf", "transport": "streamable-http", "url": url}],
        "aggregation": {"conflict_resolution": "manual"},
    }
    first = module_procs.vmcp(config, filename="tasks-a.yaml")
    second = module_procs.vmcp(config, filename="tasks-b.yaml")
    try:
        yield Replicas(str(first.url), str(second.url), issuer)
    finally:
        issuer.close()
        backend.close()


async def test_a_backend_task_is_reached_through_any_replica_under_vmcps_own_id(replicas: Replicas) -> None:
    label = f"relay-{uuid.uuid4().hex[:6]}"
    created = await replicas.wire(replicas.first).call("slow_compute", {"seconds": 1, "label": label})
    assert created["resultType"] == "task" and created["status"] == "working", created
    task_id = created["taskId"]
    assert task_id.startswith(PREFIX) and len(task_id) > 60, created  # sealed: the backend's id is not in it
    assert created["ttlMs"] == 600000 and created["pollIntervalMs"] > 0, created

    other_replica = replicas.wire(replicas.second)
    done = await other_replica.until(task_id, terminal)
    assert done["status"] == "completed" and done["taskId"] == task_id, done
    assert not done["result"]["isError"] and done["result"]["content"], done
    assert "io.modelcontextprotocol/serverInfo" not in done["result"].get("_meta", {}), done


async def test_only_the_caller_who_created_a_backend_task_reaches_it(replicas: Replicas) -> None:
    created = await replicas.wire(replicas.first).call("slow_compute", {"seconds": 30, "label": "mine"})
    task_id = created["taskId"]
    for method, extra in (("tasks/get", {}), ("tasks/update", {"inputResponses": {}}), ("tasks/cancel", {})):
        refused = await replicas.wire(replicas.second, subject="mallory").error(
            method, {"taskId": task_id, **extra}, task_id
        )
        assert refused["code"] == -32602 and "no task" in refused["message"], (method, refused)
    still = await replicas.wire(replicas.first).task("tasks/get", task_id)
    assert still["status"] == "working", "mallory's cancel must not have reached the backend"
    await replicas.wire(replicas.first).task("tasks/cancel", task_id)


@pytest.mark.parametrize("change", ["last character", "another prefix", "the backend's shape"])
async def test_an_altered_task_id_is_an_unknown_task(replicas: Replicas, change: str) -> None:
    task_id = (await replicas.wire(replicas.first).call("slow_compute", {"seconds": 0}))["taskId"]
    altered = {
        "last character": task_id[:-1] + ("A" if task_id[-1] != "A" else "B"),
        "another prefix": "vmcp-" + task_id.removeprefix(PREFIX),
        "the backend's shape": "x" * 32,
    }[change]
    refused = await replicas.wire(replicas.second).error("tasks/get", {"taskId": altered}, altered)
    assert refused["code"] == -32602, refused


async def test_a_question_inside_a_backend_task_and_its_answer_travel_through(replicas: Replicas) -> None:
    wire = replicas.wire(replicas.first)
    task_id = (await wire.call("confirm_delete", {"filename": "notes.txt"}))["taskId"]
    asking = await wire.until(task_id, lambda task: task["status"] != "working")
    assert asking["status"] == "input_required", asking
    [(key, request)] = asking["inputRequests"].items()
    assert request["method"] == "elicitation/create", request
    ack = await replicas.wire(replicas.second).task(
        "tasks/update", task_id, inputResponses={key: {"action": "accept", "content": {"confirm": True}}}
    )
    assert ack["resultType"] == "complete" and "taskId" not in ack, ack
    done = await wire.until(task_id, terminal)
    assert done["status"] == "completed" and not done["result"]["isError"], done


async def test_cancelling_a_backend_task_cancels_it_on_the_backend(replicas: Replicas) -> None:
    wire = replicas.wire(replicas.first)
    task_id = (await wire.call("slow_compute", {"seconds": 60}))["taskId"]
    ack = await replicas.wire(replicas.second).task("tasks/cancel", task_id)
    assert ack["resultType"] == "complete", ack
    cancelled = await wire.until(task_id, terminal)
    assert cancelled["status"] == "cancelled", cancelled


async def test_without_the_extension_a_task_only_tool_is_refused_by_the_backend(replicas: Replicas) -> None:
    wire = Wire(replicas.first, tasks=False, token=replicas.issuer.token())
    refused = await wire.error("tools/call", {"name": "failing_job", "arguments": {}}, "failing_job")
    assert refused["code"] == -32021, refused


async def test_a_listen_stream_follows_a_backend_task_for_its_caller_only(replicas: Replicas) -> None:
    task_id = (await replicas.wire(replicas.first).call("slow_compute", {"seconds": 3}))["taskId"]
    others = await replicas.wire(replicas.second, subject="mallory").listen(
        {"taskIds": [task_id]}, lambda frame: frame.get("method") == "notifications/subscriptions/acknowledged"
    )
    assert others[-1]["params"]["notifications"]["taskIds"] == [], others
    frames = await replicas.wire(replicas.second).listen(
        {"taskIds": [task_id]}, lambda frame: task_status(frame) in ("completed", "failed", "cancelled")
    )
    assert frames[0]["params"]["notifications"]["taskIds"] == [task_id], frames
    # `working` while it runs (unless a loaded machine set the stream up after the task ended), then
    # the end, with the result
    statuses = [task_status(frame) for frame in frames[1:]]
    assert statuses[-1] == "completed" and set(statuses[:-1]) <= {"working"}, frames
    assert frames[-1]["params"]["taskId"] == task_id and frames[-1]["params"]["result"]["content"], frames


async def test_a_backend_gone_after_creating_a_task_is_a_clear_error_not_a_lost_task(
    module_procs: Any, tmp_path_factory: pytest.TempPathFactory, free_port: Callable[[], int], wait_until: Any
) -> None:
    """The backend that holds a task stops: `tasks/get` says the backend is unavailable (an
    internal error naming it), not that the task does not exist: vmcp cannot know that."""
    backend = fixture_server(tmp_path_factory, free_port, wait_until)
    url = next(backend)
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        "temporal": {"address": "127.0.0.1:1"},
        "backends": [{"name": "gone", "transport": "streamable-http", "url": url, "timeout": "5s"}],
    }
    served = module_procs.vmcp(config, filename="tasks-gone.yaml")
    wire = Wire(str(served.url))
    task_id = (await wire.call("gone_slow_compute", {"seconds": 0}))["taskId"]
    assert (await wire.until(task_id, terminal))["status"] == "completed"
    backend.close()  # the fixture process stops, and with it every task it held
    error = await wire.error("tasks/get", {"taskId": task_id}, task_id)
    assert error["code"] == -32603 and "gone" in error["message"], error
