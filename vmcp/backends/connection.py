"""One backend connection: supervised, reconnected, shared by every caller.

Each backend gets a supervisor task that owns its `mcp.Client` (the SDK needs a client to
be opened and closed in the same task), lists what the backend offers, and reconnects with
backoff whenever the connection breaks. Callers from any task send requests over the shared
session concurrently; a call that finds the backend reconnecting waits for it (bounded by
`connect_timeout`) instead of failing, so a backend restart costs at most the one call that was
in flight when it died.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TypeVar

import anyio
import httpx2
import mcp_types as types
from anyio.abc import TaskGroup
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from vmcp.backends.awaited_tasks import awaitable
from vmcp.backends.changes import ChangeFollowing
from vmcp.backends.common import (
    BackendEvents,
    BackendStatus,
    BackendUnavailable,
    ListingChanged,
    State,
    all_pages,
    describe_error,
    first_of,
)
from vmcp.backends.credentials import Credentials
from vmcp.backends.handshake import HandshakeSession
from vmcp.backends.requests import BackendRequests
from vmcp.backends.transport import open_client, open_wire
from vmcp.backends.wire import ModernHttpWire
from vmcp.catalog.aggregate import TASKS_EXTENSION, BackendListing
from vmcp.config.models import BackendConfig

logger = logging.getLogger(__name__)

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
_FIRST_RETRY = 0.2
_MAX_RETRY = 10.0
_STABLE_SECONDS = 1.0


def _sdk_stand_in(error: MCPError) -> str | None:
    """What went wrong, when `error` is not the backend's answer but what the SDK's streamable-HTTP
    client puts in its place: an HTTP error status without a JSON-RPC error, a body it could not
    parse or larger than vmcp lets it read, an event over the size limit
    (mcp/client/streamable_http.py)."""
    if error.code == types.INTERNAL_ERROR and error.message == "Server returned an error response":
        return "an HTTP error"
    if error.code == types.PARSE_ERROR and error.message.startswith("Failed to parse JSON response"):
        if "max_response_size" in error.message:  # vmcp's own cap (transport.CappedTransport)
            return "an answer larger than the backend's max_response_size"
        return "a body that is not a JSON-RPC response"
    if error.code == types.CONNECTION_CLOSED and "Server-sent event exceeded" in error.message:
        return "an event larger than the backend's max_response_size"
    return None


class BackendConnection:
    """Supervises one backend; holds `requests` (what callers ask of it) and `changes` (what it says
    on its own, and what vmcp follows on it)."""

    def __init__(
        self,
        config: BackendConfig,
        base_dir: Path,
        on_listing: ListingChanged | None = None,
        events: BackendEvents | None = None,
    ) -> None:
        self.config = config
        self.tasks: TaskGroup | None = None
        self.name = config.name
        self._base_dir = base_dir
        self.credentials = Credentials(config.name, config.auth, base_dir)
        self._on_listing = on_listing
        self._client: Client | None = None
        self.wire: ModernHttpWire | None = None  # the lean tools/call path, when the backend allows it
        # handshake-era callers' session to a backend that speaks both eras (`vmcp.backends.handshake`)
        self.handshake: HandshakeSession | None = None
        self.header_bound_tools: frozenset[str] = frozenset()
        self.awaited_task_tools: frozenset[str] = frozenset()  # `vmcp.backends.awaited_tasks`
        self._broken = anyio.Event()
        self._stop = anyio.Event()
        self._wake = anyio.Event()
        self._changed = anyio.Event()  # set (and replaced) on every state change
        self._last_failure = -math.inf
        self.state: State = "connecting"
        self.last_error: str | None = None
        self.listing: BackendListing | None = None
        self.connected_since: float | None = None
        self.reconnects = 0
        self.settled = anyio.Event()  # set once the first connection attempt has succeeded or failed
        self.requests = BackendRequests(self)
        self.changes = ChangeFollowing(self, events)

    def _set_state(self, state: State) -> None:
        self.state = state
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def run(self) -> None:
        """Connect, serve, reconnect; returns only when `close()` is called."""
        delay = _FIRST_RETRY
        while not self._stop.is_set():
            self._set_state("connecting")
            started = time.monotonic()
            was_ready = await self._serve_one_connection()
            self.settled.set()
            if self._stop.is_set():
                break
            if was_ready and time.monotonic() - started > _STABLE_SECONDS:
                # a connection that served for a while and broke: reconnect at once, no backoff
                delay = _FIRST_RETRY
                self.reconnects += 1
                continue
            if not was_ready:
                self._last_failure = time.monotonic()
            self.reconnects += 1
            self._wake = anyio.Event()
            self._set_state("down")
            # back off, but a call arriving meanwhile (or close()) starts the next attempt at once
            with anyio.move_on_after(delay):
                await first_of(self._stop, self._wake)
            delay = min(delay * 2, _MAX_RETRY)
        self._mark_closed()

    async def _serve_one_connection(self) -> bool:
        """One connection's life: connect, list, serve until broken or stopped. True if it got ready."""
        ready = False
        try:
            # The deadline scope spans the client's whole life (the SDK's task groups must not
            # outlive a scope opened inside them); it is lifted once connected.
            with anyio.CancelScope(deadline=anyio.current_time() + self.config.connect_timeout) as deadline:
                async with AsyncExitStack() as stack:
                    client = await open_client(self.config, self._base_dir, stack, self.changes, self.credentials)
                    self.listing = await self._list(client)
                    self.wire = open_wire(self.config, client, stack)
                    self.handshake = self._handshake_beside(client)
                    deadline.deadline = math.inf
                    self._client = client
                    self.last_error = None
                    self.connected_since = time.time()
                    ready = True
                    self._set_state("ready")
                    self.settled.set()
                    logger.info(
                        "backend %s connected (%s, %d tools)",
                        self.name,
                        client.protocol_version,
                        len(self.listing.tools),
                    )
                    if self._on_listing is not None:
                        await self._on_listing(self.name)
                    async with anyio.create_task_group() as group:
                        self.tasks = group
                        group.start_soon(self._health_loop, client)
                        await self.changes.follow(client)
                        await first_of(self._broken, self._stop)
                        group.cancel_scope.cancel()
                    self.tasks = None
                    self.changes.connection_lost()
            if deadline.cancelled_caught:
                self.last_error = f"no answer within connect_timeout ({self.config.connect_timeout:g}s)"
                logger.warning("backend %s: %s", self.name, self.last_error)
        except Exception as exc:
            self.last_error = describe_error(exc)
            logger.warning("backend %s: %s", self.name, self.last_error)
        except BaseException:
            self._mark_closed()
            raise
        finally:
            self._client = None
            self.wire = None
            self.handshake = None
            self.tasks = None  # also when the connection's task group ended in an error
            self._broken = anyio.Event()
        return ready

    def _handshake_beside(self, client: Client) -> HandshakeSession | None:
        """Under `protocol: auto`, an HTTP backend reached in the 2026-07-28 era may also speak the
        handshake era: handshake-era callers get a session in their own era, opened when one calls."""
        if self.config.protocol != "auto" or self.config.transport != "streamable-http":
            return None
        if client.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            return None

        async def open_handshake(stack: AsyncExitStack) -> Client:
            return await open_client(
                self.config, self._base_dir, stack, self.changes, self.credentials, protocol="legacy"
            )

        return HandshakeSession(self.name, open_handshake, self.config.connect_timeout)

    async def _health_loop(self, client: Client) -> None:
        """Ping every `health_interval`: a backend that stopped answering is reconnected (and its
        calls fail fast meanwhile) even when no call is there to notice."""
        interval = self.config.health_interval
        if interval <= 0:
            return
        while True:
            await anyio.sleep(interval)
            try:
                with anyio.fail_after(min(self.config.timeout, 10.0)):
                    if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
                        # `ping` is gone at 2026-07-28 (METHOD_NOT_FOUND); `server/discover` is its
                        # smallest request (a tools/list, as before, parsed a backend's every tool
                        # each time: at 50 backends x 100 tools, 5,000 tool models every interval)
                        await client.session.send_discover(client.protocol_version)
                    else:
                        await client.session.send_ping()
            except Exception as exc:  # any failure to answer means the connection is gone
                self.last_error = f"health check failed: {describe_error(exc)}"
                logger.warning("backend %s: %s", self.name, self.last_error)
                self.mark_broken()
                return

    def mark_broken(self) -> None:
        """Stop handing out the current client at once; new calls wait for the next one."""
        if self._client is not None:
            self._client = None
            self.wire = None
            self._set_state("connecting")
        self._broken.set()

    def _mark_closed(self) -> None:
        self.settled.set()
        self._set_state("closed")

    async def _list(self, client: Client) -> BackendListing:
        caps = client.server_capabilities
        tools: Sequence[types.Tool] = ()
        prompts: list[types.Prompt] = []
        resources: list[types.Resource] = []
        templates: list[types.ResourceTemplate] = []
        if caps.tools is not None:
            tools, self.awaited_task_tools = awaitable(client, await all_pages(client.list_tools, "tools"))
        if caps.prompts is not None:
            prompts = await all_pages(client.list_prompts, "prompts")
        if caps.resources is not None:
            resources = await all_pages(client.list_resources, "resources")
            templates = await all_pages(client.list_resource_templates, "resource_templates")
        self.header_bound_tools = frozenset(
            t.name for t in tools if "x-mcp-header" in json.dumps(t.input_schema, separators=(",", ":"))
        )
        tasks = client.protocol_version in MODERN_PROTOCOL_VERSIONS and TASKS_EXTENSION in (caps.extensions or {})
        return BackendListing(self.name, tuple(tools), tuple(prompts), tuple(resources), tuple(templates), tasks)

    async def refresh_listing(self) -> None:
        client = await self.ready_client()
        self.listing = await self.guard(self._list(client))
        if self._on_listing is not None:
            await self._on_listing(self.name)

    def close(self) -> None:
        self._stop.set()

    async def ready_client(self) -> Client:
        """The live client, waiting (bounded by connect_timeout) for a reconnection in progress.

        A circuit breaker: while the backend is down, a call triggers one immediate reconnection
        attempt and waits for its outcome, but within a second of a failed attempt calls fail
        fast with the last error instead of piling up.
        """
        client = self._client
        if client is not None and self.state == "ready":
            return client
        asked = time.monotonic()
        with anyio.move_on_after(self.config.connect_timeout):
            while True:
                client = self._client
                if client is not None and self.state == "ready":
                    return client
                if self.state == "closed":
                    raise BackendUnavailable(f"backend {self.name!r} is shut down")
                changed = self._changed
                if self.state == "down":
                    if self._last_failure > asked:
                        break  # an attempt made since this call arrived failed: answer now
                    self._wake.set()  # end the back-off: attempt now, and share it with other callers
                await changed.wait()
        reason = f": {self.last_error}" if self.last_error else ""
        raise BackendUnavailable(
            f"backend {self.name!r} is unavailable ({self.state}){reason}",
            f"backend {self.name!r} is unavailable ({self.state})",
        )

    async def guard(
        self,
        call: Awaitable[_T],
        timeout: float | None = None,
        *,
        acts: bool = False,
        broken: Callable[[], None] | None = None,
    ) -> _T:
        """Turn connection-level failures into BackendUnavailable and schedule a reconnect.

        MCP errors the backend sent on purpose (invalid params, unknown method) pass through
        untouched: they are the backend's answer, not a broken connection. `acts`: the request
        may change something (a tool call), so a connection lost under it leaves its outcome
        unknown, and the caller is told so (it is never sent again). `broken`: what to close
        when the call went over another session than the main one (the handshake session).
        """
        mark_broken = broken or self.mark_broken
        try:
            return await call
        except MCPError as exc:
            what = _sdk_stand_in(exc) if acts else None
            if what is not None:
                raise BackendUnavailable.outcome_unknown(self.name, what, exc.error.message) from exc
            if exc.error.code == types.CONNECTION_CLOSED or (
                exc.error.code == types.INVALID_REQUEST and exc.error.message in _SESSION_GONE
            ):
                mark_broken()
                lost = f"backend {self.name!r} closed the connection"
                raise BackendUnavailable(
                    f"{lost}; reconnecting",
                    f"{lost} during the call: whether it ran is unknown, and it was not sent again" if acts else None,
                ) from exc
            if exc.error.code == types.REQUEST_TIMEOUT:
                raise BackendUnavailable(
                    f"backend {self.name!r} did not answer within {timeout or self.config.timeout:g}s"
                ) from exc
            raise
        except _TRANSPORT_ERRORS as exc:
            mark_broken()
            raise BackendUnavailable(
                f"backend {self.name!r} connection failed: {describe_error(exc)}",
                f"backend {self.name!r} connection failed",
            ) from exc

    @property
    def is_modern(self) -> bool:
        """Whether the live connection speaks the 2026-07-28 revision."""
        client = self._client
        return client is not None and client.protocol_version in MODERN_PROTOCOL_VERSIONS

    def status(self) -> BackendStatus:
        client = self._client
        info = client.server_info if client is not None and self.state == "ready" else None
        return BackendStatus(
            name=self.name,
            transport=self.config.transport,
            state=self.state,
            protocol_version=client.protocol_version if client is not None and self.state == "ready" else None,
            server_name=info.name if info is not None else None,
            tools=len(self.listing.tools) if self.listing else 0,
            last_error=self.last_error,
            connected_since=self.connected_since,
            reconnects=self.reconnects,
            handshake_session=self.handshake.state if self.handshake is not None else None,
        )
