"""The lean path's HTTP/1.1 client against a real socket server on loopback that misbehaves on cue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from vmcp.backends.http1 import Http1Error, Http1Pool, OutcomeUnknown

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@dataclass
class Server:
    port: int
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    mode: str = "length"  # length | chunked | close | drop-idle | drop-after-read | huge


async def _handle(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    server.connections += 1
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
            )
            body = await reader.readexactly(length)
            server.requests.append(body)
            if server.mode == "drop-after-read" and len(server.requests) > 1:
                break  # read (and, say, executed) it, then went away without answering
            payload = b'{"echo":' + body + b"}"
            if server.mode == "huge":
                payload = b'{"echo":"' + b"x" * 200_000 + b'"}'
            if server.mode == "chunked":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
                for part in (payload[:5], payload[5:]):
                    writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                writer.write(b"0\r\n\r\n")
            else:
                extra = b"connection: close\r\n" if server.mode == "close" else b""
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + extra
                    + f"content-length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
            await writer.drain()
            if server.mode in ("close", "drop-idle"):
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server(port=0)
    listener = await asyncio.start_server(lambda r, w: _handle(state, r, w), "127.0.0.1", 0)
    state.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield state


async def test_keeps_one_connection_alive_across_posts(server: Server) -> None:
    pool = Http1Pool(f"http://127.0.0.1:{server.port}/mcp")
    for i in range(5):
        response = await pool.post(str(i).encode(), {"content-type": "application/json"}, 5)
        assert response.status == 200 and response.body == b'{"echo":%d}' % i
    assert server.connections == 1
    assert server.requests == [b"0", b"1", b"2", b"3", b"4"]
    pool.close()


async def test_reads_chunked_bodies(server: Server) -> None:
    server.mode = "chunked"
    pool = Http1Pool(f"http://127.0.0.1:{server.port}/mcp")
    response = await pool.post(b"123456789", {}, 5)
    assert response.body == b'{"echo":123456789}'
    assert (await pool.post(b"7", {}, 5)).body == b'{"echo":7}'
    assert server.connections == 1
    pool.close()


async def test_connection_close_is_honoured(server: Server) -> None:
    server.mode = "close"
    pool = Http1Pool(f"http://127.0.0.1:{server.port}/mcp")
    for i in range(3):
        assert (await pool.post(str(i).encode(), {}, 5)).body == b'{"echo":%d}' % i
    assert server.connections == 3
    pool.close()


async def test_a_kept_alive_connection_the_server_dropped_is_replaced(server: Server) -> None:
    """The backend closes idle connections (as uvicorn does after its keep-alive timeout) without
    saying so in the response: the next post must not fail because of it."""
    server.mode = "drop-idle"
    pool = Http1Pool(f"http://127.0.0.1:{server.port}/mcp")
    assert (await pool.post(b"1", {}, 5)).body == b'{"echo":1}'
    assert (await pool.post(b"2", {}, 5)).body == b'{"echo":2}'
    assert server.connections == 2
    assert server.requests == [b"1", b"2"], "no request was sent twice"
    pool.close()


async def test_a_request_the_backend_read_is_never_sent_again(server: Server) -> None:
    """A kept-alive connection that fails after the request was written: the backend may have
    executed it, so it is not resent on a fresh connection; the caller learns the outcome is unknown."""
    server.mode = "drop-after-read"
    pool = Http1Pool(f"http://127.0.0.1:{server.port}/mcp")
    assert (await pool.post(b"1", {}, 5)).body == b'{"echo":1}'
    with pytest.raises(OutcomeUnknown, match="after the request was sent"):
        await pool.post(b"2", {}, 5)
    assert server.requests == [b"1", b"2"], "the second request reached the backend exactly once"
    pool.close()


async def test_an_answer_over_the_size_cap_is_refused_unread(server: Server) -> None:
    server.mode = "huge"
    pool = Http1Pool(f"http://127.0.0.1:{server.port}/mcp", max_response=64 * 1024)
    with pytest.raises(OutcomeUnknown, match="larger than 65536 bytes"):
        await pool.post(b"1", {}, 5)
    pool.close()


async def test_refused_connection_is_an_http1_error(free_port: object) -> None:
    port = free_port()  # type: ignore[operator]
    pool = Http1Pool(f"http://127.0.0.1:{port}/mcp")
    with pytest.raises(Http1Error, match="cannot connect"):
        await pool.post(b"{}", {}, 5)


def test_rejects_urls_it_cannot_serve() -> None:
    with pytest.raises(ValueError):
        Http1Pool("ftp://example.test/x")
