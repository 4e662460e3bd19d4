"""The MCP face of vmcp: list from the cached catalogue, forward each call to its backend.

Every handler answers from the current `Catalog` snapshot (swapped atomically when a backend's
listing changes), so no client request ever re-lists a backend. A tool that fails is data: it
comes back as an `isError` result naming the cause; only the backend's own protocol errors
(invalid params, unknown method) travel as JSON-RPC errors, exactly as the backend sent them.
No exception escapes a handler. This module never imports Temporal: plain forwarding keeps
working while Temporal is down.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any, TypeVar

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.subscriptions import ListenHandler
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    LOG_LEVEL_META_KEY,
    PROTOCOL_VERSION_META_KEY,
)

from vmcp.backends import BackendConnection, BackendPool, BackendUnavailable
from vmcp.catalog import Catalog, CatalogError, build_catalog
from vmcp.composite import resolve
from vmcp.config import VmcpConfig
from vmcp.relay import Relay, calling, is_modern, resolve_input_required
from vmcp.runs import CompositeRuns
from vmcp.wire import WireError

logger = logging.getLogger(__name__)

_PROGRESS_TOKEN = "progressToken"
# The caller's envelope describes its connection to vmcp, not vmcp's to the backend (the SDK
# client stamps its own); a handshake-era backend rejects a request that carries one.
_NOT_FORWARDED = frozenset(
    {"progress_token", _PROGRESS_TOKEN, PROTOCOL_VERSION_META_KEY, CLIENT_INFO_META_KEY, CLIENT_CAPABILITIES_META_KEY}
)
_RESOURCE_NOT_FOUND = -32002  # the spec's code for resources/read of an unknown URI
_R = TypeVar("_R")
_ResultT = TypeVar("_ResultT", bound=types.Result)


def error_result(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


class Facade:
    """Owns the catalogue and the MCP `Server` whose handlers route through the backend pool."""

    def __init__(self, config: VmcpConfig, pool: BackendPool) -> None:
        self.config = config
        self.pool = pool
        self.catalog = Catalog()
        self.catalog_error: CatalogError | None = None
        self._started = False  # listings that arrive before the first full build only wait for it
        self._tools_result = types.ListToolsResult(tools=[])
        self._refresh_lock = anyio.Lock()
        self.relay = Relay()
        pool.relay_to(self.relay)
        self.runs = CompositeRuns(config)
        self.server: Server[Any] = _AnnouncingServer(
            "vmcp",
            version=_version(),
            instructions="vmcp aggregates several MCP servers behind one endpoint.",
            get_tool_input_schema=self._input_schema,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_prompts=self._list_prompts,
            on_get_prompt=self._get_prompt,
            on_list_resources=self._list_resources,
            on_list_resource_templates=self._list_resource_templates,
            on_read_resource=self._read_resource,
            on_completion=self._complete,
            on_subscribe_resource=self._subscribe,
            on_unsubscribe_resource=self._unsubscribe,
            on_subscriptions_listen=self._listen,
        )
        self._listen_streams = ListenHandler(self.relay.bus)
        # Registered directly rather than as on_set_logging_level, which warns that logging is
        # deprecated at 2026-07-28: handshake-era clients still use it, and vmcp relays it.
        self.server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, self._set_level)
        # The SDK's per-message OpenTelemetry middleware costs ~10% of a forwarded call even with
        # no exporter installed; vmcp traces on its own terms. Its own middleware only notes
        # handshake-era sessions, to tell them when the catalogue changes.
        self.server.middleware = [self._note_session]

    async def _note_session(self, ctx: ServerRequestContext[Any], call_next: Any) -> Any:
        self.relay.seen(ctx)
        return await call_next(ctx)

    # ------------------------------------------------------------------ catalogue

    def rebuild(self, *, initial: bool = False) -> Catalog:
        self._started = self._started or initial
        return self._rebuild(initial)

    def _rebuild(self, initial: bool) -> Catalog:
        """Rebuild from the backends' current listings. A clash left unresolved (`manual`)
        keeps the previous catalogue and is reported: a backend adding a tool must not take the
        whole endpoint down."""
        try:
            catalog = build_catalog(
                self.config.aggregation,
                [b.name for b in self.config.backends],
                self.pool.listings(),
                reserved=self.runs.names,
            )
        except CatalogError as exc:
            self.catalog_error = exc
            logger.error("catalogue not updated:\n%s", exc)
            if initial:  # nothing partial may be served: an empty catalogue until the clash is settled
                self.catalog = Catalog()
                self._tools_result = types.ListToolsResult(tools=[])
            return self.catalog
        for warning in catalog.warnings:
            logger.warning("%s", warning)
        self.catalog_error = None
        self.catalog = catalog
        self._tools_result = types.ListToolsResult(tools=[*catalog.tools, *self.runs.advertised()])
        self._check_composites(catalog)
        return catalog

    def _check_composites(self, catalog: Catalog) -> None:
        """Log composite steps whose tool the catalogue does not know (they fail when called)."""
        backends = [b.name for b in self.config.backends]
        for index, tool in enumerate(self.config.composite_tools):
            for issue in resolve(tool, catalog, backends, index)[1]:
                logger.error("%s", issue)

    async def on_listing_changed(self, backend: str) -> None:
        """A backend (re)connected or re-listed: rebuild, and tell connected clients what changed."""
        if not self._started:
            return
        async with self._refresh_lock:
            before = self.catalog
            after = self.rebuild()
            await self.relay.announce(
                tools=before.tools != after.tools,
                prompts=before.prompts != after.prompts,
                resources=(before.resources, before.resource_templates) != (after.resources, after.resource_templates),
            )

    def _input_schema(self, name: str) -> Mapping[str, Any] | None:
        tool = self.catalog.tool(name)
        return tool.input_schema if tool is not None else self.runs.input_schema(name)

    # ------------------------------------------------------------------ tools

    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return self._tools_result

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> Any:  # CallToolResult | InputRequiredResult, or the backend's raw result dict
        route = self.catalog.tool_routes.get(params.name)
        if route is None:
            if params.name in self.runs.names:
                with calling(ctx):
                    try:
                        return await self.runs.call(ctx, params.name, params.arguments, self.catalog)
                    except Exception as exc:  # boundary: nothing escapes a handler
                        logger.exception("tools/call %s failed", params.name)
                        return error_result(f"Tool {params.name!r} failed inside vmcp: {type(exc).__name__}: {exc}")
            return error_result(f"Unknown tool {params.name!r}: no backend offers it (see tools/list).")
        progress = _has_progress_token(params.meta)
        try:
            connection = self.pool.get(route.backend)
            meta = self._backend_meta(ctx, params.meta, connection)

            async def call(responses: types.InputResponses | None, state: str | None) -> Any:
                with calling(ctx, connection.name):
                    return await connection.call_tool(
                        route.original,
                        params.arguments,
                        meta=meta,
                        progress=_progress_relay(ctx) if progress else None,
                        input_responses=responses,
                        request_state=state,
                    )

            if not progress and not self._wants_log(ctx, params.meta) and connection.takes_lean_path(route.original):
                raw = await self._call_lean(ctx, params, connection, route.original)
                if is_modern(ctx) or raw.get("resultType") != "input_required":
                    return raw
                # a handshake-era caller cannot take an InputRequiredResult: ask it mid-call instead
                result = await resolve_input_required(ctx, types.InputRequiredResult.model_validate(raw), call)
            else:
                result = await call(params.input_responses, params.request_state)
                if isinstance(result, types.InputRequiredResult) and not is_modern(ctx):
                    result = await resolve_input_required(ctx, result, call)
        except BackendUnavailable as exc:
            return error_result(f"Tool {params.name!r} failed: {exc}")
        except MCPError:
            raise  # the backend's own protocol error, passed through as it was sent
        except Exception as exc:  # boundary: nothing escapes a handler
            logger.exception("tools/call %s failed", params.name)
            return error_result(f"Tool {params.name!r} failed inside vmcp: {type(exc).__name__}: {exc}")
        if isinstance(result, types.CallToolResult | types.InputRequiredResult):
            return _without_backend_identity(result)
        return error_result(f"Tool {params.name!r} returned a result vmcp cannot relay ({type(result).__name__}).")

    def _wants_log(self, ctx: ServerRequestContext[Any], meta: types.RequestParamsMeta | None) -> bool:
        """Whether the caller wants this call's log notifications (then it needs the SDK client,
        which delivers them; the lean wire drops them)."""
        if is_modern(ctx):
            return bool(meta) and LOG_LEVEL_META_KEY in meta  # type: ignore[operator]
        return self.relay.level_of(ctx) is not None

    def _backend_meta(
        self, ctx: ServerRequestContext[Any], meta: types.RequestParamsMeta | None, connection: BackendConnection
    ) -> dict[str, Any] | None:
        """The `_meta` a backend gets: the caller's, less its envelope; a 2026-07-28 backend also
        gets a handshake-era caller's log level as the per-request opt-in."""
        forwarded = _forward_meta(meta) or {}
        if connection.is_modern:
            level = self.relay.level_of(ctx)
            if level is not None and not is_modern(ctx):
                forwarded[LOG_LEVEL_META_KEY] = level
        else:
            forwarded.pop(LOG_LEVEL_META_KEY, None)
        return forwarded or None

    async def _call_lean(
        self,
        ctx: ServerRequestContext[Any],
        params: types.CallToolRequestParams,
        connection: BackendConnection,
        original: str,
    ) -> dict[str, Any]:
        """Relay over the backend's raw wire even for a handshake-era caller: the result dict goes
        back as the backend sent it (less its serverInfo), with no model round trip."""
        forwarded = params.model_dump(by_alias=True, mode="json", exclude_none=True)
        forwarded["name"] = original
        meta = _forward_meta(params.meta)
        if meta:
            forwarded["_meta"] = meta
        else:
            forwarded.pop("_meta", None)
        capabilities = ctx.session.client_capabilities
        try:
            result = await connection.forward_tool_call(
                forwarded,
                caller_capabilities=capabilities.model_dump(by_alias=True, mode="json", exclude_none=True)
                if capabilities is not None
                else None,
            )
        except WireError as exc:
            error = exc.error
            raise MCPError(
                code=int(error.get("code", types.INTERNAL_ERROR)),
                message=str(error.get("message", "")),
                data=error.get("data"),
            ) from None
        meta_out = result.get("_meta")
        if isinstance(meta_out, dict) and _SERVER_INFO_KEY in meta_out:
            rest = {k: v for k, v in meta_out.items() if k != _SERVER_INFO_KEY}
            result = {k: v for k, v in result.items() if k != "_meta"}
            if rest:
                result["_meta"] = rest
        return result

    # ------------------------------------------------------------------ prompts

    async def _list_prompts(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=list(self.catalog.prompts))

    async def _get_prompt(
        self, ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams
    ) -> Any:  # GetPromptResult | InputRequiredResult
        route = self.catalog.prompt_routes.get(params.name)
        if route is None:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown prompt {params.name!r}")
        connection = self.pool.get(route.backend)
        meta = self._backend_meta(ctx, params.meta, connection)

        async def get(responses: types.InputResponses | None, state: str | None) -> Any:
            with calling(ctx, connection.name):
                return await connection.get_prompt(
                    route.original, params.arguments, meta=meta, input_responses=responses, request_state=state
                )

        return await self._answer(ctx, get, params.input_responses, params.request_state, f"prompt {params.name!r}")

    # ------------------------------------------------------------------ resources

    async def _list_resources(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=list(self.catalog.resources))

    async def _list_resource_templates(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=list(self.catalog.resource_templates))

    async def _read_resource(
        self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> Any:  # ReadResourceResult | InputRequiredResult
        backend = self.catalog.resource_backend(params.uri)
        if backend is None:
            raise MCPError(code=_RESOURCE_NOT_FOUND, message=f"Unknown resource {params.uri}")
        connection = self.pool.get(backend)
        meta = self._backend_meta(ctx, params.meta, connection)

        async def read(responses: types.InputResponses | None, state: str | None) -> Any:
            with calling(ctx, connection.name):
                return await connection.read_resource(
                    params.uri, meta=meta, input_responses=responses, request_state=state
                )

        return await self._answer(ctx, read, params.input_responses, params.request_state, f"resource {params.uri}")

    async def _answer(
        self,
        ctx: ServerRequestContext[Any],
        call: Any,
        responses: types.InputResponses | None,
        state: str | None,
        what: str,
    ) -> Any:
        """Run a prompts/get or resources/read against its backend: an unreachable backend is an
        MCP error, and a handshake-era caller gets a backend's input requests asked mid-call."""
        try:
            result = await call(responses, state)
            if isinstance(result, types.InputRequiredResult) and not is_modern(ctx):
                result = await resolve_input_required(ctx, result, call)
        except BackendUnavailable as exc:
            raise MCPError(code=types.INTERNAL_ERROR, message=f"{what}: {exc}") from exc
        return _without_backend_identity(result)

    # ------------------------------------------------------------------ subscriptions, logging

    async def _subscribe(
        self, ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        backend = self._owner_of(params.uri)
        if self.relay.subscribe(ctx, params.uri):
            try:
                with calling(ctx, backend):
                    await self.pool.get(backend).subscribe(params.uri)
            except BackendUnavailable as exc:
                self.relay.unsubscribe(ctx, params.uri)
                raise MCPError(code=types.INTERNAL_ERROR, message=f"subscribe {params.uri}: {exc}") from exc
            except MCPError:
                self.relay.unsubscribe(ctx, params.uri)
                raise
        return types.EmptyResult()

    async def _unsubscribe(
        self, ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        backend = self._owner_of(params.uri)
        if self.relay.unsubscribe(ctx, params.uri):
            try:
                await self.pool.get(backend).unsubscribe(params.uri)
            except BackendUnavailable as exc:
                raise MCPError(code=types.INTERNAL_ERROR, message=f"unsubscribe {params.uri}: {exc}") from exc
        return types.EmptyResult()

    async def _listen(
        self, ctx: ServerRequestContext[Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        """A 2026-07-28 client's change stream: list changes come from the relay's bus; each
        resource it follows is followed upstream for as long as the stream lasts."""
        followed: list[str] = []
        try:
            for uri in params.notifications.resource_subscriptions or ():
                backend = self.catalog.resource_backend(uri)
                if backend is None:
                    continue  # not honoured: the acknowledgement tells the client
                if self.relay.listen(uri):
                    with contextlib.suppress(BackendUnavailable, MCPError):
                        await self.pool.get(backend).subscribe(uri)
                followed.append(uri)
            return await self._listen_streams(ctx, params)
        finally:
            for uri in followed:
                backend = self.catalog.resource_backend(uri)
                if self.relay.unlisten(uri) and backend is not None:
                    with contextlib.suppress(Exception):
                        await self.pool.get(backend).unsubscribe(uri)

    def _owner_of(self, uri: str) -> str:
        backend = self.catalog.resource_backend(uri)
        if backend is None:
            raise MCPError(code=_RESOURCE_NOT_FOUND, message=f"Unknown resource {uri}")
        return backend

    async def _set_level(
        self, ctx: ServerRequestContext[Any], params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        """Remember the caller's level (vmcp filters what it relays to this client) and pass it to
        every handshake-era backend that logs. Backend connections are shared, so a backend sends at
        the level the latest client asked for; vmcp's own filter keeps each client at its own."""
        self.relay.set_level(ctx, params.level)
        for connection in self.pool.connections.values():
            if connection.state == "ready":
                with contextlib.suppress(Exception):  # a backend without logging must not fail the call
                    await connection.set_logging_level(params.level)
        return types.EmptyResult()

    async def _complete(
        self, ctx: ServerRequestContext[Any], params: types.CompleteRequestParams
    ) -> types.CompleteResult:
        ref = params.ref
        if isinstance(ref, types.PromptReference):
            route = self.catalog.prompt_routes.get(ref.name)
            if route is None:
                raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown prompt {ref.name!r}")
            backend, ref = route.backend, ref.model_copy(update={"name": route.original})
        else:
            found = self.catalog.template_backend(ref.uri) or self.catalog.resource_backend(ref.uri)
            if found is None:
                raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown resource template {ref.uri}")
            backend = found
        context = params.context.arguments if params.context is not None else None
        argument = {"name": params.argument.name, "value": params.argument.value}
        try:
            with calling(ctx, backend):
                return await self.pool.get(backend).complete(ref, argument, context)
        except BackendUnavailable as exc:
            raise MCPError(code=types.INTERNAL_ERROR, message=f"completion: {exc}") from exc


_SERVER_INFO_KEY = "io.modelcontextprotocol/serverInfo"


def _without_backend_identity(result: _ResultT) -> _ResultT:
    """Drop the backend's serverInfo stamp so the client sees vmcp's own (the runner adds it)."""
    meta = result.meta
    if meta and _SERVER_INFO_KEY in meta:
        rest = {k: v for k, v in meta.items() if k != _SERVER_INFO_KEY}
        return result.model_copy(update={"meta": rest or None})
    return result


def _has_progress_token(meta: types.RequestParamsMeta | None) -> bool:
    return bool(meta) and meta.get("progress_token", meta.get(_PROGRESS_TOKEN)) is not None  # type: ignore[union-attr]


def _forward_meta(meta: types.RequestParamsMeta | None) -> dict[str, Any] | None:
    """The caller's `_meta` minus its progress token (the backend gets a token of the SDK's own,
    whose notifications are relayed back under the caller's) and its protocol envelope."""
    if not meta:
        return None
    forwarded = {k: v for k, v in meta.items() if k not in _NOT_FORWARDED}
    return forwarded or None


def _progress_relay(ctx: ServerRequestContext[Any]) -> ProgressFnT:
    async def relay(progress: float, total: float | None, message: str | None) -> None:
        try:
            await ctx.session.report_progress(progress, total, message)
        except Exception:  # a client that went away must not fail the backend call
            logger.debug("progress relay failed", exc_info=True)

    return relay


class _AnnouncingServer(Server[Any]):
    """Declares `listChanged` for tools, prompts and resources: vmcp tells handshake-era clients
    when a backend comes, goes or changes what it offers."""

    def create_initialization_options(self, *args: Any, **kwargs: Any) -> Any:
        if not args and "notification_options" not in kwargs:
            kwargs["notification_options"] = NotificationOptions(
                prompts_changed=True, resources_changed=True, tools_changed=True
            )
        return super().create_initialization_options(*args, **kwargs)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vmcp")
    except PackageNotFoundError:
        return "0.0.0"
