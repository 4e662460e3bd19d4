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

from vmcp.backends.common import BackendUnavailable, RateLimited
from vmcp.backends.pool import BackendPool
from vmcp.catalog.aggregate import Catalog
from vmcp.clients.relay import Relay, is_modern
from vmcp.composite.contracts import run_owner
from vmcp.config.models import VmcpConfig
from vmcp.ops import telemetry
from vmcp.ops.audit import AuditLog
from vmcp.ops.metrics import Metrics
from vmcp.ops.rate_limits import RateLimits
from vmcp.pipeline import route
from vmcp.pipeline.authorize import Authorization
from vmcp.pipeline.backend_tasks import BackendTask, BackendTaskIds
from vmcp.pipeline.envelope import error_result
from vmcp.pipeline.forward import Forward, Inbound
from vmcp.pipeline.observe import Observer
from vmcp.pipeline.police import Refusal, police, police_uri
from vmcp.pipeline.reshape import reshape
from vmcp.pipeline.route import Target
from vmcp.pipeline.search import ToolSearch
from vmcp.pipeline.task_requests import TaskRequests
from vmcp.runs.calls import CompositeRuns

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
        self.tasks = TaskRequests(runs, catalog, self.authorization, self.forward, self.backend_tasks, self.observer)
        self.limits = RateLimits.from_config(config.limits)
        if self.limits is not None and self.limits.limits_backends:
            pool.limit_with(self.limits.backend_refusal)  # composite steps too, when the worker shares the pool
        self.search = ToolSearch(
            config.aggregation.search,
            lambda caller, tools: self.authorization.tools(caller, tools, self._catalog()),
            self.authorization.view,
        )

    @property
    def own_names(self) -> set[str]:
        """The tools vmcp answers itself: composites, run tools, search tools."""
        return self.runs.names | self.search.names

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
        if target is None and name in self.own_names:
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
                    await self._admit(caller, name)
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

    async def _admit(self, caller: Mapping[str, Any], name: str) -> None:
        """Take the call's units from the rate limits (`limits:`). `call_tool` of search mode is
        not counted itself: the tool it calls is, through this same pipeline."""
        if self.limits is None or (self.search.config is not None and name == self.search.config.call_tool.name):
            return
        limited = await self.limits.admit_call(caller, name)
        if limited is not None:
            raise Refusal(limited.message, "rate_limit")

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
            if name in self.search.names:  # the inner call comes back through this pipeline
                return await self.search.call(caller, params, lambda inner: self.call_tool(caller, inner, inbound))
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
        except RateLimited as exc:  # the backend's limit: refused, as the caller's own would be
            raise Refusal(exc.public, "rate_limit") from None
        except BackendUnavailable as exc:
            logger.info("tools/call %s: %s", name, exc)
            return error_result(f"Tool {name!r} failed: {exc.public}")
        except Exception:  # boundary: nothing escapes, and the caller learns nothing of vmcp's insides
            logger.exception("tools/call %s failed", name)
            return error_result(f"Tool {name!r} failed inside vmcp; the operator's logs say why.")

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
