"""A minimal HTTP/1.1 client for the lean path: keep-alive POSTs to one backend endpoint.

The lean path sends one small JSON POST per forwarded call. General-purpose clients spend more
CPU building and checking each request than vmcp spends on everything else in a call (measured:
httpx 0.4 ms, aiohttp 0.13 ms, this 0.04 ms per request), and on a shared machine that CPU is
latency. Responses are parsed by httptools (the parser uvicorn uses), so chunked bodies, header
folding and keep-alive semantics follow a maintained implementation; this module only pools
connections and writes requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import anyio
import httptools

from vmcp.backends.common import shared_tls_context

_MAX_IDLE = 64
_READ_CHUNK = 65536
# A connection idle this long is not reused: servers close idle keep-alive connections (uvicorn
# after 5 s), and one closed just as a request is written would leave that request's fate unknown.
_MAX_IDLE_SECONDS = 4.0


class Http1Error(Exception):
    """The exchange failed at the HTTP level (connection refused or dropped, bad response)."""


class OutcomeUnknown(Http1Error):
    """The request was written, then the connection failed before the answer: the backend may have
    executed it. Never resent — a tool call reaches a backend at most once. `public` says what
    happened in vmcp's own words (no OS or parser text), for the caller."""

    def __init__(self, message: str, public: str | None = None) -> None:
        super().__init__(message)
        self.public = public or message


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class _Parsing:
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    complete: bool = False

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = time.monotonic()

    async def usable(self) -> bool:
        """Whether a kept-alive connection can carry another request: not idle too long, and
        nothing has arrived on it since its last answer (a close, or stray bytes)."""
        if time.monotonic() - self.idle_since > _MAX_IDLE_SECONDS:
            return False
        await asyncio.sleep(0)  # let the event loop read what already arrived (a FIN above all)
        # (StreamReader keeps no public view of its buffer: anything buffered between answers
        # means the connection is out of step)
        buffered: bytes = getattr(self.reader, "_buffer", b"")
        return not self.writer.is_closing() and not self.reader.at_eof() and not buffered

    def close(self) -> None:
        self.writer.close()

    async def exchange(self, request: bytes, max_response: int) -> tuple[Response, bool]:
        """Send one request, read one response: (response, whether the connection may be reused).
        Once the request is written, a failure is `OutcomeUnknown`; so is an answer larger than
        `max_response` bytes (read no further: a backend must not exhaust vmcp's memory)."""
        self.writer.write(request)
        parsing = _Parsing()
        parser = httptools.HttpResponseParser(parsing)
        received = 0
        while not parsing.complete:
            if received > max_response:
                raise OutcomeUnknown(
                    f"the answer is larger than {max_response} bytes (backends[].max_response_size)",
                    "an answer larger than the backend's max_response_size",
                )
            try:
                data = await self.reader.read(_READ_CHUNK)
            except OSError as exc:
                raise OutcomeUnknown(
                    f"the connection failed after the request was sent: {exc}", "the connection failed"
                ) from None
            if not data:
                raise OutcomeUnknown(
                    "the backend closed the connection after the request was sent, without answering",
                    "it closed the connection without answering",
                )
            received += len(data)
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as exc:
                raise OutcomeUnknown(f"invalid HTTP response: {exc}", "an invalid HTTP response") from None
        response = Response(parser.get_status_code(), parsing.headers, b"".join(parsing.chunks))
        # (httptools' should_keep_alive() reads False once a message is complete: decide here)
        connection = parsing.headers.get("connection", "").lower()
        if parser.get_http_version() == "1.0":
            return response, connection == "keep-alive"
        return response, connection != "close"


class Http1Pool:
    """Kept-alive connections to one origin, for POSTs to one path."""

    def __init__(self, url: str, max_response: int = 8 * 1024 * 1024) -> None:
        self.max_response = max_response
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = shared_tls_context() if parts.scheme == "https" else None
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = f"[{self._host}]" if ":" in self._host else self._host  # an IPv6 literal
        default_port = self._port == (443 if parts.scheme == "https" else 80)
        self._host_header = host if default_port else f"{host}:{self._port}"
        self._idle: list[_Connection] = []

    async def _connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(self._host, self._port, ssl=self._ssl)
        except OSError as exc:
            raise Http1Error(f"cannot connect to {self._host}:{self._port}: {exc.strerror or exc}") from None
        return _Connection(reader, writer)

    async def post(self, body: bytes, headers: Mapping[str, str], timeout: float) -> Response:
        head = [f"POST {self._path} HTTP/1.1", f"host: {self._host_header}", f"content-length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        with anyio.fail_after(timeout):
            while self._idle:
                connection = self._idle.pop()
                if await connection.usable():
                    # no retry once written: the backend may have executed it (`OutcomeUnknown`)
                    return await self._exchange(connection, request)
                connection.close()  # closed or stale while idle: nothing was sent on it
            return await self._exchange(await self._connect(), request)

    async def _exchange(self, connection: _Connection, request: bytes) -> Response:
        try:
            response, reusable = await connection.exchange(request, self.max_response)
        except BaseException:
            connection.close()
            raise
        if reusable and len(self._idle) < _MAX_IDLE:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()
        return response

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
