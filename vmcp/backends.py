"""The backend pool: one long-lived MCP connection per backend, shared by every caller.

Each backend gets a supervisor task that owns its `mcp.Client` (the SDK needs a client to
be opened and closed in the same task), lists what the backend offers, and reconnects with
backoff whenever the connection breaks. Callers from any task send requests over the shared
session concurrently; a call that finds the backend reconnecting waits for it (bounded by
`connect_timeout`) instead of failing, so a backend restart costs at most the one call that was
in flight when it died.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, cast

import anyio
import httpx2
import mcp_types as types
from anyio.abc import TaskGroup
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ResourceUpdated
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from vmcp.catalog import BackendListing
from vmcp.config import BackendConfig
from vmcp.http1 import Http1Error, Http1Pool
from vmcp.wire import ModernHttpWire, WireProtocolError

logger = logging.getLogger(__name__)

State = Literal["connecting", "ready", "down", "closed"]

ListingChanged = Callable[[str], Awaitable[None]]


class BackendEvents(Protocol):
    """What a backend sends vmcp outside the answer to a call: the façade relays it to clients."""

    async def log(self, backend: str, params: types.LoggingMessageNotificationParams) -> None: ...

    async def ask_client(self, backend: str, request: types.InputRequest) -> Any: ...

    async def resource_updated(self, backend: str, uri: str) -> None: ...


_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
    httpx2.TransportError,
    ConnectionError,
    OSError,
)
_LIST_PAGE_CAP = 50
_FIRST_RETRY = 0.2
_MAX_RETRY = 10.0
_STABLE_SECONDS = 1.0
# A handshake-era HTTP backend that restarted no longer knows our Mcp-Session-Id (HTTP 404).
_SESSION_GONE = frozenset({"Session not found", "Session terminated"})


def _package_version() -> str:
    try:
        return version("vmcp")
    except PackageNotFoundError:
        return "0.0.0"


_T = TypeVar("_T")
_LIST_CHANGED = (
    types.ToolListChangedNotification,
    types.PromptListChangedNotification,
    types.ResourceListChangedNotification,
)


CLIENT_INFO = types.Implementation(name="vmcp", version=_package_version())


class BackendUnavailable(Exception):
    """The backend cannot be reached now; the message says why, for an `isError` result."""


@dataclass(frozen=True)
class BackendStatus:
    name: str
    transport: str
    state: State
    protocol_version: str | None
    server_name: str | None
    tools: int
    last_error: str | None
    connected_since: float | None
    reconnects: int


_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(values: Mapping[str, str]) -> dict[str, str]:
    """`${NAME}` in backend headers and env values is read from vmcp's own environment when the
    connection is made, so tokens stay out of the config file (and out of `vmcp validate`)."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise BackendUnavailable(f"environment variable {name} is not set")
        return os.environ[name]

    return {key: _ENV_REFERENCE.sub(one, value) for key, value in values.items()}


def resolve_command(command: str) -> str:
    """A bare command is looked up next to this interpreter first (the venv that installed the
    published servers), then on PATH, so `command: mcp-server-time` works without activating it."""
    if "/" in command:
        return command
    beside = Path(sys.executable).parent / command
    if beside.exists():
        return str(beside)
    return shutil.which(command) or command


class BackendConnection:
    def __init__(
        self,
        config: BackendConfig,
        base_dir: Path,
        on_listing: ListingChanged | None = None,
        events: BackendEvents | None = None,
    ) -> None:
        self.config = config
        self.events = events
        self._tasks: TaskGroup | None = None
        self.name = config.name
        self._base_dir = base_dir
        self._on_listing = on_listing
        self._client: Client | None = None
        self._http: httpx2.AsyncClient | None = None
        self.wire: ModernHttpWire | None = None  # the lean tools/call path, when the backend allows it
        self._header_bound_tools: frozenset[str] = frozenset()
        self._subscriptions: set[str] = set()  # resource URIs clients follow through this backend
        self._listeners: dict[str, anyio.CancelScope] = {}
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

    # ------------------------------------------------------------------ supervision

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
                await _first_of(self._stop, self._wake)
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
                    client = await self._connect(stack)
                    self.listing = await self._list(client)
                    self.wire = await self._make_wire(client, stack)
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
                        self._tasks = group
                        group.start_soon(self._health_loop, client)
                        await self._follow_changes(client)
                        await _first_of(self._broken, self._stop)
                        group.cancel_scope.cancel()
                    self._tasks = None
                    self._listeners.clear()
            if deadline.cancelled_caught:
                self.last_error = f"no answer within connect_timeout ({self.config.connect_timeout:g}s)"
                logger.warning("backend %s: %s", self.name, self.last_error)
        except Exception as exc:
            self.last_error = _describe(exc)
            logger.warning("backend %s: %s", self.name, self.last_error)
        except BaseException:
            self._mark_closed()
            raise
        finally:
            self._client = None
            self.wire = None
            self._broken = anyio.Event()
        return ready

    async def _follow_changes(self, client: Client) -> None:
        """After (re)connecting: follow list changes of a 2026-07-28 backend (handshake-era ones
        send them as notifications) and re-establish every resource subscription."""
        caps = client.server_capabilities
        if client.protocol_version in MODERN_PROTOCOL_VERSIONS and self._tasks is not None:
            wanted = {
                "tools_list_changed": bool(caps.tools and caps.tools.list_changed),
                "prompts_list_changed": bool(caps.prompts and caps.prompts.list_changed),
                "resources_list_changed": bool(caps.resources and caps.resources.list_changed),
            }
            if any(wanted.values()):
                self._tasks.start_soon(self._listen, client, anyio.CancelScope(), wanted)
        for uri in sorted(self._subscriptions):
            try:
                await self._follow(client, uri)
            except Exception as exc:
                logger.warning("backend %s: re-subscribing %s failed: %s", self.name, uri, _describe(exc))

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
                        # `ping` is gone at 2026-07-28 (METHOD_NOT_FOUND); tools/list exists in both eras
                        await client.session.list_tools()
                    else:
                        await client.session.send_ping()
            except Exception as exc:  # any failure to answer means the connection is gone
                self.last_error = f"health check failed: {_describe(exc)}"
                logger.warning("backend %s: %s", self.name, self.last_error)
                self._mark_broken()
                return

    def _mark_broken(self) -> None:
        """Stop handing out the current client at once; new calls wait for the next one."""
        if self._client is not None:
            self._client = None
            self.wire = None
            self._set_state("connecting")
        self._broken.set()

    def _mark_closed(self) -> None:
        self.settled.set()
        self._set_state("closed")

    async def _connect(self, stack: AsyncExitStack) -> Client:
        config = self.config
        transport: Any
        if config.transport == "stdio":
            assert config.command is not None
            cwd = Path(config.cwd) if config.cwd else self._base_dir
            transport = StdioServerParameters(
                command=resolve_command(config.command),
                args=list(config.args),
                env=expand_env(config.env) or None,
                cwd=cwd if cwd.is_absolute() else self._base_dir / cwd,
            )
        elif config.transport == "streamable-http":
            assert config.url is not None
            http = create_mcp_http_client(
                headers=expand_env(config.headers) or None,
                timeout=httpx2.Timeout(config.connect_timeout, read=max(config.timeout, 300.0)),
            )
            await stack.enter_async_context(http)
            self._http = http
            transport = streamable_http_client(config.url, http_client=http)
        else:
            assert config.url is not None
            transport = sse_client(
                config.url, headers=expand_env(config.headers) or None, timeout=config.connect_timeout
            )
        client = Client(
            transport,
            mode=config.protocol,
            read_timeout_seconds=config.timeout,
            cache=None,
            client_info=CLIENT_INFO,
            logging_callback=self._on_log,
            sampling_callback=self._on_sampling,
            elicitation_callback=self._on_elicitation,
            list_roots_callback=self._on_list_roots,
            message_handler=self._on_message,
        )
        await stack.enter_async_context(client)
        return client

    # ------------------------------------------------------------------ backend-initiated traffic
    # The SDK runs these in the context of the client request they arrived for (see vmcp.relay).

    async def _on_log(self, params: types.LoggingMessageNotificationParams) -> None:
        if self.events is not None:
            await self.events.log(self.name, params)

    async def _ask(self, request: types.InputRequest) -> Any:
        if self.events is None:
            return types.ErrorData(code=types.INVALID_REQUEST, message="vmcp has no client to ask")
        return await self.events.ask_client(self.name, request)

    async def _on_sampling(self, context: Any, params: types.CreateMessageRequestParams) -> Any:
        return await self._ask(types.CreateMessageRequest(params=params))

    async def _on_elicitation(self, context: Any, params: types.ElicitRequestParams) -> Any:
        return await self._ask(types.ElicitRequest(params=params))

    async def _on_list_roots(self, context: Any) -> Any:
        return await self._ask(types.ListRootsRequest())

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            if self.events is not None:
                await self.events.resource_updated(self.name, str(message.params.uri))
        elif isinstance(message, _LIST_CHANGED) and self._tasks is not None:
            # re-list outside the receive loop: the listing's answers arrive through it
            self._tasks.start_soon(self._refresh_quietly)

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh_listing()
        except Exception as exc:
            logger.warning("backend %s: re-listing after list_changed failed: %s", self.name, _describe(exc))

    async def _make_wire(self, client: Client, stack: AsyncExitStack) -> ModernHttpWire | None:
        if self.config.transport != "streamable-http":
            return None
        if client.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            return None
        assert self.config.url is not None
        http = Http1Pool(self.config.url)
        stack.callback(http.close)
        return ModernHttpWire(
            http,
            client.protocol_version,
            CLIENT_INFO.model_dump(exclude_none=True),
            expand_env(self.config.headers),
        )

    def takes_lean_path(self, tool: str) -> bool:
        """Whether a plain tools/call of `tool` can go out as one raw POST (`x-mcp-header`
        tools need the SDK's Mcp-Param header mirroring)."""
        return self.wire is not None and self.state == "ready" and tool not in self._header_bound_tools

    async def forward_tool_call(
        self, params: dict[str, Any], *, caller_capabilities: dict[str, Any] | None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Relay a raw tools/call (params already carry the backend's tool name); the result
        dict comes back untouched. WireError carries a JSON-RPC error from the backend."""
        wire = self.wire
        if wire is None:
            raise BackendUnavailable(f"backend {self.name!r} is unavailable ({self.state})")
        try:
            return await wire.call_tool(
                params["name"], params, caller_capabilities=caller_capabilities, timeout=timeout or self.config.timeout
            )
        except TimeoutError as exc:
            limit = timeout or self.config.timeout
            raise BackendUnavailable(f"backend {self.name!r} did not answer within {limit:g}s") from exc
        except (Http1Error, OSError, WireProtocolError) as exc:
            self._mark_broken()
            raise BackendUnavailable(f"backend {self.name!r} connection failed: {_describe(exc)}") from exc

    async def _list(self, client: Client) -> BackendListing:
        caps = client.server_capabilities
        tools: list[types.Tool] = []
        prompts: list[types.Prompt] = []
        resources: list[types.Resource] = []
        templates: list[types.ResourceTemplate] = []
        if caps.tools is not None:
            tools = await _all_pages(client.list_tools, "tools")
        if caps.prompts is not None:
            prompts = await _all_pages(client.list_prompts, "prompts")
        if caps.resources is not None:
            resources = await _all_pages(client.list_resources, "resources")
            templates = await _all_pages(client.list_resource_templates, "resource_templates")
        self._header_bound_tools = frozenset(
            t.name for t in tools if "x-mcp-header" in json.dumps(t.input_schema, separators=(",", ":"))
        )
        return BackendListing(self.name, tuple(tools), tuple(prompts), tuple(resources), tuple(templates))

    async def refresh_listing(self) -> None:
        client = await self._ready_client()
        self.listing = await self._guard(self._list(client))
        if self._on_listing is not None:
            await self._on_listing(self.name)

    def close(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ calls

    async def _ready_client(self) -> Client:
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
        raise BackendUnavailable(f"backend {self.name!r} is unavailable ({self.state}){reason}")

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
            raise BackendUnavailable(f"backend {self.name!r} connection failed: {_describe(exc)}") from exc

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None,
        *,
        meta: dict[str, Any] | None = None,
        progress: ProgressFnT | None = None,
        timeout: float | None = None,
        input_responses: types.InputResponses | None = None,
        request_state: str | None = None,
    ) -> types.CallToolResult | types.InputRequiredResult | types.Result:
        client = await self._ready_client()
        return await self._guard(
            client.session.call_tool(  # type: ignore[misc]
                name,
                arguments,
                read_timeout_seconds=timeout or self.config.timeout,
                progress_callback=progress,
                meta=meta,  # type: ignore[arg-type]
                input_responses=input_responses,
                request_state=request_state,
                allow_input_required=True,
                allow_claimed=True,
            ),
            timeout,
        )

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

    @property
    def is_modern(self) -> bool:
        """Whether the live connection speaks the 2026-07-28 revision."""
        client = self._client
        return client is not None and client.protocol_version in MODERN_PROTOCOL_VERSIONS

    async def set_logging_level(self, level: types.LoggingLevel) -> None:
        """Handshake-era backends take the level per connection; 2026-07-28 ones per request."""
        client = await self._ready_client()
        if not self.is_modern and client.server_capabilities.logging is not None:
            await self._guard(client.session.set_logging_level(level))

    async def subscribe(self, uri: str) -> None:
        """Follow a resource. Kept across reconnections; a 2026-07-28 backend is followed through a
        `subscriptions/listen` stream, a handshake-era one with resources/subscribe."""
        client = await self._ready_client()
        self._subscriptions.add(uri)
        try:
            await self._guard(self._follow(client, uri))
        except BaseException:
            self._subscriptions.discard(uri)
            raise

    async def unsubscribe(self, uri: str) -> None:
        self._subscriptions.discard(uri)
        listener = self._listeners.pop(uri, None)
        if listener is not None:
            listener.cancel()
            return
        client = await self._ready_client()
        if not self.is_modern:
            await self._guard(client.session.unsubscribe_resource(uri))

    async def _follow(self, client: Client, uri: str) -> None:
        if client.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            await client.session.subscribe_resource(uri)  # type: ignore[deprecated]
            return
        if uri in self._listeners or self._tasks is None:
            return
        scope = anyio.CancelScope()
        self._listeners[uri] = scope
        await self._tasks.start(self._listen, client, scope, {"resource_subscriptions": [uri]})

    async def _listen(
        self,
        client: Client,
        scope: anyio.CancelScope,
        what: dict[str, Any],
        *,
        task_status: Any = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Relay a 2026-07-28 backend's change events (resource updates, list changes)."""
        with scope:
            try:
                async with client.listen(**what) as subscription:
                    task_status.started()
                    async for event in subscription:
                        if isinstance(event, ResourceUpdated):
                            if self.events is not None:
                                await self.events.resource_updated(self.name, event.uri)
                        elif self._tasks is not None:
                            self._tasks.start_soon(self._refresh_quietly)
            except Exception as exc:
                logger.info("backend %s: change stream %s ended: %s", self.name, what, _describe(exc))
                with contextlib.suppress(RuntimeError):  # already started: the error is only logged
                    task_status.started()

    async def ping(self) -> None:
        client = await self._ready_client()
        await self._guard(client.session.send_ping())

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
        )


class BackendPool(AbstractAsyncContextManager["BackendPool"]):
    """All backends of one configuration, connected concurrently and supervised for their lifetime."""

    def __init__(
        self, backends: Sequence[BackendConfig], base_dir: Path, on_listing: ListingChanged | None = None
    ) -> None:
        self.connections = {b.name: BackendConnection(b, base_dir, on_listing) for b in backends}
        self._group: TaskGroup | None = None

    def relay_to(self, events: BackendEvents) -> None:
        """Send backend-initiated traffic (logs, sampling, elicitation, updates) to `events`."""
        for connection in self.connections.values():
            connection.events = events

    async def __aenter__(self) -> BackendPool:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        for connection in self.connections.values():
            self._group.start_soon(connection.run, name=f"backend:{connection.name}")
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        for connection in self.connections.values():
            connection.close()
        assert self._group is not None
        return await self._group.__aexit__(*exc_info)

    def listen(self, on_listing: ListingChanged) -> None:
        """Call `on_listing(backend)` whenever a backend (re)connects or is re-listed."""
        for connection in self.connections.values():
            connection._on_listing = on_listing

    def get(self, name: str) -> BackendConnection:
        connection = self.connections.get(name)
        if connection is None:
            raise BackendUnavailable(f"no backend named {name!r}")
        return connection

    async def wait_settled(self, timeout: float) -> None:
        """Wait until every backend has either connected or failed its first attempt."""
        with anyio.move_on_after(timeout):
            for connection in self.connections.values():
                await connection.settled.wait()

    def listings(self) -> list[BackendListing]:
        return [c.listing for c in self.connections.values() if c.listing is not None and c.state == "ready"]

    def statuses(self) -> list[BackendStatus]:
        return [c.status() for c in self.connections.values()]


async def _all_pages(fetch: Callable[..., Awaitable[Any]], attribute: str) -> list[Any]:
    items: list[Any] = []
    cursor: str | None = None
    for _ in range(_LIST_PAGE_CAP):
        page = await fetch(cursor=cursor, cache_mode="refresh")
        items.extend(getattr(page, attribute))
        cursor = page.next_cursor
        if not cursor:
            break
    return items


async def _first_of(*events: anyio.Event) -> None:
    async with anyio.create_task_group() as group:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            group.cancel_scope.cancel()

        for event in events:
            group.start_soon(wait, event)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        leaves = exc.exceptions
        return "; ".join(_describe(e) for e in leaves[:3])
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, MCPError) else text
