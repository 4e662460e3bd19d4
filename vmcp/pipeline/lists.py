"""Lists answered from prepared views: `tools/list`, `prompts/list`, `resources/list` and
`resources/templates/list` as a lookup plus a write.

At thousands of tools, building a list per request (filter for the caller, validate and dump
every model, encode) costs the better part of a second of CPU, and every client lists — a
2026-07-28 client may list before every call. So each list is prepared once per *view* and
protocol version, and kept until the catalogue changes: validated and shaped for that version (the
SDK's own per-version result types), cut into pages, each page prepared when first asked for and
held as its wire `result` and as encoded bytes. A view is what the caller's authorization decides:
callers whom the same rules match see the same lists (`Authorizer.view`), so anonymous
deployments hold one view per version.

Pages are `aggregation.page_size` items long, with an opaque cursor naming the next page; the
cursor is an offset in the caller's view, so any replica with the same catalogue continues it. A
cursor that names no page of the current view (forged, or the catalogue shrank since: clients
are told `list_changed`) is invalid params, as the protocol wants for an unknown cursor.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, NamedTuple

import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp_types import SERVER_INFO_META_KEY
from mcp_types.methods import serialize_server_result
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel

# each list method and the field that carries its items
LIST_METHODS: Mapping[str, str] = {
    "tools/list": "tools",
    "prompts/list": "prompts",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
}
MAX_VIEWS = 256  # prepared (method, view, version) entries kept; the least recently used go first
MAX_SESSIONS = 10_000  # handshake-era sessions remembered for lists; one forgotten is served by the SDK again
_CURSOR_PREFIX = b"vmcp-page:"


class Page:
    """One page, kept encoded: the lean path writes these bytes. The SDK's session path (the
    handshake era) needs objects, decoded on its first request and kept — decoding on every
    request made a handshake-era list of 5,000 tools four times slower."""

    def __init__(self, body: bytes) -> None:
        self.body = body  # the wire result, JSON-encoded, for the lean path

    @functools.cached_property
    def result(self) -> dict[str, Any]:
        """The wire result as the SDK's session path returns it (never mutated: shared)."""
        decoded: dict[str, Any] = json.loads(self.body)
        return decoded

    def message(self, request_id: str | int) -> tuple[bytes, bytes, bytes]:
        """The whole JSON-RPC response in three parts, the page's own bytes in the middle: written
        as they are, neither encoded again nor copied into a new buffer per request."""
        return b'{"jsonrpc":"2.0","id":' + json.dumps(request_id).encode() + b',"result":', self.body, b"}"


# the items a caller may see, in order, for one list method
Visible = Callable[[str, Mapping[str, Any]], Sequence[BaseModel]]


class _View:
    """One list for one view and version: the items the view sees (a snapshot of the catalogue),
    and each page once it has been asked for."""

    def __init__(self, items: Sequence[BaseModel], page_size: int) -> None:
        self.items = items
        self.pages: list[Page | None] = [None] * max(1, -(-len(items) // page_size))


class PreparedLists:
    def __init__(
        self,
        visible: Visible,
        view_of: Callable[[Mapping[str, Any]], Hashable],
        page_size: int,
        server_info: Callable[[], dict[str, Any]],
    ) -> None:
        self._visible = visible
        self._view_of = view_of
        self._page_size = page_size
        self._server_info = server_info
        self._prepared: OrderedDict[tuple[str, Hashable, str], _View] = OrderedDict()

    def reset(self) -> None:
        """The catalogue changed: every view is prepared again when next asked for."""
        self._prepared.clear()

    def page(self, method: str, caller: Mapping[str, Any], version: str, cursor: str | None) -> Page:
        """A page, prepared on its first request: after a change, a client's first list costs one
        page's preparation on the event loop, not the whole catalogue's (80-120 ms at 5,000 tools)."""
        key = (method, self._view_of(caller), version)
        view = self._prepared.get(key)
        if view is None:
            view = _View(self._visible(method, caller), self._page_size)
            self._prepared[key] = view
            while len(self._prepared) > MAX_VIEWS:
                self._prepared.popitem(last=False)
        else:
            self._prepared.move_to_end(key)
        index = _page_index(cursor, len(view.pages))
        page = view.pages[index]
        if page is None:
            page = view.pages[index] = self._prepare(method, version, view, index)
        return page

    def _prepare(self, method: str, version: str, view: _View, number: int) -> Page:
        start = number * self._page_size
        items = [
            item.model_dump(by_alias=True, mode="json", exclude_none=True)
            for item in view.items[start : start + self._page_size]
        ]
        data: dict[str, Any] = {LIST_METHODS[method]: items}
        if number + 1 < len(view.pages):
            data["nextCursor"] = _cursor(number + 1)
        if version in MODERN_PROTOCOL_VERSIONS:
            # immediately stale, and for this authorization context only: a list is per view,
            # and changes whenever a backend's does
            data |= {"ttlMs": 0, "cacheScope": "private", "resultType": "complete"}
            data["_meta"] = {SERVER_INFO_META_KEY: self._server_info()}
        result = serialize_server_result(method, version, data)
        return Page(json.dumps(result, separators=(",", ":")).encode())


def cursor_of(params: Any) -> str | None:
    """The cursor of a list request's params (None: the first page); invalid params otherwise."""
    if params is None:
        return None
    cursor = params.get("cursor") if isinstance(params, Mapping) else getattr(params, "cursor", None)
    if cursor is not None and not isinstance(cursor, str):
        raise MCPError(code=types.INVALID_PARAMS, message="Invalid cursor: not a string")
    return cursor


def _cursor(index: int) -> str:
    return base64.urlsafe_b64encode(_CURSOR_PREFIX + str(index).encode()).decode()


def _page_index(cursor: str | None, pages: int) -> int:
    if cursor is None:
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii"))
        index = int(raw.removeprefix(_CURSOR_PREFIX)) if raw.startswith(_CURSOR_PREFIX) else -1
    except (binascii.Error, ValueError, UnicodeEncodeError):
        index = -1
    if not 0 < index < pages or _cursor(index) != cursor:  # one spelling per page
        raise MCPError(
            code=types.INVALID_PARAMS,
            message="Invalid cursor: it names no page of this list (list again from the start)",
            data={"cursor": cursor[:200]},
        )
    return index


class HandshakeSession(NamedTuple):
    """What a list needs of a handshake-era session: its negotiated version and the name its
    client gave (an anonymous caller's `client`)."""

    version: str
    client_name: str | None


class HandshakeSessions:
    """Handshake-era sessions by id, noted when one of their lists passes through the SDK, so the
    lean path can answer their next lists (`vmcp.pipeline.lean`). Bounded, least recently used
    first out: a session that ended leaves a record only until it is pushed out."""

    def __init__(self, limit: int = MAX_SESSIONS) -> None:
        self._limit = limit
        self._sessions: OrderedDict[str, HandshakeSession] = OrderedDict()

    def note(self, session_id: str, session: HandshakeSession) -> None:
        self._sessions[session_id] = session
        self._sessions.move_to_end(session_id)
        while len(self._sessions) > self._limit:
            self._sessions.popitem(last=False)

    def get(self, session_id: str) -> HandshakeSession | None:
        return self._sessions.get(session_id)

    def forget(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
