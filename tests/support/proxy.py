"""A TCP proxy in front of a backend that lets every exchange through, except the one whose request
carries a marker: for that one it forwards the request (the backend reads and executes it) and then
does to the answer what the marker asks for. The faults are those of a real network and of broken
servers: the answer lost, garbage instead of JSON, an event stream cut in the middle, an HTML error
page, an answer to some other request, or no answer at all."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading

# a request whose bytes contain `tamper-<fault>-` gets that fault
MARKER = re.compile(rb"tamper-(drop|garbage|truncated-sse|html-500|wrong-id|hang)-")
FAULTS = ("drop", "garbage", "truncated-sse", "html-500", "wrong-id", "hang")


def _response(status: str, content_type: str, body: bytes) -> bytes:
    # `connection: close`, because the proxy closes the connection after it: a client that kept it
    # for its next request could lose that one to the close, which no server that says keep-alive
    # does to it (a race the suite met under load, not a fault under test)
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


_ANSWERS = {
    "garbage": _response("200 OK", "application/json", b"\x00\xffthis is not JSON {{{"),
    "html-500": _response(
        "500 Internal Server Error", "text/html", b"<html><body><h1>Internal Server Error</h1></body></html>"
    ),
    "wrong-id": _response(
        "200 OK",
        "application/json",
        b'{"jsonrpc":"2.0","id":"nobody-asked-this","result":{"content":[{"type":"text","text":"forged"}]}}',
    ),
    # an event stream that starts a message and stops in the middle of it, connection closed
    "truncated-sse": (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        b'2a\r\nevent: message\ndata: {"jsonrpc":"2.0","id":\r\n'
    ),
}


class TamperingProxy:
    """Forwards TCP from a port of its own to `target_port` on 127.0.0.1, in a thread."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.tampered: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the proxy did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = int(server.sockets[0].getsockname()[1])
        started.set()
        self._loop.run_forever()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        backend_reader, backend_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        fault: list[str] = []

        async def upstream() -> None:
            while data := await client_reader.read(65536):
                found = MARKER.search(data)
                if found and not fault:
                    fault.append(found.group(1).decode())
                backend_writer.write(data)
                await backend_writer.drain()

        async def downstream() -> None:
            while data := await backend_reader.read(65536):
                if fault:  # the backend has the request and answers; the caller gets something else
                    kind = fault[0]
                    self.tampered[kind] = self.tampered.get(kind, 0) + 1
                    if kind == "hang":
                        await asyncio.Event().wait()  # until the caller gives up and closes
                    if kind in _ANSWERS:
                        client_writer.write(_ANSWERS[kind])
                        with contextlib.suppress(ConnectionError):
                            await client_writer.drain()
                    client_writer.transport.abort()
                    return
                client_writer.write(data)
                await client_writer.drain()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        backend_writer.close()
        client_writer.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
