"""How a forwarded request and its answer are adjusted on the way through vmcp: which `_meta`
travels on, how progress comes back, and whose identity the answer carries."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, TypeVar

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.shared.dispatcher import ProgressFnT
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    LOG_LEVEL_META_KEY,
    PROTOCOL_VERSION_META_KEY,
)

from vmcp.backends.common import without_meta_key
from vmcp.backends.pool import BackendConnection
from vmcp.clients.relay import Relay, is_modern
from vmcp.ops import telemetry

logger = logging.getLogger(__name__)

PROGRESS_TOKEN = "progressToken"
SERVER_INFO_KEY = "io.modelcontextprotocol/serverInfo"
# vmcp's own `_meta` keys (a composite step's idempotency key, a run's id): only vmcp sets them
# on what it sends a backend; a caller who sends one is not passed through (it could otherwise
# make a backend believe a call is a step of some run, or a retry of one).
VMCP_META_PREFIX = "io.vmcp/"
# The caller's envelope describes its connection to vmcp, not vmcp's to the backend (the SDK
# client stamps its own); a handshake-era backend rejects a request that carries one.
_NOT_FORWARDED = frozenset(
    {"progress_token", PROGRESS_TOKEN, PROTOCOL_VERSION_META_KEY, CLIENT_INFO_META_KEY, CLIENT_CAPABILITIES_META_KEY}
)
_ResultT = TypeVar("_ResultT", bound=types.Result)


def error_result(message: str) -> dict[str, Any]:
    """A tool's `isError` result, in the JSON form every answer of the pipeline takes."""
    return {"content": [{"type": "text", "text": message}], "isError": True, "resultType": "complete"}


def without_backend_identity(result: dict[str, Any]) -> dict[str, Any]:
    """Drop the backend's serverInfo stamp so the client sees vmcp's own (the runner, or the lean
    path, adds it)."""
    return without_meta_key(result, SERVER_INFO_KEY)


def model_without_backend_identity(result: _ResultT) -> _ResultT:
    """`without_backend_identity` for a result the SDK client returned as a model."""
    meta = result.meta
    if meta and SERVER_INFO_KEY in meta:
        rest = {k: v for k, v in meta.items() if k != SERVER_INFO_KEY}
        return result.model_copy(update={"meta": rest or None})
    return result


def has_progress_token(meta: Mapping[str, Any] | None) -> bool:
    return bool(meta) and meta.get("progress_token", meta.get(PROGRESS_TOKEN)) is not None  # type: ignore[union-attr]


def forward_meta(meta: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The caller's `_meta` minus its progress token (the backend gets a token of the SDK's own,
    whose notifications are relayed back under the caller's), its protocol envelope and any key
    of vmcp's own."""
    forwarded = {
        k: v for k, v in (meta or {}).items() if k not in _NOT_FORWARDED and not k.startswith(VMCP_META_PREFIX)
    }
    return telemetry.inject(forwarded) or None  # the trace goes on from vmcp's span, when tracing is on


def progress_relay(ctx: ServerRequestContext[Any]) -> ProgressFnT:
    async def relay(progress: float, total: float | None, message: str | None) -> None:
        try:
            await ctx.session.report_progress(progress, total, message)
        except Exception:  # a client that went away must not fail the backend call
            logger.debug("progress relay failed", exc_info=True)

    return relay


def backend_meta(
    relay: Relay, ctx: ServerRequestContext[Any] | None, meta: Mapping[str, Any] | None, connection: BackendConnection
) -> dict[str, Any] | None:
    """The `_meta` a backend gets: the caller's, less its envelope; a 2026-07-28 backend also
    gets a handshake-era caller's log level as the per-request opt-in."""
    forwarded = forward_meta(meta) or {}
    if connection.is_modern:
        level = relay.level_of(ctx) if ctx is not None else None
        if level is not None and ctx is not None and not is_modern(ctx):
            forwarded[LOG_LEVEL_META_KEY] = level
    else:
        forwarded.pop(LOG_LEVEL_META_KEY, None)
    return forwarded or None


def wants_log(relay: Relay, ctx: ServerRequestContext[Any] | None, meta: Mapping[str, Any] | None) -> bool:
    """Whether the caller wants this call's log notifications (then the call needs the SDK client,
    which delivers them; the lean wire drops them)."""
    if ctx is None:
        return bool(meta) and LOG_LEVEL_META_KEY in meta  # type: ignore[operator]
    if is_modern(ctx):
        return bool(meta) and LOG_LEVEL_META_KEY in meta  # type: ignore[operator]
    return relay.level_of(ctx) is not None
