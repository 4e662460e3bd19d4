"""The HTTP server the façade runs on: uvicorn, with the limits a public endpoint needs.

Uvicorn closes an idle kept-alive connection, but it gives a client unlimited time to send a
request's head: a client that trickles one header byte every few seconds (slowloris) holds a
connection, and enough of them hold the server. `HeadTimeoutProtocol` gives every request's head
(request line and headers) `server.header_timeout` to arrive, on a new connection and between
requests on a kept-alive one, then answers 408 and closes. `server.max_connections` bounds the
connections and requests in progress at once (uvicorn's `limit_concurrency`: beyond it a new
request gets 503 at once instead of queueing without bound). Both `vmcp serve` and `vmcp dev`
build their server here, so the two never differ.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from vmcp.config.models import ServerConfig


def _timeout_response() -> bytes:
    body = b"the request's headers did not arrive in time\n"
    head = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    return head + body


TIMEOUT_RESPONSE = _timeout_response()


class HeadTimeoutProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol with a deadline for each request's head."""

    header_timeout: float = 10.0  # set per server by `http_protocol`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        # the first bytes of a request after an earlier one on this connection start its clock
        if self._head_deadline is None and (self.cycle is None or self.cycle.response_complete):
            self._arm_head_deadline()
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._disarm_head_deadline()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # a client that sends nothing more is uvicorn's idle keep-alive timeout's to close
        self._disarm_head_deadline()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_deadline = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:  # no response of ours has begun
            self.transport.write(TIMEOUT_RESPONSE)
        self.transport.close()


def http_protocol(server: ServerConfig) -> type[HeadTimeoutProtocol]:
    """The protocol class for one server: the timeout is a class attribute because uvicorn
    builds each connection's protocol itself."""
    return type("VmcpHttpProtocol", (HeadTimeoutProtocol,), {"header_timeout": server.header_timeout})


def uvicorn_config(app: Any, server: ServerConfig, *, host: str, port: int, **extra: Any) -> uvicorn.Config:
    """The one uvicorn configuration of the façade (`vmcp serve` and `vmcp dev`)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=http_protocol(server),
        limit_concurrency=server.max_connections,
        log_level="warning",
        lifespan="on",
        access_log=False,
        proxy_headers=False,  # vmcp reads no client addresses; it saves a middleware per request
        **extra,
    )
