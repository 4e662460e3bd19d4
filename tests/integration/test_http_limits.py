"""The façade's HTTP server holds against clients that hold connections: a request's head has
`server.header_timeout` to arrive (slowloris gets 408 and a closed connection, on a new connection
and on a kept-alive one), and `server.max_connections` bounds what is open at once (503 at once
beyond it, served again when they close). Raw sockets, because an HTTP client library would not
misbehave this way."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

HEADER_TIMEOUT = 1.5
MAX_CONNECTIONS = 6


@pytest.fixture(scope="module")
def served(module_procs: Any) -> Any:
    return module_procs.vmcp(
        {
            "server": {
                "host": "127.0.0.1",
                "port": 0,
                "header_timeout": f"{HEADER_TIMEOUT}s",
                "max_connections": MAX_CONNECTIONS,
            },
            "backends": [],
        },
        filename="http-limits.yaml",
    )


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.settimeout(30)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def _read_one_response(sock: socket.socket) -> bytes:
    """One whole response, head and body (by its content-length): the body may come in a later
    packet than the head, and must not be mistaken for the start of the next answer."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:] if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _trickle_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Sends one header line every 0.3 s (never the blank line ending the head) until the server
    closes the connection; what it answered and how long that took."""
    start = time.monotonic()
    sock.settimeout(0.3)
    answer = b""
    line = 0
    while time.monotonic() - start < limit:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            line += 1
            try:
                sock.sendall(f"X-Slow-{line}: a\r\n".encode())
            except OSError:
                break
            continue
        except OSError:
            break
        if not chunk:
            break
        answer += chunk
    return answer, time.monotonic() - start


def test_a_head_that_trickles_in_gets_408_and_the_connection_closed(served: Any) -> None:
    with _connect(served.port) as sock:
        sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        answer, took = _trickle_until_closed(sock, limit=60)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert took < 60, "the server kept the slow connection open"
    assert httpx.get(f"{served.base}/healthz", timeout=10).status_code == 200


def test_the_deadline_also_holds_for_the_next_request_on_a_kept_alive_connection(served: Any) -> None:
    with _connect(served.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = _read_one_response(sock)
        assert first.startswith(b"HTTP/1.1 200"), first
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # the next request starts, its head never ends
        answer, took = _trickle_until_closed(sock, limit=60)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert took < 60


def test_a_head_sent_in_pieces_within_the_deadline_is_served(served: Any) -> None:
    with _connect(served.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        time.sleep(HEADER_TIMEOUT / 3)
        sock.sendall(b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer


def test_beyond_max_connections_a_request_gets_503_and_is_served_once_they_close(served: Any) -> None:
    holders = [_connect(served.port) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in holders:  # each has begun a request, so the server has surely accepted it
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        time.sleep(0.2)
        with _connect(served.port) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            refused = _read_until_closed(sock)
    finally:
        for sock in holders:
            sock.close()
    assert refused.startswith(b"HTTP/1.1 503"), refused

    def served_again() -> bool:
        return httpx.get(f"{served.base}/healthz", timeout=10).status_code == 200

    deadline = time.monotonic() + 30
    while not served_again():
        assert time.monotonic() < deadline, "the server did not serve again after the connections closed"
        time.sleep(0.1)
