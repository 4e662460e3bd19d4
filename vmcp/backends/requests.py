"""What callers ask of a backend connection: tool calls (over the SDK session or the lean wire),
prompts, resources, completion, log level and ping.

A mixin of `BackendConnection` (which supervises the connection and provides the live client):
each request waits for a ready client, and a failure of the connection itself becomes
`BackendUnavailable` and a reconnection, while the backend's own MCP errors pass through.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar, cast

import anyio
import httpx2
import mcp_types as types
from mcp import Client
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError

from vmcp.backends.common import BackendUnavailable, State, describe_error
from vmcp.backends.credentials import Credentials, passed_headers
from vmcp.backends.http1 import Http1Error
from vmcp.backends.wire import ModernHttpWire, WireProtocolError
from vmcp.config.models import BackendConfig

_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
    httpx2.TransportError,
    ConnectionError,
    OSError,
)
# A handshake-era HTTP backend that restarted no longer knows our Mcp-Session-Id (HTTP 404).
_SESSION_GONE = frozenset({"Session not found", "Session terminated"})
_T = TypeVar("_T")


class BackendRequests:
    name: str
    config: BackendConfig
    credentials: Credentials
    state: State
    wire: ModernHttpWire | None
    _header_bound_tools: frozenset[str]

    @property
    def is_modern(self) -> bool:
        raise NotImplementedError

    async def _ready_client(self) -> Client:
        raise NotImplementedError

    def _mark_broken(self) -> None:
        raise NotImplementedError

    def takes_lean_path(self, tool: str) -> bool:
        """Whether a plain tools/call of `tool` can go out as one raw POST (`x-mcp-header`
        tools need the SDK's Mcp-Param header mirroring)."""
        return self.wire is not None and self.state == "ready" and tool not in self._header_bound_tools

    async def forward_tool_call(
        self,
        params: dict[str, Any],
        *,
        caller_capabilities: dict[str, Any] | None,
        timeout: float | None = None,
        client_headers: Mapping[str, str] | None = None,
        caller_token: str | None = None,
    ) -> dict[str, Any]:
        """Relay a raw tools/call (params already carry the backend's tool name); the result
        dict comes back untouched. WireError carries a JSON-RPC error from the backend.
        `client_headers` (the caller's request headers) pass on as `pass_headers` allows;
        `caller_token` is what a `token_exchange` backend exchanges."""
        wire = self.wire
        if wire is None:
            raise BackendUnavailable(f"backend {self.name!r} is unavailable ({self.state})")
        headers = passed_headers(self.config.pass_headers, client_headers)
        headers.update(await self.credentials.headers(caller_token))
        try:
            return await wire.call_tool(
                params["name"],
                params,
                caller_capabilities=caller_capabilities,
                timeout=timeout or self.config.timeout,
                headers=headers,
            )
        except TimeoutError as exc:
            limit = timeout or self.config.timeout
            raise BackendUnavailable(f"backend {self.name!r} did not answer within {limit:g}s") from exc
        except (Http1Error, OSError, WireProtocolError) as exc:
            self._mark_broken()
            raise BackendUnavailable(f"backend {self.name!r} connection failed: {describe_error(exc)}") from exc

    async def _guard(self, call: Awaitable[_T], timeout: float | None = None) -> _T:
        """Turn connection-level failures into BackendUnavailable and schedule a reconnect.

        MCP errors the backend sent on purpose (invalid params, unknown method) pass through
        untouched: they are the backend's answer, not a broken connection.
        """
        try:
            return await call
        except MCPError as exc:
            if exc.error.code == types.CONNECTION_CLOSED or (
                exc.error.code == types.INVALID_REQUEST and exc.error.message in _SESSION_GONE
            ):
                self._mark_broken()
                raise BackendUnavailable(f"backend {self.name!r} closed the connection; reconnecting") from exc
            if exc.error.code == types.REQUEST_TIMEOUT:
                raise BackendUnavailable(
                    f"backend {self.name!r} did not answer within {timeout or self.config.timeout:g}s"
                ) from exc
            raise
        except _TRANSPORT_ERRORS as exc:
            self._mark_broken()
            raise BackendUnavailable(f"backend {self.name!r} connection failed: {describe_error(exc)}") from exc

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None,
        *,
        meta: dict[str, Any] | None = None,
        progress: ProgressFnT | None = None,
        timeout: float | None = None,
        input_responses: types.InputResponses | None = None,
        request_state: str | None = None,
    ) -> types.CallToolResult | types.InputRequiredResult | types.Result:
        client = await self._ready_client()
        return await self._guard(
            client.session.call_tool(  # type: ignore[misc]
                name,
                arguments,
                read_timeout_seconds=timeout or self.config.timeout,
                progress_callback=progress,
                meta=meta,  # type: ignore[arg-type]
                input_responses=input_responses,
                request_state=request_state,
                allow_input_required=True,
                allow_claimed=True,
            ),
            timeout,
        )

    async def get_prompt(
        self,
        name: str,
        arguments: dict[str, str] | None,
        *,
        meta: dict[str, Any] | None = None,
        input_responses: types.InputResponses | None = None,
        request_state: str | None = None,
    ) -> types.GetPromptResult | types.InputRequiredResult:
        client = await self._ready_client()
        return await self._guard(
            client.session.get_prompt(  # type: ignore[call-overload]
                name,
                arguments,
                meta=cast(types.RequestParamsMeta | None, meta),
                input_responses=input_responses,
                request_state=request_state,
                allow_input_required=True,
            )
        )

    async def read_resource(
        self,
        uri: str,
        *,
        meta: dict[str, Any] | None = None,
        input_responses: types.InputResponses | None = None,
        request_state: str | None = None,
    ) -> types.ReadResourceResult | types.InputRequiredResult:
        client = await self._ready_client()
        return await self._guard(
            client.session.read_resource(  # type: ignore[call-overload]
                uri,
                meta=cast(types.RequestParamsMeta | None, meta),
                input_responses=input_responses,
                request_state=request_state,
                allow_input_required=True,
            )
        )

    async def complete(
        self,
        ref: types.PromptReference | types.ResourceTemplateReference,
        argument: dict[str, str],
        context_arguments: dict[str, str] | None = None,
    ) -> types.CompleteResult:
        client = await self._ready_client()
        return await self._guard(client.session.complete(ref, argument, context_arguments))

    async def set_logging_level(self, level: types.LoggingLevel) -> None:
        """Handshake-era backends take the level per connection; 2026-07-28 ones per request."""
        client = await self._ready_client()
        if not self.is_modern and client.server_capabilities.logging is not None:
            await self._guard(client.session.set_logging_level(level))

    async def ping(self) -> None:
        client = await self._ready_client()
        await self._guard(client.session.send_ping())
