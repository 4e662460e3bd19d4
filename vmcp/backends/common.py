"""What the backend pool's modules share: the errors, states and events of a backend connection,
and small helpers (environment references, command lookup, pagination, error text).
"""

from __future__ import annotations

import functools
import os
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal, Protocol

import anyio
import httpx2
import mcp_types as types
from mcp.shared.exceptions import MCPError

State = Literal["connecting", "ready", "down", "closed"]

ListingChanged = Callable[[str], Awaitable[None]]

_LIST_PAGE_CAP = 50


class BackendEvents(Protocol):
    """What a backend sends vmcp outside the answer to a call: the façade relays it to clients."""

    async def log(self, backend: str, params: types.LoggingMessageNotificationParams) -> None: ...

    async def ask_client(self, backend: str, request: types.InputRequest) -> Any: ...

    async def resource_updated(self, backend: str, uri: str) -> None: ...


def package_version() -> str:
    try:
        return version("vmcp")
    except PackageNotFoundError:
        return "0.0.0"


CLIENT_INFO = types.Implementation(name="vmcp", version=package_version())


class BackendUnavailable(Exception):
    """The backend cannot be reached now. The message says why, for the operator (logs, `/status`);
    `public` is what a caller is told (an `isError` result): no internal exception text, file or URL."""

    def __init__(self, message: str, public: str | None = None) -> None:
        super().__init__(message)
        self.public = public or message

    @classmethod
    def outcome_unknown(cls, backend: str, what: str, detail: str) -> BackendUnavailable:
        """A call that may have reached the backend and came back without a usable answer: the
        caller must learn that it may have run, and that vmcp did not send it again. `what` is
        said to the caller; `detail` (exception text) goes only to the operator."""
        return cls(
            f"backend {backend!r} gave no valid answer to the call ({what}): {detail}",
            f"backend {backend!r} gave no valid answer to the call ({what}): whether it ran is unknown, "
            "and it was not sent again",
        )


class RateLimited(BackendUnavailable):
    """The backend's rate limit (`limits.per_backend`) has no call left now; the message says
    which limit and when to try again."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, message)
        self.retry_after = retry_after


# `limits.per_backend`: the refusal of one more call to the backend (what to say, and seconds until
# a call is admitted again), or None to admit it
Admission = Callable[[str], Awaitable[tuple[str, float] | None]]


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
    # handshake-era callers' own session to a dual-era backend: open, closed or refused (None: not kept)
    handshake_session: str | None = None


_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(values: Mapping[str, str]) -> dict[str, str]:
    """`${NAME}` in backend headers and env values is read from vmcp's own environment when the
    connection is made, so tokens stay out of the config file (and out of `vmcp validate`)."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise BackendUnavailable(
                f"environment variable {name} is not set", "a credential of this backend is not configured"
            )
        return os.environ[name]

    return {key: _ENV_REFERENCE.sub(one, value) for key, value in values.items()}


async def all_pages(fetch: Callable[..., Awaitable[Any]], attribute: str) -> list[Any]:
    items: list[Any] = []
    cursor: str | None = None
    for _ in range(_LIST_PAGE_CAP):
        page = await fetch(cursor=cursor, cache_mode="refresh")
        items.extend(getattr(page, attribute))
        cursor = page.next_cursor
        if not cursor:
            break
    return items


async def first_of(*events: anyio.Event) -> None:
    async with anyio.create_task_group() as group:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            group.cancel_scope.cancel()

        for event in events:
            group.start_soon(wait, event)


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        leaves = exc.exceptions
        return "; ".join(describe_error(e) for e in leaves[:3])
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, MCPError) else text


@functools.cache
def shared_tls_context() -> ssl.SSLContext:
    """The one TLS client context of every backend connection (the SDK client's and the lean
    wire's): building one loads the CA bundle, tens of milliseconds each, which at fifty backends
    was most of the façade's start. A context is made to be shared by connections."""
    return httpx2.create_ssl_context()


def without_meta_key(result: dict[str, Any], key: str) -> dict[str, Any]:
    """`result` without `_meta[key]` (and without `_meta` when nothing else is left in it); the
    result itself is not changed."""
    meta = result.get("_meta")
    if isinstance(meta, dict) and key in meta:
        rest = {name: value for name, value in meta.items() if name != key}
        result = {name: value for name, value in result.items() if name != "_meta"}
        if rest:
            result["_meta"] = rest
    return result
