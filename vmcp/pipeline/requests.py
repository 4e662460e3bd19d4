"""The one path every client request takes through vmcp.

    identify → route → authorize → reshape → police → forward → observe

Each stage is a module of this package (`identify`, `route`, `authorize`, `reshape`, `police`,
`forward`, `observe`); `Pipeline` runs them in that order for every method a client may send —
tools, prompts, resources and their templates, completion, subscriptions — whichever way the
request came in (the SDK's session machinery, or the lean path for plain 2026-07-28 tool calls).
A check lives in one stage, so it cannot hold for one method or one era and not another.

What a refusal looks like depends only on the method: a tool call answers with an `isError`
result (a failing tool is data), the other methods with a JSON-RPC error. Nothing the caller did
makes an exception escape; messages name what was refused and why, never vmcp's internals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import MCP_NAME_HEADER, decode_header_value
from mcp_types import HEADER_MISMATCH

from vmcp.backends.common import BackendUnavailable
from vmcp.backends.pool import BackendPool
from vmcp.catalog.aggregate import Catalog
from vmcp.clients.relay import Relay, is_modern
from vmcp.composite.contracts import run_owner
from vmcp.config.models import VmcpConfig
from vmcp.ops import telemetry
from vmcp.ops.audit import AuditLog
from vmcp.ops.metrics import Metrics
from vmcp.pipeline import route
from vmcp.pipeline.authorize import Authorization
from vmcp.pipeline.backend_tasks import BackendTask, BackendTaskIds, is_backend_task, relabelled
from vmcp.pipeline.envelope import error_result
from vmcp.pipeline.forward import Forward, Inbound
from vmcp.pipeline.observe import Observer
from vmcp.pipeline.police import Refusal, police, police_uri
from vmcp.pipeline.reshape import reshape
from vmcp.pipeline.route import Target
from vmcp.runs.calls import CompositeRuns
from vmcp.runs.orchestrator import TemporalUnreachable
from vmcp.runs.request_state import InvalidState
from vmcp.runs.tasks import TaskParams, declares_tasks, missing_capability, not_found
from vmcp.runs.tools import CANCEL_TOOL, STATUS_TOOL

logger = logging.getLogger(__name__)

# resources/read of an unknown URI: 2025-11-25 names its own code; 2026-07-28 (SEP-2164) uses
# Invalid Params. Each caller gets its own era's code, and the URI in `data` either way.
HANDSHAKE_RESOURCE_NOT_FOUND = -32002
_T = TypeVar("_T")


class Pipeline:
    def __init__(
        self,
        config: VmcpConfig,
        pool: BackendPool,
        relay: Relay,
        runs: CompositeRuns,
        catalog: Callable[[], Catalog],
        metrics: Metrics,
        audit: AuditLog,
    ) -> None:
        self.runs = runs
        self._catalog = catalog  # the façade swaps its catalogue; every request reads the current one
        self.authorization = Authorization(
            config.authorization, lambda name, catalog: runs.needs(name, catalog) if name in runs.tools else None
        )
        self.forward = Forward(pool, relay)
        self.backend_tasks = BackendTaskIds(lambda: runs.questions.sealer)
        self.observer = Observer(metrics, audit)

    # ------------------------------------------------------------------ lists

    def tools(self, caller: Mapping[str, Any], tools: list[types.Tool]) -> list[types.Tool]:
        return self.authorization.tools(caller, tools, self._catalog())

    def prompts(self, caller: Mapping[str, Any]) -> list[types.Prompt]:
        catalog = self._catalog()
        return self.authorization.prompts(caller, catalog.prompts, catalog)

    def resources(self, caller: Mapping[str, Any]) -> list[types.Resource]:
        catalog = self._catalog()
        return self.authorization.resources(caller, catalog.resources, catalog)

    def resource_templates(self, caller: Mapping[str, Any]) -> list[types.ResourceTemplate]:
        catalog = self._catalog()
        return self.authorization.templates(caller, catalog.resource_templates, catalog)

    # ------------------------------------------------------------------ tools

    async def call_tool(self, caller: Mapping[str, Any], params: Mapping[str, Any], inbound: Inbound) -> Any:
        """A tools/call (`params` in JSON form): the result as a dict (or, for vmcp's own tools,
        a model). The backend's own JSON-RPC error is raised as `MCPError`, as it sent it."""
        started = time.monotonic()
        name = str(params.get("name"))
        catalog = self._catalog()
        target = route.tool(catalog, name)
        if target is None and name in self.runs.names:
            target = route.own_tool(name)
        with telemetry.span(
            f"tools/call {name}",
            params.get("_meta"),
            **{"mcp.tool": name, "vmcp.backend": target.backend if target is not None else None},
        ):
            try:
                if target is None:
                    result: Any = error_result(f"Unknown tool {name!r}: no backend offers it (see tools/list).")
                else:
                    if not self.authorization.permits(caller, target, catalog):
                        raise Refusal(f"Tool {name!r} is not available to you (authorization).", "authorization")
                    result = await self._call(caller, target, params, inbound, catalog)
            except Refusal as refusal:
                self.observer.refused(caller, "tools/call", name, target, refusal, started)
                said = str(refusal) if refusal.reason == "authorization" else f"Tool {name!r} was not called: {refusal}"
                return error_result(said)
            except MCPError as exc:  # the backend's own protocol error, passed through as it was sent
                self.observer.answered(caller, "tools/call", name, target, started, failure=exc.error.message)
                raise
        self.observer.answered(caller, "tools/call", name, target, started, result=result)
        return result

    async def _call(
        self,
        caller: Mapping[str, Any],
        target: Target,
        params: Mapping[str, Any],
        inbound: Inbound,
        catalog: Catalog,
    ) -> Any:
        name = target.name
        try:
            if target.backend is None:  # a composite or a run tool: vmcp answers it (through Temporal)
                assert inbound.ctx is not None, "vmcp's own tools are served through the SDK's session"
                request = types.CallToolRequestParams.model_validate(params)
                others = self.authorization.rules.reaches_others_runs(caller, name)
                return await self.runs.call(inbound.ctx, request, catalog, caller, others=others)
            arguments = reshape(target, params.get("arguments"), caller)
            police(target, arguments)
            sent = {**params, "arguments": arguments} if target.shape is not None else params
            result = await self.forward.tool(target, sent, inbound)
            if result.get("resultType") == "task" and isinstance(result.get("taskId"), str):
                # the caller declared tasks and the backend made one: hand it out under an id that
                # routes every later task request back to this backend, for this caller
                task = BackendTask(target.backend, result["taskId"], name, run_owner(dict(caller)))
                return self.backend_tasks.created(result, task)
            return result
        except (Refusal, MCPError):
            raise
        except BackendUnavailable as exc:
            logger.info("tools/call %s: %s", name, exc)
            return error_result(f"Tool {name!r} failed: {exc.public}")
        except Exception:  # boundary: nothing escapes, and the caller learns nothing of vmcp's insides
            logger.exception("tools/call %s failed", name)
            return error_result(f"Tool {name!r} failed inside vmcp; the operator's logs say why.")

    # ------------------------------------------------------------------ tasks

    async def task(
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

    async def task_state(self, caller: Mapping[str, Any], task_id: str, inbound: Inbound) -> dict[str, Any] | None:
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

    # ------------------------------------------------------------------ prompts, resources, completion

    async def get_prompt(
        self, ctx: ServerRequestContext[Any], caller: Mapping[str, Any], params: types.GetPromptRequestParams
    ) -> Any:
        target = route.prompt(self._catalog(), params.name)

        def check(found: Target) -> None:
            police(found, params.arguments)

        return await self._guarded(
            caller,
            "prompts/get",
            params.name,
            target,
            check,
            lambda found: self.forward.prompt(ctx, found, params),
            f"prompt {params.name!r}",
        )

    async def read_resource(
        self, ctx: ServerRequestContext[Any], caller: Mapping[str, Any], params: types.ReadResourceRequestParams
    ) -> Any:
        uri = str(params.uri)
        return await self._guarded(
            caller,
            "resources/read",
            uri,
            route.resource(self._catalog(), uri),
            police_uri,
            lambda found: self.forward.resource(ctx, found, params),
            f"resource {uri}",
            unknown_code=types.INVALID_PARAMS if is_modern(ctx) else HANDSHAKE_RESOURCE_NOT_FOUND,
            unknown_data={"uri": uri},
        )

    async def complete(
        self, ctx: ServerRequestContext[Any], caller: Mapping[str, Any], params: types.CompleteRequestParams
    ) -> types.CompleteResult:
        ref = params.ref
        catalog = self._catalog()
        if isinstance(ref, types.PromptReference):
            name, target, what = ref.name, route.prompt(catalog, ref.name), f"prompt {ref.name!r}"
        else:
            name, target, what = ref.uri, route.template(catalog, ref.uri), f"resource template {ref.uri}"
        return await self._guarded(
            caller,
            "completion/complete",
            name,
            target,
            lambda found: None,
            lambda found: self.forward.complete(ctx, found, params),
            what,
            unknown_code=types.INVALID_PARAMS,
        )

    async def subscribe(
        self, ctx: ServerRequestContext[Any], caller: Mapping[str, Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        return await self._following(ctx, caller, "resources/subscribe", str(params.uri), self.forward.subscribe)

    async def unsubscribe(
        self, ctx: ServerRequestContext[Any], caller: Mapping[str, Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        return await self._following(ctx, caller, "resources/unsubscribe", str(params.uri), self.forward.unsubscribe)

    async def _following(
        self,
        ctx: ServerRequestContext[Any],
        caller: Mapping[str, Any],
        method: str,
        uri: str,
        send: Callable[[ServerRequestContext[Any], Target], Awaitable[None]],
    ) -> types.EmptyResult:
        """A handshake-era session starting or stopping to follow a URI: judged as a read of it."""
        target = route.resource(self._catalog(), uri)
        word = method.split("/")[1]
        await self._guarded(caller, method, uri, target, police_uri, lambda found: send(ctx, found), f"{word} {uri}")
        return types.EmptyResult()

    def followable(self, caller: Mapping[str, Any], uris: list[str]) -> list[Target]:
        """The URIs of a 2026-07-28 listen request this caller may follow; the others are not
        honoured (and never reach a backend), each refusal observed like any other."""
        catalog = self._catalog()
        followed = []
        for uri in uris:
            started = time.monotonic()
            target = route.resource(catalog, uri)
            if target is None:
                continue  # not honoured: the acknowledgement tells the client
            try:
                if not self.authorization.permits(caller, target, catalog):
                    raise Refusal(f"resource {uri} is not available to you (authorization)", "authorization")
                police_uri(target)
            except Refusal as refusal:
                self.observer.refused(caller, "subscriptions/listen", uri, target, refusal, started)
                continue
            followed.append(target)
        return followed

    async def _guarded(
        self,
        caller: Mapping[str, Any],
        method: str,
        name: str,
        target: Target | None,
        check: Callable[[Target], None],
        send: Callable[[Target], Awaitable[_T]],
        what: str,
        *,
        unknown_code: int = types.INVALID_PARAMS,
        unknown_data: Any = None,
    ) -> _T:
        """Authorize, police and forward one request that is not a tool call; refusals and
        failures are JSON-RPC errors."""
        started = time.monotonic()
        if target is None:
            self.observer.answered(caller, method, name, None, started, failure="unknown")
            raise MCPError(code=unknown_code, message=f"Unknown {what}", data=unknown_data)
        try:
            if not self.authorization.permits(caller, target, self._catalog()):
                raise Refusal(f"{what[:1].upper()}{what[1:]} is not available to you (authorization)", "authorization")
            check(target)
            result = await send(target)
        except Refusal as refusal:
            self.observer.refused(caller, method, name, target, refusal, started)
            said = str(refusal) if refusal.reason == "authorization" else f"{what}: {refusal}"
            raise MCPError(code=types.INVALID_PARAMS, message=said) from None
        except BackendUnavailable as exc:
            logger.info("%s %s: %s", method, name, exc)
            self.observer.answered(caller, method, name, target, started, failure=str(exc))
            raise MCPError(code=types.INTERNAL_ERROR, message=f"{what}: {exc.public}") from None
        except MCPError as exc:
            self.observer.answered(caller, method, name, target, started, failure=exc.error.message)
            raise
        except Exception:
            logger.exception("%s %s failed", method, name)
            self.observer.answered(caller, method, name, target, started, failure="internal error")
            raise MCPError(
                code=types.INTERNAL_ERROR, message=f"{what} failed inside vmcp; the operator's logs say why"
            ) from None
        self.observer.answered(caller, method, name, target, started)
        return result
