"""The MCP face of vmcp: list from the cached catalogue, forward each call to its backend.

Every handler answers from the current `Catalog` snapshot (swapped atomically when a backend's
listing changes), so no client request ever re-lists a backend. A tool that fails is data: it
comes back as an `isError` result naming the cause; only the backend's own protocol errors
(invalid params, unknown method) travel as JSON-RPC errors, exactly as the backend sent them.
No exception escapes a handler. This module never imports Temporal: plain forwarding keeps
working while Temporal is down.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY

from vmcp.backends import BackendConnection, BackendPool, BackendUnavailable
from vmcp.catalog import Catalog, CatalogError, build_catalog
from vmcp.config import VmcpConfig
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
        self._tools_result = types.ListToolsResult(tools=[])
        self._refresh_lock = anyio.Lock()
        self.server: Server[Any] = Server(
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
        )
        # The SDK's per-message OpenTelemetry middleware costs ~10% of a forwarded call even with
        # no exporter installed; vmcp traces on its own terms.
        self.server.middleware = []

    # ------------------------------------------------------------------ catalogue

    def rebuild(self) -> Catalog:
        """Rebuild from the backends' current listings. A clash left unresolved (`manual`)
        keeps the previous catalogue and is reported: a backend adding a tool must not take the
        whole endpoint down."""
        try:
            catalog = build_catalog(
                self.config.aggregation, [b.name for b in self.config.backends], self.pool.listings()
            )
        except CatalogError as exc:
            self.catalog_error = exc
            logger.error("catalogue not updated:\n%s", exc)
            return self.catalog
        for warning in catalog.warnings:
            logger.warning("%s", warning)
        self.catalog_error = None
        self.catalog = catalog
        self._tools_result = types.ListToolsResult(tools=list(catalog.tools))
        return catalog

    async def on_listing_changed(self, backend: str) -> None:
        async with self._refresh_lock:
            self.rebuild()

    def _input_schema(self, name: str) -> Mapping[str, Any] | None:
        tool = self.catalog.tool(name)
        return tool.input_schema if tool is not None else None

    # ------------------------------------------------------------------ tools

    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return self._tools_result

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        route = self.catalog.tool_routes.get(params.name)
        if route is None:
            return error_result(f"Unknown tool {params.name!r}: no backend offers it (see tools/list).")
        progress = _has_progress_token(params.meta)
        try:
            connection = self.pool.get(route.backend)
            if not progress and connection.takes_lean_path(route.original):
                return await self._call_lean(ctx, params, connection, route.original)
            result = await connection.call_tool(
                route.original,
                params.arguments,
                meta=_forward_meta(params.meta),
                progress=_progress_relay(ctx) if progress else None,
                input_responses=params.input_responses,
                request_state=params.request_state,
            )
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

    async def _call_lean(
        self,
        ctx: ServerRequestContext[Any],
        params: types.CallToolRequestParams,
        connection: BackendConnection,
        original: str,
    ) -> Any:
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
    ) -> types.GetPromptResult | types.InputRequiredResult:
        route = self.catalog.prompt_routes.get(params.name)
        if route is None:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown prompt {params.name!r}")
        return await _relay(
            self.pool.get(route.backend).get_prompt(route.original, params.arguments, meta=_forward_meta(params.meta)),
            f"prompt {params.name!r}",
        )

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
    ) -> types.ReadResourceResult | types.InputRequiredResult:
        backend = self.catalog.resource_backend(params.uri)
        if backend is None:
            raise MCPError(code=_RESOURCE_NOT_FOUND, message=f"Unknown resource {params.uri}")
        return await _relay(
            self.pool.get(backend).read_resource(params.uri, meta=_forward_meta(params.meta)),
            f"resource {params.uri}",
        )

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
        return await _relay(self.pool.get(backend).complete(ref, argument, context), "completion")


async def _relay(call: Awaitable[_R], what: str) -> _R:
    """Await a non-tool backend request; an unreachable backend becomes an MCP error."""
    try:
        result = await call
        return _without_backend_identity(result) if isinstance(result, types.Result) else result  # type: ignore[return-value]
    except BackendUnavailable as exc:
        raise MCPError(code=types.INTERNAL_ERROR, message=f"{what}: {exc}") from exc


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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vmcp")
    except PackageNotFoundError:
        return "0.0.0"
