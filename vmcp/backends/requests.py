"""What callers ask of a backend connection: tool calls (over the SDK session or the lean wire,
the connection's choice), prompts, resources, completion, log level and ping.

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
from pydantic import TypeAdapter

from vmcp.backends.common import BackendUnavailable, State, describe_error
from vmcp.backends.credentials import Credentials, passed_headers
from vmcp.backends.http1 import Http1Error
from vmcp.backends.wire import ModernHttpWire, WireError, WireProtocolError
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
_INPUT_RESPONSES: TypeAdapter[types.InputResponses] = TypeAdapter(types.InputResponses)


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

    async def call_tool(
        self,
        params: Mapping[str, Any],
        *,
        progress: ProgressFnT | None = None,
        streams: bool = False,
        caller_capabilities: Mapping[str, Any] | None = None,
        client_headers: Mapping[str, str] | None = None,
        caller_token: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """One tools/call. `params` are the backend's (its own tool name, the `_meta` it may see),
        in their JSON form.

        The transport is this connection's choice: one raw POST over the lean wire when the backend
        speaks 2026-07-28 over HTTP and nothing must stream back to the caller (no progress
        callback, no log lines wanted: `streams`), else the SDK session. Either way the answer is
        the result as the backend sent it, `MCPError` is the backend's own JSON-RPC error, and
        `BackendUnavailable` a failed connection. `client_headers` pass on as `pass_headers`
        allows; `caller_token` is what a `token_exchange` backend exchanges (it needs the wire: a
        per-request header)."""
        name = str(params["name"])
        if self.credentials.per_caller:
            if not self.takes_lean_path(name):
                raise BackendUnavailable(
                    f"backend {self.name!r} exchanges each caller's token, which needs a per-request header: "
                    "a 2026-07-28 streamable-HTTP backend (it is not one, or is down)"
                )
        elif progress is not None or streams or not self.takes_lean_path(name):
            return await self._call_over_session(name, params, progress, timeout)
        return await self._call_over_wire(name, params, caller_capabilities, client_headers, caller_token, timeout)

    async def _call_over_wire(
        self,
        name: str,
        params: Mapping[str, Any],
        caller_capabilities: Mapping[str, Any] | None,
        client_headers: Mapping[str, str] | None,
        caller_token: str | None,
        timeout: float | None,
    ) -> dict[str, Any]:
        wire = self.wire
        if wire is None:
            raise BackendUnavailable(f"backend {self.name!r} is unavailable ({self.state})")
        headers = passed_headers(self.config.pass_headers, client_headers)
        headers.update(await self.credentials.headers(caller_token))
        try:
            return await wire.call_tool(
                name,
                params,
                caller_capabilities=dict(caller_capabilities) if caller_capabilities is not None else None,
                timeout=timeout or self.config.timeout,
                headers=headers,
            )
        except WireError as exc:  # the backend's answer, raised as the SDK path raises it
            error = exc.error
            raise MCPError(
                code=int(error.get("code", types.INTERNAL_ERROR)),
                message=str(error.get("message", "")),
                data=error.get("data"),
            ) from None
        except TimeoutError as exc:
            limit = timeout or self.config.timeout
            raise BackendUnavailable(f"backend {self.name!r} did not answer within {limit:g}s") from exc
        except (Http1Error, OSError, WireProtocolError) as exc:
            self._mark_broken()
            raise BackendUnavailable(
                f"backend {self.name!r} connection failed: {describe_error(exc)}",
                f"backend {self.name!r} connection failed",
            ) from exc

    async def _call_over_session(
        self, name: str, params: Mapping[str, Any], progress: ProgressFnT | None, timeout: float | None
    ) -> dict[str, Any]:
        client = await self._ready_client()
        responses = params.get("inputResponses")
        result = await self._guard(
            client.session.call_tool(  # type: ignore[misc]
                name,
                params.get("arguments"),
                read_timeout_seconds=timeout or self.config.timeout,
                progress_callback=progress,
                meta=params.get("_meta") or None,
                input_responses=_INPUT_RESPONSES.validate_python(responses) if responses else None,
                request_state=params.get("requestState"),
                allow_input_required=True,
                allow_claimed=True,
            ),
            timeout,
        )
        return result.model_dump(by_alias=True, mode="json", exclude_none=True)

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
            raise BackendUnavailable(
                f"backend {self.name!r} connection failed: {describe_error(exc)}",
                f"backend {self.name!r} connection failed",
            ) from exc

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
