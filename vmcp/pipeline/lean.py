"""The lean inbound path for the hottest requests: a plain 2026-07-28 `tools/call`, and lists.

A 2026-07-28 POST is one self-contained JSON-RPC request, so when nothing can come back but the
answer (the tool's backend is reached over its lean wire, and the caller asked for no progress or
log stream) vmcp takes it here rather than through the SDK's session machinery: the same
Host/Origin, content-type, Accept and envelope checks as the SDK (its own validators are reused),
then the same pipeline as every other request (`vmcp.pipeline.requests`: authorize, reshape,
police, forward, observe), and the answer with vmcp's `serverInfo` stamp. A 2026-07-28 list is
answered with the bytes of its prepared page (`vmcp.pipeline.lists`). This is an inbound
transport, not a second pipeline. Anything else — other methods, progress tokens, log opt-ins,
`Mcp-Param-*` headers, vmcp's own tools, anything the checks do not like — is replayed untouched to
the SDK's app, which then owns the answer (and every error message).

A handshake-era session's lists come here too, once the session has listed through the SDK (which
notes its negotiated version and client name: `HandshakeSessions`). Through the SDK's session
transport a prepared page is parsed into models, passed to the session's task and encoded twice
more (as a model, then as an SSE event): at 1,000 tools per page, 5-8 times the lean path's cost
(py-spy: `model_dump_json` a third of it, the SSE encoding a quarter). A list asks the session
nothing, so it is answered as one JSON body (the transport lets a POST's answer be JSON or an SSE
stream) after the checks the SDK's transport would make: Host/Origin, content type, Accept (both
types, as the SDK demands of a session), and the session itself — open, not ended, its idle clock
not run out, and used with the credential that opened it. The SDK keeps its sessions and their
owners in private maps of the session manager (`_server_instances`, `_session_owners`); a session
the SDK would not serve is left to it, so it answers 404 as before (tests/integration/test_lists.py
fails if those names move).
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import anyio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from mcp.server.streamable_http import check_accept_headers
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import ERROR_CODE_HTTP_STATUS, InboundLadderRejection, classify_inbound_request
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    LOG_LEVEL_META_KEY,
    PROTOCOL_VERSION_META_KEY,
    SERVER_INFO_META_KEY,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vmcp.pipeline.envelope import error_result
from vmcp.pipeline.facade import Facade
from vmcp.pipeline.forward import Inbound
from vmcp.pipeline.identify import bearer_token, caller_in
from vmcp.pipeline.lists import LIST_METHODS, Page, cursor_of

logger = logging.getLogger(__name__)

_MAX_BODY = 4 * 1024 * 1024  # the SDK's default limit: larger bodies go to it and get its 413
_ROUTING_HEADERS = (b"mcp-protocol-version", b"mcp-method", b"mcp-name")
_ENVELOPE_KEYS = (PROTOCOL_VERSION_META_KEY, CLIENT_INFO_META_KEY, CLIENT_CAPABILITIES_META_KEY)
_T = TypeVar("_T")
_MODERN = frozenset(v.encode() for v in MODERN_PROTOCOL_VERSIONS)
_HANDSHAKE = frozenset(v.encode() for v in HANDSHAKE_PROTOCOL_VERSIONS)


class LeanToolCalls:
    """ASGI app in front of the SDK's streamable-HTTP app."""

    def __init__(
        self, manager: StreamableHTTPSessionManager, facade: Facade, security: TransportSecuritySettings
    ) -> None:
        self._sdk: ASGIApp = manager.handle_request
        self._manager = manager
        self._facade = facade
        self._security = TransportSecurityMiddleware(security)
        self._stamp = facade.server.server_info_stamp
        self.served = 0  # calls answered here rather than by the SDK (tests check the path is taken)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self._sdk(scope, receive, send)
            return
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        version = next((v for k, v in raw_headers if k == b"mcp-protocol-version"), None)
        sessions = [v for k, v in raw_headers if k == b"mcp-session-id"]
        if sessions:
            session_id = sessions[0].decode("latin-1")
            session = self._facade.sessions.get(session_id) if len(sessions) == 1 else None
            if session is None or self._manager.stateless or (version is not None and version not in _HANDSHAKE):
                await self._sdk(scope, receive, send)
                return
            listing = functools.partial(self._session_list, scope, session_id, send)
            await self._here_or_sdk(scope, receive, send, listing)
            return
        if version not in _MODERN:
            await self._sdk(scope, receive, send)
            return
        await self._here_or_sdk(scope, receive, send, functools.partial(self._try, scope, receive, send))

    async def _here_or_sdk(
        self, scope: Scope, receive: Receive, send: Send, answer: Callable[[bytes], Awaitable[bool]]
    ) -> None:
        """The request answered here if `answer` takes its body, else replayed to the SDK untouched."""
        body, complete = await _read_body(receive)
        if complete and await answer(body):
            return
        await self._sdk(scope, _replay(body, complete, receive), send)

    async def _try(self, scope: Scope, receive: Receive, send: Send, body: bytes) -> bool:
        request = Request(scope)
        if await self._security.validate_request(request, is_post=True) is not None:
            return False
        headers = request.headers
        accept = headers.get("accept", "")
        if "application/json" not in accept and "*/*" not in accept:
            return False
        if any(sum(1 for k, _ in scope["headers"] if k == name) > 1 for name in _ROUTING_HEADERS):
            return False
        if any(k.startswith(b"mcp-param-") for k, _ in scope["headers"]):
            return False
        decoded = _request_in(body)
        if decoded is None or not isinstance(decoded.get("params"), dict):
            return False
        method = decoded["method"]
        request_id = decoded["id"]
        params = decoded["params"]
        if method in LIST_METHODS:
            return await self._list(scope, decoded, headers, send)
        if method != "tools/call":
            return False
        name = params.get("name")
        arguments = params.get("arguments")
        meta = params.get("_meta")
        if not isinstance(name, str) or not (arguments is None or isinstance(arguments, dict)):
            return False
        if not isinstance(meta, dict) or "progressToken" in meta or LOG_LEVEL_META_KEY in meta:
            return False
        if isinstance(classify_inbound_request(decoded, headers=dict(headers)), InboundLadderRejection):
            return False
        if name in self._facade.pipeline.own_names:
            return False  # vmcp's own tools may stream progress or ask the caller: the SDK's session serves them
        route = self._facade.catalog.tool_routes.get(name)
        if route is not None:
            connection = self._facade.pool.connections.get(route.backend)
            if connection is None or not connection.requests.takes_lean_path(route.original):
                return False  # the backend talks through the SDK client, which may ask the caller mid-call

        pipeline = self._facade.pipeline
        caller = caller_in(scope, meta)
        inbound = Inbound(
            None,
            headers=headers,
            token=bearer_token(scope),
            capabilities=meta.get(CLIENT_CAPABILITIES_META_KEY),
        )
        status = 200
        try:
            answer = await _unless_disconnected(receive, pipeline.call_tool(caller, params, inbound))
            if answer is None:
                return True  # the client closed the request: at 2026-07-28 that is how it cancels
            message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "result": self._restamp(answer)}
        except MCPError as exc:  # the backend's own JSON-RPC error, relayed as it was sent
            error = exc.error.model_dump(mode="json", exclude_none=True)
            message = {"jsonrpc": "2.0", "id": request_id, "error": error}
            status = ERROR_CODE_HTTP_STATUS.get(exc.error.code, 200)
        except Exception:  # boundary: nothing escapes, and the caller learns nothing of vmcp's insides
            logger.exception("tools/call %s failed", name)
            failure = error_result(f"Tool {name!r} failed inside vmcp; the operator's logs say why.")
            message = {"jsonrpc": "2.0", "id": request_id, "result": self._restamp(failure)}
        self.served += 1
        await _send_json(send, status, message)
        return True

    async def _list(self, scope: Scope, decoded: dict[str, Any], headers: Any, send: Send) -> bool:
        """A list from its prepared view: the page's bytes, encoded once per catalogue change."""
        params = decoded["params"]
        meta = params.get("_meta")
        if not isinstance(meta, dict) or LOG_LEVEL_META_KEY in meta:
            return False
        if isinstance(classify_inbound_request(decoded, headers=dict(headers)), InboundLadderRejection):
            return False
        version = str(meta.get(PROTOCOL_VERSION_META_KEY))
        if version not in MODERN_PROTOCOL_VERSIONS:
            return False
        await self._send_page(send, decoded, caller_in(scope, meta), version)
        return True

    async def _session_list(self, scope: Scope, session_id: str, send: Send, body: bytes) -> bool:
        """A handshake-era session's list, if the SDK's transport would serve it: see the module's notes."""
        if b'list"' not in body:
            return False  # every other request of the session (a call's arguments: up to 4 MiB) is not parsed twice
        request = Request(scope)
        if await self._security.validate_request(request, is_post=True) is not None:
            return False
        if check_accept_headers(request) != (True, True):
            return False
        decoded = _request_in(body)
        if decoded is None or decoded["method"] not in LIST_METHODS:
            return False
        params = decoded.get("params")
        if params is not None and not isinstance(params, dict):
            return False
        transport = self._manager._server_instances.get(session_id)
        user = scope.get("user")
        owner = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
        if transport is None or transport.is_terminated or owner != self._manager._session_owners.get(session_id):
            self._facade.sessions.forget(session_id)
            return False
        idle = transport.idle_scope
        if idle is not None and idle.cancel_called:
            return False
        session = self._facade.sessions.get(session_id)
        if session is None:
            return False
        meta = params.get("_meta") if params is not None else None
        caller = caller_in(scope, meta, session.client_name)
        await self._send_page(send, decoded, caller, session.version, (b"mcp-session-id", session_id.encode()))
        timeout = self._manager.session_idle_timeout
        if idle is not None and timeout is not None and idle.deadline != math.inf:
            idle.deadline = max(idle.deadline, anyio.current_time() + timeout)  # this list kept the session in use
        return True

    async def _send_page(
        self, send: Send, decoded: dict[str, Any], caller: dict[str, Any], version: str, *headers: tuple[bytes, bytes]
    ) -> None:
        try:
            page: Page = self._facade.lists.page(decoded["method"], caller, version, cursor_of(decoded.get("params")))
        except MCPError as exc:  # an invalid cursor
            error = exc.error.model_dump(mode="json", exclude_none=True)
            await _send_json(send, 200, {"jsonrpc": "2.0", "id": decoded["id"], "error": error}, *headers)
            return
        await _send_body(send, 200, page.message(decoded["id"]), *headers)

    def _restamp(self, result: dict[str, Any]) -> dict[str, Any]:
        """vmcp's serverInfo on the answer, and the 2026-07-28 `resultType` it must carry."""
        meta = result.get("_meta")
        merged = {k: v for k, v in meta.items() if k != SERVER_INFO_META_KEY} if isinstance(meta, Mapping) else {}
        merged[SERVER_INFO_META_KEY] = self._stamp
        return {"resultType": "complete", **result, "_meta": merged}


async def _unless_disconnected(receive: Receive, call: Awaitable[_T]) -> _T | None:
    """Await `call`, abandoning it (which closes the backend request, cancelling it there too)
    if the client disconnects first."""
    outcome: list[_T] = []
    failure: list[Exception] = []
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

        group.start_soon(watch)
        try:
            outcome.append(await call)
        except Exception as exc:  # re-raised below, outside the task group, as itself
            failure.append(exc)
        group.cancel_scope.cancel()
    if failure:
        raise failure[0]
    return outcome[0] if outcome else None


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The whole body, unless it grows past the limit (then the SDK gets what was read plus the rest)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True
        if size > _MAX_BODY:
            return b"".join(chunks), False


def _replay(body: bytes, complete: bool, receive: Receive) -> Receive:
    """A receive() that hands the SDK the body already read, then carries on with the real one."""
    pending = [{"type": "http.request", "body": body, "more_body": not complete}]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed


def _request_in(body: bytes) -> dict[str, Any] | None:
    """The JSON-RPC request a body holds, if it is one vmcp may answer here (else the SDK judges it)."""
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(decoded, dict) or decoded.get("jsonrpc") != "2.0":
        return None
    request_id = decoded.get("id")
    if (
        not isinstance(request_id, str | int)
        or isinstance(request_id, bool)
        or not isinstance(decoded.get("method"), str)
    ):
        return None
    return decoded


async def _send_json(send: Send, status: int, message: dict[str, Any], *headers: tuple[bytes, bytes]) -> None:
    await _send_body(send, status, (json.dumps(message, separators=(",", ":")).encode(),), *headers)


async def _send_body(send: Send, status: int, parts: tuple[bytes, ...], *headers: tuple[bytes, bytes]) -> None:
    length = str(sum(len(part) for part in parts)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", length), *headers],
        }
    )
    for index, part in enumerate(parts):
        await send({"type": "http.response.body", "body": part, "more_body": index + 1 < len(parts)})
