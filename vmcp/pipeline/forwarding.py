"""How a forwarded request and its answer are adjusted on the way through vmcp: which `_meta`
travels on, how progress comes back, and whose identity the answer carries."""

from __future__ import annotations

import logging
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

from vmcp.backends.pool import BackendConnection
from vmcp.clients.relay import Relay, is_modern
from vmcp.ops import telemetry

logger = logging.getLogger(__name__)

PROGRESS_TOKEN = "progressToken"
SERVER_INFO_KEY = "io.modelcontextprotocol/serverInfo"
# The caller's envelope describes its connection to vmcp, not vmcp's to the backend (the SDK
# client stamps its own); a handshake-era backend rejects a request that carries one.
_NOT_FORWARDED = frozenset(
    {"progress_token", PROGRESS_TOKEN, PROTOCOL_VERSION_META_KEY, CLIENT_INFO_META_KEY, CLIENT_CAPABILITIES_META_KEY}
)
_ResultT = TypeVar("_ResultT", bound=types.Result)


def error_result(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


def without_backend_identity(result: _ResultT) -> _ResultT:
    """Drop the backend's serverInfo stamp so the client sees vmcp's own (the runner adds it)."""
    meta = result.meta
    if meta and SERVER_INFO_KEY in meta:
        rest = {k: v for k, v in meta.items() if k != SERVER_INFO_KEY}
        return result.model_copy(update={"meta": rest or None})
    return result


def has_progress_token(meta: types.RequestParamsMeta | None) -> bool:
    return bool(meta) and meta.get("progress_token", meta.get(PROGRESS_TOKEN)) is not None  # type: ignore[union-attr]


def forward_meta(meta: types.RequestParamsMeta | None) -> dict[str, Any] | None:
    """The caller's `_meta` minus its progress token (the backend gets a token of the SDK's own,
    whose notifications are relayed back under the caller's) and its protocol envelope."""
    forwarded = {k: v for k, v in (meta or {}).items() if k not in _NOT_FORWARDED}
    return telemetry.inject(forwarded) or None  # the trace goes on from vmcp's span, when tracing is on


def progress_relay(ctx: ServerRequestContext[Any]) -> ProgressFnT:
    async def relay(progress: float, total: float | None, message: str | None) -> None:
        try:
            await ctx.session.report_progress(progress, total, message)
        except Exception:  # a client that went away must not fail the backend call
            logger.debug("progress relay failed", exc_info=True)

    return relay


def backend_meta(
    relay: Relay, ctx: ServerRequestContext[Any], meta: types.RequestParamsMeta | None, connection: BackendConnection
) -> dict[str, Any] | None:
    """The `_meta` a backend gets: the caller's, less its envelope; a 2026-07-28 backend also
    gets a handshake-era caller's log level as the per-request opt-in."""
    forwarded = forward_meta(meta) or {}
    if connection.is_modern:
        level = relay.level_of(ctx)
        if level is not None and not is_modern(ctx):
            forwarded[LOG_LEVEL_META_KEY] = level
    else:
        forwarded.pop(LOG_LEVEL_META_KEY, None)
    return forwarded or None
