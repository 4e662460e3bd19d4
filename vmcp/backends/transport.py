"""How vmcp opens a backend connection: the SDK client for its transport, and the lean wire."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Protocol

import httpx2
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from vmcp.backends.common import CLIENT_INFO, expand_env, shared_tls_context
from vmcp.backends.credentials import Credentials, CredentialsAuth
from vmcp.backends.http1 import Http1Pool
from vmcp.backends.wire import ModernHttpWire
from vmcp.config.files import resolve_command
from vmcp.config.models import BackendConfig


class ClientCallbacks(Protocol):
    """Where a backend's own requests and notifications go (`vmcp.backend_changes`)."""

    async def on_log(self, params: types.LoggingMessageNotificationParams) -> None: ...

    async def on_sampling(self, context: Any, params: types.CreateMessageRequestParams) -> Any: ...

    async def on_elicitation(self, context: Any, params: types.ElicitRequestParams) -> Any: ...

    async def on_list_roots(self, context: Any) -> Any: ...

    async def on_message(self, message: Any) -> None: ...


class ResponseTooLarge(httpx2.StreamError):
    """A backend's answer is larger than `backends[].max_response_size`; the rest is not read."""


class _CappedBody(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in self._inner:
            size += len(chunk)
            if size > self._limit:
                raise ResponseTooLarge(f"the answer is larger than {self._limit} bytes (backends[].max_response_size)")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class CappedTransport(httpx2.AsyncBaseTransport):
    """The SDK client's HTTP transport, with a bound on a response body that is not an event
    stream: a backend cannot make the façade hold an answer of any size in memory."""

    def __init__(self, limit: int) -> None:
        self._inner = httpx2.AsyncHTTPTransport(verify=shared_tls_context())
        self._limit = limit

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            assert isinstance(response.stream, httpx2.AsyncByteStream)
            response.stream = _CappedBody(response.stream, self._limit)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


async def open_client(
    config: BackendConfig,
    base_dir: Path,
    stack: AsyncExitStack,
    callbacks: ClientCallbacks,
    credentials: Credentials,
    protocol: str | None = None,
) -> Client:
    """Connect to one backend (entered on `stack`), its traffic going to `callbacks`; in the
    era `protocol` says (default: the backend's `protocol` setting)."""
    protocol = protocol or config.protocol
    transport: Any
    if config.transport == "stdio":
        assert config.command is not None
        cwd = Path(config.cwd) if config.cwd else base_dir
        transport = StdioServerParameters(
            command=resolve_command(config.command),
            args=list(config.args),
            env=expand_env(config.env) or None,
            cwd=cwd if cwd.is_absolute() else base_dir / cwd,
        )
    elif config.transport == "streamable-http":
        assert config.url is not None
        http = httpx2.AsyncClient(
            headers=expand_env(config.headers) or None,
            timeout=httpx2.Timeout(config.connect_timeout, read=max(config.timeout, 300.0)),
            auth=CredentialsAuth(credentials) if config.auth is not None else None,
            transport=CappedTransport(config.max_response_size),
        )
        await stack.enter_async_context(http)
        # the SDK bounds each event of a stream itself; CappedTransport bounds a JSON answer
        transport = streamable_http_client(config.url, http_client=http, max_sse_event_size=config.max_response_size)
    else:
        assert config.url is not None
        transport = sse_client(
            config.url,
            headers=expand_env(config.headers) or None,
            timeout=config.connect_timeout,
            auth=CredentialsAuth(credentials) if config.auth is not None else None,
        )
    client = Client(
        transport,
        mode=protocol,  # type: ignore[arg-type]
        read_timeout_seconds=config.timeout,
        cache=None,
        client_info=CLIENT_INFO,
        logging_callback=callbacks.on_log,
        sampling_callback=callbacks.on_sampling,
        elicitation_callback=callbacks.on_elicitation,
        list_roots_callback=callbacks.on_list_roots,
        message_handler=callbacks.on_message,
    )
    await stack.enter_async_context(client)
    if protocol in MODERN_PROTOCOL_VERSIONS:
        # a pinned version connects without asking the server anything, so the client knows no
        # capabilities (and vmcp would list nothing): ask once, as `auto` does
        # (`discover()` would return the placeholder the pin installed)
        discovered = await client.session.send_discover(protocol)
        client.session.adopt(types.DiscoverResult.model_validate(discovered))
    return client


def open_wire(config: BackendConfig, client: Client, stack: AsyncExitStack) -> ModernHttpWire | None:
    """The lean tools/call path to a 2026-07-28 streamable-HTTP backend, or None."""
    if config.transport != "streamable-http":
        return None
    if client.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return None
    assert config.url is not None
    http = Http1Pool(config.url, max_response=config.max_response_size)
    stack.callback(http.close)
    return ModernHttpWire(
        http,
        client.protocol_version,
        CLIENT_INFO.model_dump(exclude_none=True),
        expand_env(config.headers),
    )
