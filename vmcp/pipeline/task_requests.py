"""Task requests (`tasks/get`, `tasks/update`, `tasks/cancel`) through the pipeline's stages.

A task is a composite run (its id is the run id: `vmcp.runs.tasks` reads it in the extension's
vocabulary) or a backend's task relayed under a sealed id (`backend_tasks`). Either way the
request is identified, the caller's reach checked with the rules the run tools use, and the
answer observed (audit, metrics) like every other request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import MCP_NAME_HEADER, decode_header_value
from mcp_types import HEADER_MISMATCH

from vmcp.backends.common import BackendUnavailable
from vmcp.catalog.aggregate import Catalog
from vmcp.composite.contracts import run_owner
from vmcp.pipeline import route
from vmcp.pipeline.authorize import Authorization
from vmcp.pipeline.backend_tasks import BackendTaskIds, is_backend_task, relabelled
from vmcp.pipeline.forward import Forward, Inbound
from vmcp.pipeline.observe import Observer
from vmcp.pipeline.route import Target
from vmcp.runs.calls import CompositeRuns
from vmcp.runs.errors import TemporalUnreachable
from vmcp.runs.request_state import InvalidState
from vmcp.runs.tasks import TaskParams, declares_tasks, missing_capability, not_found
from vmcp.runs.tools import CANCEL_TOOL, STATUS_TOOL

logger = logging.getLogger(__name__)


class TaskRequests:
    def __init__(
        self,
        runs: CompositeRuns,
        catalog: Callable[[], Catalog],
        authorization: Authorization,
        forward: Forward,
        backend_tasks: BackendTaskIds,
        observer: Observer,
    ) -> None:
        self.runs = runs
        self._catalog = catalog
        self.authorization = authorization
        self.forward = forward
        self.backend_tasks = backend_tasks
        self.observer = observer

    async def request(
        self, caller: Mapping[str, Any], method: str, params: TaskParams, inbound: Inbound
    ) -> dict[str, Any]:
        """`tasks/get`, `tasks/update` or `tasks/cancel`, for a client that declared the tasks
        extension: on a composite run it may follow (as `vmcp_run_status` / `vmcp_run_cancel`
        would let it), or relayed to the backend that created the task, for the caller who
        created it while the tool is still theirs to call. Audited and counted like every request."""
        started = time.monotonic()
        target = route.own_tool(CANCEL_TOOL if method == "tasks/cancel" else STATUS_TOOL)
        try:
            if inbound.ctx is None or not declares_tasks(inbound.ctx):
                raise missing_capability()
            if (
                inbound.headers is not None
                and decode_header_value(inbound.headers.get(MCP_NAME_HEADER)) != params.task_id
            ):
                # the extension names the task in `Mcp-Name` so intermediaries can route on it: a
                # request whose header says another task is refused, as the SDK refuses a tool call's
                raise MCPError(code=HEADER_MISMATCH, message="Mcp-Name header does not match the request's taskId")
            others = self.authorization.rules.reaches_others_runs(caller, target.name)
            if is_backend_task(params.task_id):
                target, result = await self._backend_task(caller, method, params, inbound, others=others)
            elif method == "tasks/get":
                result = await self.runs.tasks.get(caller, params.task_id, others=others)
            elif method == "tasks/update":
                result = await self.runs.tasks.update(caller, params.task_id, params.input_responses, others=others)
            else:
                result = await self.runs.tasks.cancel(caller, params.task_id, others=others)
        except MCPError as exc:
            self.observer.answered(caller, method, params.task_id[:120], target, started, failure=exc.error.message)
            raise
        except (TemporalUnreachable, BackendUnavailable) as exc:
            logger.warning("%s %s: %s", method, params.task_id[:120], exc)
            said = (
                exc.public
                if isinstance(exc, BackendUnavailable)
                else "runs live in Temporal, which is not reachable now"
            )
            self.observer.answered(caller, method, params.task_id[:120], target, started, failure=said)
            raise MCPError(code=types.INTERNAL_ERROR, message=f"{method}: {said}") from None
        self.observer.answered(caller, method, params.task_id[:120], target, started)
        return result

    async def state(self, caller: Mapping[str, Any], task_id: str, inbound: Inbound) -> dict[str, Any] | None:
        """A task as `tasks/get` would answer `caller` (what a listen stream notifies), or None
        when it is not the caller's to see. Not audited: a stream reads its tasks every second."""
        others = self.authorization.rules.reaches_others_runs(caller, STATUS_TOOL)
        try:
            if is_backend_task(task_id):
                return (
                    await self._backend_task(caller, "tasks/get", TaskParams(task_id=task_id), inbound, others=others)
                )[1]
            return await self.runs.tasks.get(caller, task_id, others=others)
        except MCPError:
            return None

    async def _backend_task(
        self, caller: Mapping[str, Any], method: str, params: TaskParams, inbound: Inbound, *, others: bool
    ) -> tuple[Target, dict[str, Any]]:
        try:
            task = self.backend_tasks.open(params.task_id)
        except InvalidState:
            raise not_found(params.task_id) from None
        catalog = self._catalog()
        target = route.tool(catalog, task.tool)
        reachable = (
            (others or task.owner == run_owner(dict(caller)))
            and target is not None
            and target.backend == task.backend
            and self.authorization.permits(caller, target, catalog)
        )
        if not reachable or target is None:
            raise not_found(params.task_id)
        sent = params.model_dump(by_alias=True, mode="json", exclude_none=True)
        answer = await self.forward.task(method, task.backend, task.task_id, sent, inbound)
        return target, relabelled(answer, params.task_id)
