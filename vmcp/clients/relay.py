"""What travels from a backend back to the client whose call caused it.

Backends talk to vmcp over one shared connection each, so a log line, a sampling or elicitation
request, or an `InputRequiredResult` must be matched to the client call that triggered it. The
SDK runs a backend's callbacks in the context of the request they arrived for (the POST whose
response stream carried them), so the calling request is found through a context variable set
around every forwarded call. Subscriptions and list-changed notifications are not tied to a call:
they fan out to the client sessions that asked for them.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import anyio
import mcp_types as types
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.subscriptions import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ToolsListChanged,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

logger = logging.getLogger(__name__)

_LEVELS: tuple[types.LoggingLevel, ...] = (
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
)
MAX_INPUT_ROUNDS = 10

_calling: ContextVar[ServerRequestContext[Any] | None] = ContextVar("vmcp_calling_request", default=None)
# Marks calls made on nobody's behalf (a composite step's, from a worker sharing the façade's
# backend pool in `vmcp dev`): what a backend asks or logs during them reaches no client.
NOBODY: Any = object()


# Calls in flight per backend. A stdio backend's messages are all read by one task started at
# connect time, so they carry no caller context: when exactly one call to that backend is in
# flight, it is the caller; with several, vmcp cannot tell and refuses rather than guess.
_in_flight: dict[str, list[ServerRequestContext[Any]]] = collections.defaultdict(list)


@contextlib.contextmanager
def calling(ctx: ServerRequestContext[Any], backend: str | None = None) -> Any:
    """Mark `ctx` as the client request on whose behalf traffic with `backend` now happens."""
    token = _calling.set(ctx)
    if backend is not None:
        _in_flight[backend].append(ctx)
    try:
        yield
    finally:
        _calling.reset(token)
        if backend is not None:
            _in_flight[backend].remove(ctx)


def on_nobodys_behalf(backend: str) -> Any:
    """Mark traffic with `backend` as made for no client (a composite step's): nothing the backend
    asks or logs meanwhile may reach a client whose own call to it happens to be running."""
    return calling(NOBODY, backend)


def caller(backend: str) -> ServerRequestContext[Any] | None:
    """The client request a backend's message belongs to (see `_in_flight`); None for a call made
    on nobody's behalf, or when it cannot be told."""
    ctx = _calling.get()
    if ctx is NOBODY:
        return None
    if ctx is not None:
        return ctx
    flying = _in_flight.get(backend)
    return flying[0] if flying and len(flying) == 1 and flying[0] is not NOBODY else None


def is_modern(ctx: ServerRequestContext[Any]) -> bool:
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def connection_of(ctx: ServerRequestContext[Any]) -> Connection:
    """The client connection behind a request. The SDK builds a new `ServerSession` per request;
    per-client state (log level, subscriptions) must hang on the connection it wraps, which the
    SDK does not expose publicly (tests/integration cover this reach into it)."""
    connection: Connection = ctx.session._connection
    return connection


class Relay:
    """Per-façade relay state: client log levels, resource subscriptions, live sessions."""

    def __init__(self) -> None:
        self._log_levels: weakref.WeakKeyDictionary[Connection, types.LoggingLevel] = weakref.WeakKeyDictionary()
        self._clients: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._subscribers: dict[str, weakref.WeakSet[Connection]] = {}
        self._listening: collections.Counter[str] = collections.Counter()  # 2026-07-28 listen streams per URI
        # 2026-07-28 clients get changes on `subscriptions/listen` streams, fed from this bus
        self.bus = InMemorySubscriptionBus()

    # ------------------------------------------------------------------ sessions

    def seen(self, ctx: ServerRequestContext[Any]) -> None:
        """Remember a handshake-era session, to tell it when the catalogue changes."""
        if not is_modern(ctx):
            self._clients.add(connection_of(ctx))

    async def announce(self, tools: bool, prompts: bool, resources: bool) -> None:
        for event, changed in (
            (ToolsListChanged(), tools),
            (PromptsListChanged(), prompts),
            (ResourcesListChanged(), resources),
        ):
            if changed:
                await self.bus.publish(event)
        for client in list(self._clients):
            with contextlib.suppress(Exception):  # a client that went away must not stop the others
                if tools:
                    await client.send_tool_list_changed()
                if prompts:
                    await client.send_prompt_list_changed()
                if resources:
                    await client.send_resource_list_changed()

    # ------------------------------------------------------------------ logging

    def set_level(self, ctx: ServerRequestContext[Any], level: types.LoggingLevel) -> None:
        self._log_levels[connection_of(ctx)] = level

    def level_of(self, ctx: ServerRequestContext[Any]) -> types.LoggingLevel | None:
        return self._log_levels.get(connection_of(ctx))

    async def log(self, backend: str, params: types.LoggingMessageNotificationParams) -> None:
        ctx = caller(backend)
        if ctx is None:
            logger.debug("log from %s outside any call dropped: %s", backend, params.data)
            return
        wanted = self.level_of(ctx)
        if not is_modern(ctx) and (wanted is None or _LEVELS.index(params.level) < _LEVELS.index(wanted)):
            return
        with contextlib.suppress(Exception):
            await ctx.session.send_log_message(  # type: ignore[deprecated]
                params.level, params.data, params.logger, related_request_id=ctx.request_id
            )

    # ------------------------------------------------------------------ sampling, elicitation, roots

    async def ask_client(self, backend: str, request: types.InputRequest) -> Any:
        """Put a backend's question to the calling client; ErrorData when there is no one to ask."""
        ctx = caller(backend)
        if ctx is None:
            several = len(_in_flight.get(backend, ())) > 1
            reason = "while several client calls to it were running" if several else "outside any client call"
            return types.ErrorData(code=types.INVALID_REQUEST, message=f"{request.method} from {backend} {reason}")
        return await ask(ctx, request)

    # ------------------------------------------------------------------ subscriptions

    def _wanted(self, uri: str) -> bool:
        return bool(self._subscribers.get(uri)) or self._listening[uri] > 0

    def subscribe(self, ctx: ServerRequestContext[Any], uri: str) -> bool:
        """Record a subscription; True when it is the first one for this URI (follow it upstream)."""
        first = not self._wanted(uri)
        self._subscribers.setdefault(uri, weakref.WeakSet()).add(connection_of(ctx))
        return first

    def unsubscribe(self, ctx: ServerRequestContext[Any], uri: str) -> bool:
        """Drop a subscription; True when nobody follows the URI any more (stop upstream)."""
        subscribers = self._subscribers.get(uri)
        if subscribers is None:
            return False
        subscribers.discard(connection_of(ctx))
        if not subscribers:
            del self._subscribers[uri]
        return not self._wanted(uri)

    def listen(self, uri: str) -> bool:
        """A listen stream follows `uri`; True when it is the first follower."""
        first = not self._wanted(uri)
        self._listening[uri] += 1
        return first

    def unlisten(self, uri: str) -> bool:
        self._listening[uri] -= 1
        if self._listening[uri] <= 0:
            del self._listening[uri]
        return not self._wanted(uri)

    async def resource_updated(self, backend: str, uri: str) -> None:
        if self._listening[uri] > 0:
            await self.bus.publish(ResourceUpdated(uri))
        for client in list(self._subscribers.get(uri, ())):
            with contextlib.suppress(Exception):  # a client that went away must not stop the others
                await client.send_resource_updated(uri)


async def ask(ctx: ServerRequestContext[Any], request: types.InputRequest) -> Any:
    """Send a sampling / elicitation / roots request to the client behind `ctx`, mid-call."""
    if is_modern(ctx):
        # A 2026-07-28 connection has no server-to-client requests. (A 2026-07-28 backend asks
        # through an InputRequiredResult instead, which reaches such a client untouched.)
        return types.ErrorData(
            code=types.INVALID_REQUEST,
            message=f"a 2025-11-25 backend sent {request.method} mid-call, which vmcp cannot pass to a "
            "2026-07-28 client; call this tool from a 2025-11-25 session to answer it",
        )
    result_type: Any
    if isinstance(request, types.CreateMessageRequest):
        result_type = types.CreateMessageResultWithTools if request.params.tools else types.CreateMessageResult
    elif isinstance(request, types.ElicitRequest):
        result_type = types.ElicitResult
    else:
        result_type = types.ListRootsResult
    try:
        return await ctx.session.send_request(
            request,  # type: ignore[arg-type]
            result_type,
            metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
        )
    except MCPError as exc:
        return exc.error
    except Exception as exc:  # no back-channel (2026-07-28 caller), client gone, bad answer
        return types.ErrorData(
            code=types.INVALID_REQUEST, message=f"the calling client cannot answer {request.method}: {exc}"
        )


async def resolve_input_required(
    ctx: ServerRequestContext[Any],
    first: types.InputRequiredResult,
    retry: Callable[[types.InputResponses | None, str | None], Awaitable[Any]],
) -> Any:
    """For a handshake-era caller, answer a 2026-07-28 backend's `InputRequiredResult` by asking the
    caller mid-call (elicitation/create, sampling/createMessage, roots/list), then retry the backend
    with the answers, until it returns a final result."""
    current: Any = first
    for _ in range(MAX_INPUT_ROUNDS):
        if not isinstance(current, types.InputRequiredResult):
            return current
        responses: dict[str, Any] = {}
        for key, request in (current.input_requests or {}).items():
            answer = await ask(ctx, request)
            if isinstance(answer, types.ErrorData):
                raise MCPError.from_error_data(answer)
            responses[key] = answer
        if not responses:
            await anyio.sleep(0.05)  # state-only round: the backend is still working
        current = await retry(responses or None, current.request_state)
    if isinstance(current, types.InputRequiredResult):
        raise MCPError(code=types.INTERNAL_ERROR, message=f"backend asked for input more than {MAX_INPUT_ROUNDS} times")
    return current
