"""The handshake-era session kept beside a 2026-07-28 connection, for handshake-era callers.

A backend written the usual SDK way asks its client things through its session (`ctx.elicit`,
`ctx.session.create_message`, `list_roots`). That works only on a 2025-11-25 handshake session: a
2026-07-28 request has no back-channel, and the backend's SDK fails the tool. So under
`protocol: auto`, an HTTP backend that speaks both eras is reached in the era of the caller whose
request it serves: 2026-07-28 callers over the main connection (and the lean wire), handshake-era
callers over this session, where the backend's questions arrive mid-call and are relayed to them.

One session per backend, shared by every handshake-era caller: a question the backend asks
arrives on the response stream of the call it belongs to, and the relay hands it to that call's
client, as it does for a backend that speaks only the handshake era. So the cost is bounded by
construction: at most one extra HTTP session per dual-era backend, opened on the first
handshake-era request, closed after `IDLE_SECONDS` without one. A backend that refuses the
handshake is asked again only after `RETRY_SECONDS`; meanwhile its callers take the main
connection, as before. stdio backends are one process, one session: they keep the era `auto`
chose (set `protocol: legacy` for a stdio server whose tools ask the SDK's session way).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

import anyio
import mcp_types as types
from anyio.abc import TaskGroup
from mcp import Client

from vmcp.backends.common import describe_error

logger = logging.getLogger(__name__)

IDLE_SECONDS = 300.0
RETRY_SECONDS = 60.0

OpenClient = Callable[[AsyncExitStack], Awaitable[Client]]


class HandshakeSession:
    """The shared handshake-era session of one backend connection, opened on demand.

    Lives inside one life of the main connection (its task runs in that connection's task group,
    so a reconnection closes it too); the SDK client is opened and closed by that one task."""

    def __init__(self, backend: str, open_client: OpenClient, connect_timeout: float) -> None:
        self.backend = backend
        self._open_client = open_client
        self._connect_timeout = connect_timeout
        self._client: Client | None = None
        self._opening: anyio.Event | None = None  # set when the attempt in progress has an outcome
        self._broken: anyio.Event | None = None  # the open session's: set to close it at once
        self._refused_until = -math.inf
        self._last_used = time.monotonic()
        self._in_use = 0
        self.level: types.LoggingLevel | None = None  # the latest client's level, set on every session opened

    @property
    def state(self) -> str:
        """For `/status`: open, closed (none yet, or idle), or refused (the backend speaks no handshake)."""
        if self._client is not None:
            return "open"
        return "refused" if time.monotonic() < self._refused_until else "closed"

    async def client(self, tasks: TaskGroup | None) -> Client | None:
        """The open session, opening it if needed (one attempt shared by every caller); None when
        the backend refuses the handshake, or the main connection is down (`tasks` is None)."""
        if self._client is None:
            if tasks is None or time.monotonic() < self._refused_until:
                return None
            if self._opening is None:
                opening = anyio.Event()
                try:
                    tasks.start_soon(self._run, opening)
                except RuntimeError:  # the connection's life is ending: nothing to open on
                    return None
                self._opening = opening
            # _run sets it whatever happens; the bound only guards callers against a task that
            # never ran (its group cancelled before it started)
            opening = self._opening
            with anyio.move_on_after(self._connect_timeout + 1.0):
                await opening.wait()
        self._last_used = time.monotonic()
        return self._client

    def using(self) -> _InUse:
        """Held around a call, so an idle close never cuts one short."""
        return _InUse(self)

    def mark_broken(self) -> None:
        """The session failed under a call: closed now, and the next handshake-era call opens a
        fresh one."""
        self._client = None
        self._opening = None
        if self._broken is not None:
            self._broken.set()

    async def set_level(self, level: types.LoggingLevel) -> None:
        self.level = level
        if self._client is not None:
            await self._send_level(self._client)

    async def _send_level(self, client: Client) -> None:
        """The latest client's log level, on a session whose backend logs."""
        if self.level is not None and client.server_capabilities.logging is not None:
            await client.session.set_logging_level(self.level)

    async def _run(self, opened: anyio.Event) -> None:
        broken = anyio.Event()
        try:
            # the deadline spans the client's whole life (the SDK's task groups must not outlive a
            # scope opened inside them) and is lifted once it is open
            with anyio.CancelScope(deadline=anyio.current_time() + self._connect_timeout) as deadline:
                async with AsyncExitStack() as stack:
                    try:
                        client = await self._open_client(stack)
                        await self._send_level(client)
                    except Exception as exc:
                        self._refused(describe_error(exc))
                        return
                    deadline.deadline = math.inf
                    await self._serve(client, broken, opened)
            if deadline.cancelled_caught:
                self._refused(f"no answer within connect_timeout ({self._connect_timeout:g}s)")
        finally:
            if self._opening is opened:
                self._opening = None
            if self._broken is broken:  # cancelled with the main connection
                self._client, self._broken = None, None
            opened.set()

    def _refused(self, why: str) -> None:
        self._refused_until = time.monotonic() + RETRY_SECONDS
        logger.info(
            "backend %s: no handshake-era session (%s); handshake-era callers use the 2026-07-28 connection for %.0fs",
            self.backend,
            why,
            RETRY_SECONDS,
        )

    async def _serve(self, client: Client, broken: anyio.Event, opened: anyio.Event) -> None:
        """Hand the session out until it idles or breaks; then no caller may take it any more."""
        self._client, self._broken = client, broken
        self._last_used = time.monotonic()
        logger.info("backend %s: handshake-era session open (%s)", self.backend, client.protocol_version)
        opened.set()
        await self._serve_until_idle(broken)
        if self._broken is broken:
            self._client, self._broken = None, None
        if self._opening is opened:
            self._opening = None
        logger.info("backend %s: handshake-era session closed", self.backend)

    async def _serve_until_idle(self, broken: anyio.Event) -> None:
        while not broken.is_set():
            idle_for = time.monotonic() - self._last_used
            if self._in_use == 0 and idle_for >= IDLE_SECONDS:
                return
            with anyio.move_on_after(max(1.0, IDLE_SECONDS - idle_for)):
                await broken.wait()


class _InUse:
    def __init__(self, session: HandshakeSession) -> None:
        self._session = session

    def __enter__(self) -> None:
        self._session._in_use += 1

    def __exit__(self, *exc: object) -> None:
        self._session._in_use -= 1
        self._session._last_used = time.monotonic()
