"""A tool call reaches a backend at most once. A TCP proxy between vmcp and the fault server lets
every exchange through, except that after forwarding a request carrying a marker it drops the
connection instead of relaying the answer: the backend has read — and executed — the call, the
caller's answer is lost. vmcp must not send it again (on the lean path, on a reused kept-alive
connection; in the handshake era, through the SDK's session), and must tell the caller the outcome
is unknown. The backend's own tally proves one execution."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from mcp import Client

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

MARKER = b"drop-after-read"


class DroppingProxy:
    """Forwards TCP to a backend; drops the client side of an exchange whose request had MARKER."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.dropped = 0
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        started.wait(10)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        started.set()
        self._loop.run_forever()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        backend_reader, backend_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        doomed = asyncio.Event()

        async def upstream() -> None:
            while data := await client_reader.read(65536):
                if MARKER in data:
                    doomed.set()
                backend_writer.write(data)
                await backend_writer.drain()

        async def downstream() -> None:
            while data := await backend_reader.read(65536):
                if doomed.is_set():
                    self.dropped += 1
                    client_writer.transport.abort()  # the answer never arrives
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


@pytest.fixture(scope="module")
def proxied(module_procs: Any) -> Iterator[tuple[Any, DroppingProxy]]:
    fault = module_procs.fault_http("fault")
    proxy = DroppingProxy(int(fault.url.split(":")[2].split("/")[0]))
    try:
        yield fault, proxy
    finally:
        proxy.close()


@pytest.mark.parametrize("era", ["2026-07-28", "legacy"])
async def test_a_call_whose_answer_was_lost_ran_once_and_the_caller_is_told(
    module_procs: Any, proxied: tuple[Any, DroppingProxy], era: str
) -> None:
    fault, proxy = proxied
    url = f"http://127.0.0.1:{proxy.port}/mcp"
    vmcp = module_procs.vmcp(
        {
            "server": {"host": "127.0.0.1", "port": 0},
            "backends": [{"name": "fault", "transport": "streamable-http", "url": url, "protocol": era}],
        },
        filename=f"at-most-once-{era}.yaml",
    )
    label = f"{MARKER.decode()}-{era}-{uuid.uuid4().hex[:6]}"
    async with Client(vmcp.url, mode=era) as client:  # type: ignore[arg-type]
        warm = await client.call_tool("fault_echo", {"text": "keep the connection alive"})
        assert not warm.is_error, warm
        lost = await client.call_tool("fault_tally", {"label": label})
    assert lost.is_error, lost
    text = str(lost.content[0].text)  # type: ignore[union-attr]
    assert "unknown" in text or "closed the connection" in text, text
    async with Client(fault.url) as direct:
        counted = await direct.call_tool("count", {})
    assert (counted.structured_content or {})["tallies"].get(label) == 1  # executed once, never resent
    assert proxy.dropped >= 1
