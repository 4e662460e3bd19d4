"""Everything besides tools, passed through to the backend that owns it: prompts, resources and
their templates, completion, resource subscriptions (both eras) and logging levels."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.subscriptions import ListenHandler
from mcp.shared.exceptions import MCPError

from vmcp.backends.pool import BackendPool, BackendUnavailable
from vmcp.catalog.aggregate import Catalog
from vmcp.clients.relay import Relay, calling, is_modern, resolve_input_required
from vmcp.pipeline.forwarding import backend_meta, without_backend_identity

_RESOURCE_NOT_FOUND = -32002  # the spec's code for resources/read of an unknown URI


class PassThrough:
    """The non-tool handlers of the façade's MCP server."""

    def __init__(self, pool: BackendPool, relay: Relay, catalog: Callable[[], Catalog]) -> None:
        self.pool = pool
        self.relay = relay
        self._catalog = catalog  # the façade swaps its catalogue; always read the current one
        self._listen_streams = ListenHandler(relay.bus)

    @property
    def catalog(self) -> Catalog:
        return self._catalog()

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
        meta = backend_meta(self.relay, ctx, params.meta, connection)

        async def get(responses: types.InputResponses | None, state: str | None) -> Any:
            with calling(ctx, connection.name):
                return await connection.get_prompt(
                    route.original, params.arguments, meta=meta, input_responses=responses, request_state=state
                )

        return await self._answer(ctx, get, params.input_responses, params.request_state, f"prompt {params.name!r}")

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
        meta = backend_meta(self.relay, ctx, params.meta, connection)

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
        return without_backend_identity(result)

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
