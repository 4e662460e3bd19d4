"""The lean outbound path: one `tools/call` as one HTTP POST, for 2026-07-28 HTTP backends.

At the 2026-07-28 revision a request is self-contained (no session, the envelope rides in
`_meta`), so a relay does not need the SDK's client machinery to forward one: it builds the
envelope, posts the JSON-RPC body over a kept-alive connection and hands back the result dict
untouched. This skips two pydantic round trips and the client transport's task plumbing, which
together cost more than the backend's own handling of a call (bench/forwarding.py). It posts
through `vmcp.http1`, a kept-alive connection pool whose per-request CPU is a tenth of a
general-purpose client's: on a busy machine that CPU is the difference between a relay that
doubles latency and one that does not. Everything
else (listing, prompts, resources, handshake-era and stdio backends, calls that stream progress)
stays on the SDK client.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any

from mcp.shared.inbound import encode_header_value
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    PROTOCOL_VERSION_META_KEY,
)

from vmcp.backends.http1 import Http1Pool

_JSON = "application/json"


class WireError(Exception):
    """The backend answered with a JSON-RPC error: relay it as it was sent."""

    def __init__(self, error: Mapping[str, Any]) -> None:
        self.error = dict(error)
        super().__init__(str(self.error.get("message", "error")))


class WireProtocolError(Exception):
    """The backend's answer was not a JSON-RPC response for our request. The message is vmcp's
    own words (never the backend's bytes), so it may be shown to the caller."""


class ModernHttpWire:
    """Posts single JSON-RPC requests to one modern-era streamable-HTTP backend."""

    def __init__(
        self,
        http: Http1Pool,
        protocol_version: str,
        client_info: Mapping[str, Any],
        headers: Mapping[str, str],
    ) -> None:
        self._http = http
        self._version = protocol_version
        self._client_info = dict(client_info)
        self._headers = {
            "accept": "application/json, text/event-stream",
            "content-type": _JSON,
            "mcp-protocol-version": protocol_version,
            **headers,
        }
        self._ids = itertools.count(1)

    async def request(
        self,
        method: str,
        name: str,
        params: Mapping[str, Any],
        *,
        caller_capabilities: Mapping[str, Any] | None,
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One JSON-RPC request (a tools/call whose params are already the backend's, a task
        request); `name` is what its `Mcp-Name` header carries (the tool's name, the task's id).
        The caller's declared capabilities travel on, so the backend offers exactly the
        interactions (elicitation, sampling, tasks) the real client can answer. The answer's
        result, or WireError with the backend's own error."""
        meta = dict(params.get("_meta") or {})
        meta[PROTOCOL_VERSION_META_KEY] = self._version
        meta[CLIENT_INFO_META_KEY] = self._client_info
        meta[CLIENT_CAPABILITIES_META_KEY] = dict(caller_capabilities or {})
        request_id = next(self._ids)
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**params, "_meta": meta}}
        sent = {**self._headers, **(headers or {}), "mcp-method": method, "mcp-name": encode_header_value(name)}
        response = await self._http.post(json.dumps(body, separators=(",", ":")).encode(), sent, timeout)
        raw, status = response.body, response.status
        content_type = response.headers.get("content-type", "")
        if content_type.startswith(_JSON):
            message = _json(raw, status)
        elif content_type.startswith("text/event-stream"):
            message = _last_response_event(raw.decode("utf-8", "replace"), request_id, status)
        else:
            raise WireProtocolError(f"HTTP {status} with content type {content_type.split(';')[0] or 'none'}")
        if not isinstance(message, dict):
            raise WireProtocolError(f"HTTP {status}: not a JSON-RPC response")
        if message.get("id") != request_id and not (message.get("id") is None and "error" in message):
            # an answer to some other request (or forged): never handed to this caller
            raise WireProtocolError(f"HTTP {status}: a response to another request")
        if "error" in message and isinstance(message["error"], dict):
            raise WireError(message["error"])
        result = message.get("result")
        if not isinstance(result, dict):
            raise WireProtocolError(f"HTTP {status}: response without a result")
        return result


def _json(raw: bytes, status: int) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise WireProtocolError(f"HTTP {status}: a body that is not JSON") from None


def _last_response_event(text: str, request_id: int, status: int) -> Any:
    """The response carried by an SSE body (notifications before it are dropped: calls that
    want them — progress, logging — never take this path)."""
    for block in text.replace("\r\n", "\n").split("\n\n"):
        data = "\n".join(line[5:].lstrip() for line in block.split("\n") if line.startswith("data:"))
        if not data:
            continue
        message = _json(data.encode(), status)
        if isinstance(message, dict) and message.get("id") == request_id:
            return message
    raise WireProtocolError(f"HTTP {status}: the event stream ended without a response")
