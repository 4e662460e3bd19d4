"""A handshake-era MCP session over raw HTTP, for tests that look at what goes over the wire
(which answers are SSE, which JSON; which session ids and credentials are accepted)."""

from __future__ import annotations

import json
from typing import Any

import httpx

HANDSHAKE = "2025-11-25"
SESSION_HEADERS = {"Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": HANDSHAKE}


def answer_of(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC answer of a POST, whether the server sent it as JSON or as an SSE stream."""
    if response.headers["content-type"].startswith("application/json"):
        return dict(response.json())
    data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    return dict(json.loads(next(d for d in data if d)))


async def open_session(http: httpx.AsyncClient, url: str, client_name: str) -> str:
    hello = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": HANDSHAKE,
            "capabilities": {},
            "clientInfo": {"name": client_name, "version": "1"},
        },
    }
    opened = await http.post(url, json=hello, headers=SESSION_HEADERS)
    session = opened.headers["mcp-session-id"]
    done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await http.post(url, json=done, headers={**SESSION_HEADERS, "Mcp-Session-Id": session})).status_code == 202
    return session
