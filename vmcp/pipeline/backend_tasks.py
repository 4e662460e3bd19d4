"""Tasks a backend creates (the MCP tasks extension), relayed to the client that called.

A 2026-07-28 client that declares the tasks extension passes that declaration on to the backend
with its call (the caller's capabilities travel with every forwarded request), and a backend may
then answer with a task. The client must reach that backend again for every later `tasks/get`,
`tasks/update` and `tasks/cancel`, from any façade replica: so the task id vmcp hands out carries
its route — the backend, the backend's own task id, the tool as the caller knew it and who called —
sealed under the key the replicas share (the one that seals `requestState`). Nobody can read a
backend's task id out of it or point it at another backend or caller. Composite runs are tasks
too, under their run ids; the prefix tells the two apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vmcp.pipeline.envelope import without_backend_identity
from vmcp.runs.request_state import RequestStateSealer

PREFIX = "vmcpt."  # '.' never occurs in a run id (`vmcp-<tool>-<uuid>`) nor in URL-safe base64
_PURPOSE = b"vmcp/backend-task/v1"
# How long a relayed task id stays valid when the backend gives the task no TTL of its own
DEFAULT_LIFETIME = 30 * 24 * 3600.0
_MARGIN = 3600.0  # a task's TTL counts from its creation; the id outlives it a little


@dataclass(frozen=True)
class BackendTask:
    backend: str
    task_id: str  # the backend's own
    tool: str  # as the caller called it (its advertised name): authorization is judged on it again
    owner: dict[str, Any]  # issuer and subject of the caller who created it


def is_backend_task(task_id: str) -> bool:
    return task_id.startswith(PREFIX)


class BackendTaskIds:
    def __init__(self, sealer: Callable[[], RequestStateSealer]) -> None:
        self._sealer = sealer

    def created(self, result: Mapping[str, Any], task: BackendTask) -> dict[str, Any]:
        """A backend's `CreateTaskResult` as the caller gets it: the same, under vmcp's task id."""
        ttl = result.get("ttlMs")
        lifetime = ttl / 1000 + _MARGIN if isinstance(ttl, int) and not isinstance(ttl, bool) else DEFAULT_LIFETIME
        body = {"b": task.backend, "t": task.task_id, "n": task.tool, "o": task.owner}
        sealed = PREFIX + self._sealer().seal_body(body, _PURPOSE, lifetime)
        return relabelled(result, sealed)

    def open(self, task_id: str) -> BackendTask:
        """The route a task id of ours carries; InvalidState for anything vmcp did not hand out."""
        body = self._sealer().open_body(
            task_id.removeprefix(PREFIX), _PURPOSE, "not a task of this vmcp", "the task has expired"
        )
        owner = body.get("o")
        return BackendTask(
            str(body["b"]), str(body["t"]), str(body["n"]), dict(owner) if isinstance(owner, dict) else {}
        )


def relabelled(result: Mapping[str, Any], task_id: str) -> dict[str, Any]:
    """A backend's task answer (`CreateTaskResult`, `DetailedTask`, a status notification) under
    vmcp's task id, without the backend's own identity (vmcp's is stamped on the way out)."""
    answer = without_backend_identity({**result, "taskId": task_id} if "taskId" in result else dict(result))
    inlined = answer.get("result")
    if isinstance(inlined, dict):
        answer["result"] = without_backend_identity(inlined)
    return answer
