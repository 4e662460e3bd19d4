"""Lists from prepared views: pages with opaque cursors in both eras, one view per set of
authorization rules a caller meets (never another caller's), and a fresh view after a change."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client

from tests.support.raw_session import SESSION_HEADERS, answer_of, open_session

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

MODERN = "2026-07-28"
PAGE = 4


@pytest.fixture(scope="module")
def paged(module_procs: Any, fault_stdio_backend: Any) -> Any:
    """Two fault backends (about twenty tools each) paged four at a time; the client named
    `restricted` may not use the `b` backend's tools nor its prompts."""
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        "backends": [fault_stdio_backend("a"), fault_stdio_backend("b")],
        "aggregation": {"page_size": PAGE},
        "authorization": {
            "default": "allow",
            "rules": [{"tools": ["b_*"], "prompts": ["b_*"], "effect": "deny", "when": {"clients": ["restricted"]}}],
        },
    }
    return module_procs.vmcp(config, filename="lists.yaml")


def _client(url: str, mode: str, name: str = "lister") -> Client:
    return Client(url, mode=mode, client_info=types.Implementation(name=name, version="1"))  # type: ignore[arg-type]


async def _every_page(client: Client) -> tuple[list[str], int]:
    names: list[str] = []
    pages, cursor = 0, None
    while True:
        page = await client.list_tools(cursor=cursor)
        pages += 1
        assert len(page.tools) <= PAGE
        names += [tool.name for tool in page.tools]
        cursor = page.next_cursor
        if cursor is None:
            return names, pages


@pytest.mark.parametrize("mode", [MODERN, "legacy"])
async def test_every_list_pages_through_the_whole_catalogue_in_both_eras(paged: Any, mode: str) -> None:
    async with _client(paged.url, mode) as client:
        names, pages = await _every_page(client)
        prompts = (await client.list_prompts()).prompts
        resources = (await client.list_resources()).resources
        templates = (await client.list_resource_templates()).resource_templates
    assert len(names) == len(set(names)), "a tool was listed on two pages"
    assert {n.split("_", 1)[0] for n in names} == {"a", "b"}
    assert pages == -(-len(names) // PAGE) and pages > 5
    assert {"a_echo", "b_echo", "a_crash", "b_crash"} <= set(names)
    assert {p.name for p in prompts} == {"a_greet", "b_greet"}  # two items: one page, no cursor
    assert {str(r.uri) for r in resources} == {"fault://static"}
    assert {t.uri_template for t in templates} == {"fault://item/{id}"}


@pytest.mark.parametrize("mode", [MODERN, "legacy"])
async def test_a_caller_sees_only_its_own_view_whichever_was_prepared_first(paged: Any, mode: str) -> None:
    """The restricted client lists after and before an unrestricted one: neither view leaks into
    the other (views are keyed by the rules a caller meets, not shared by accident)."""
    async with _client(paged.url, mode) as everyone:
        all_names, _ = await _every_page(everyone)
    async with _client(paged.url, mode, name="restricted") as restricted:
        own, _ = await _every_page(restricted)
        prompts = [p.name for p in (await restricted.list_prompts()).prompts]
    async with _client(paged.url, mode) as everyone:
        again, _ = await _every_page(everyone)
    assert own == [name for name in all_names if not name.startswith("b_")]
    assert prompts == ["a_greet"]
    assert again == all_names


@pytest.mark.parametrize("mode", [MODERN, "legacy"])
async def test_a_cursor_that_names_no_page_is_invalid_params(paged: Any, mode: str) -> None:
    async with _client(paged.url, mode) as client:
        first = await client.list_tools()
        assert first.next_cursor is not None
        for cursor in ("not-a-cursor", first.next_cursor + "x", "dm1jcC1wYWdlOjk5OTk="):  # the last: page 9999
            with pytest.raises(Exception, match="Invalid cursor") as raised:
                await client.list_tools(cursor=cursor)
            assert getattr(raised.value, "error", None) is None or raised.value.error.code == types.INVALID_PARAMS
        # and the session carries on
        assert (await client.list_tools()).tools == first.tools


async def test_a_raw_2026_list_is_one_well_formed_answer_with_a_cursor(paged: Any) -> None:
    """What the lean path writes from the prepared bytes is the JSON-RPC answer a 2026-07-28
    client expects: this request's id, `resultType`, caching hints, vmcp's serverInfo, a cursor;
    a non-string cursor is invalid params."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    headers = {
        "Accept": "application/json, text/event-stream",
        "Mcp-Protocol-Version": MODERN,
        "Mcp-Method": "tools/list",
    }
    async with httpx.AsyncClient(timeout=30) as http:
        body = {"jsonrpc": "2.0", "id": "list-7", "method": "tools/list", "params": {"_meta": meta}}
        answer = (await http.post(paged.url, json=body, headers=headers)).json()
        bad = {**body, "params": {"_meta": meta, "cursor": 3}}
        refused = (await http.post(paged.url, json=bad, headers=headers)).json()
    assert answer["id"] == "list-7" and "error" not in answer
    result = answer["result"]
    assert result["resultType"] == "complete" and result["cacheScope"] == "private" and result["ttlMs"] == 0
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "vmcp"
    assert len(result["tools"]) == PAGE and isinstance(result["nextCursor"], str)
    assert refused["id"] == "list-7" and refused["error"]["code"] == types.INVALID_PARAMS, json.dumps(refused)


async def test_a_tool_a_backend_adds_is_listed_by_a_fresh_view(module_procs: Any) -> None:
    """A backend announcing a new tool: the prepared views are dropped, and the next lists (both
    eras) have it."""
    fault = module_procs.fault_http("grow")
    backend = {"name": "g", "transport": "streamable-http", "url": fault.url}
    served = module_procs.vmcp(
        {"server": {"host": "127.0.0.1", "port": 0}, "backends": [backend]}, filename="lists-grow.yaml"
    )
    async with _client(served.url, MODERN) as modern, _client(served.url, "legacy") as legacy:
        before = {t.name for t in (await modern.list_tools()).tools}
        assert {t.name for t in (await legacy.list_tools()).tools} == before
        assert not (await modern.call_tool("g_grow", {"tool": "sprouted"})).is_error
        for _ in range(100):
            after = {t.name for t in (await modern.list_tools()).tools}
            if "g_sprouted" in after:
                break
            await anyio.sleep(0.05)
        assert after == before | {"g_sprouted"}
        assert {t.name for t in (await legacy.list_tools()).tools} == after


async def test_a_backend_that_never_answers_holds_up_neither_readiness_nor_the_others(
    module_procs: Any, fault_stdio_backend: Any
) -> None:
    """A backend that accepts the connection and never answers (listing hangs): the façade is
    ready after `server.startup_wait` with the others' tools, and says which one it still waits for."""
    hole = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def swallow() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(hole.accept()[0])  # read nothing, answer nothing

    threading.Thread(target=swallow, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{hole.getsockname()[1]}/mcp"
        served = module_procs.vmcp(
            {
                "server": {"host": "127.0.0.1", "port": 0, "startup_wait": "2s"},
                "backends": [
                    fault_stdio_backend("quick"),
                    {"name": "hole", "transport": "streamable-http", "url": url, "connect_timeout": "120s"},
                ],
            },
            filename="lists-hole.yaml",
        )
        # ready (the helper waited for /readyz) although one backend cannot have answered
        assert {b["name"]: b["state"] for b in served.status()["backends"]}["hole"] == "connecting"
        assert "backend hole is still connecting" in served.log_tail() or _state(served, "quick") == "ready"
        async with _client(served.url, MODERN) as client:
            with anyio.fail_after(60):  # the other one is served: at once, or (a slow machine) when it is ready
                while True:
                    names = {tool.name for tool in (await client.list_tools()).tools}
                    if "quick_echo" in names:
                        break
                    await anyio.sleep(0.1)  # polling interval of a deadline-bounded wait
        assert not any(name.startswith("hole_") for name in names)
        assert _state(served, "hole") == "connecting"
    finally:
        hole.close()
        for connection in held:
            connection.close()


def _state(served: Any, backend: str) -> str:
    return str({b["name"]: b["state"] for b in served.status()["backends"]}[backend])


async def test_a_handshake_session_lists_from_prepared_bytes_while_the_session_lives(paged: Any) -> None:
    """A handshake-era session's first list goes through the SDK's session (an SSE answer); its
    next lists are written from the prepared page as one JSON body, equal to what the SDK sent,
    for this session's caller (a restricted client never gets the other view), and only while the
    SDK would serve the session: an Accept the SDK refuses, an ended or unknown session get the
    SDK's own answers."""
    async with httpx.AsyncClient(timeout=30) as http:
        session = await open_session(http, paged.url, "restricted")
        headers = {**SESSION_HEADERS, "Mcp-Session-Id": session}
        names: list[list[str]] = []
        kinds: list[str] = []
        cursor: str | None = None
        for number in range(3):
            params = {"cursor": cursor} if cursor else {}
            body = {"jsonrpc": "2.0", "id": f"page-{number}", "method": "tools/list", "params": params}
            response = await http.post(paged.url, json=body, headers=headers)
            assert response.status_code == 200
            kinds.append(response.headers["content-type"].split(";")[0])
            answer = answer_of(response)
            assert answer["id"] == f"page-{number}", answer
            names.append([tool["name"] for tool in answer["result"]["tools"]])
            cursor = answer["result"].get("nextCursor")
        assert kinds == ["text/event-stream", "application/json", "application/json"]
        # the first page again, now from the prepared bytes: what the SDK sent, under a new id
        again = answer_of(
            await http.post(paged.url, json={"jsonrpc": "2.0", "id": 9, "method": "tools/list"}, headers=headers)
        )
        assert again["id"] == 9 and [tool["name"] for tool in again["result"]["tools"]] == names[0]
        assert not any(name.startswith("b_") for page in names for name in page)  # the restricted view
        bad = {"jsonrpc": "2.0", "id": 10, "method": "tools/list", "params": {"cursor": "nope"}}
        assert answer_of(await http.post(paged.url, json=bad, headers=headers))["error"]["code"] == types.INVALID_PARAMS
        odd = {"jsonrpc": "2.0", "id": 12, "method": "tools/list", "params": {"cursor": 7}}
        assert answer_of(await http.post(paged.url, json=odd, headers=headers))["error"]["code"] == types.INVALID_PARAMS
        odd["params"] = {"_meta": "not an object"}  # no envelope to read: the session's own view
        assert [
            tool["name"] for tool in answer_of(await http.post(paged.url, json=odd, headers=headers))["result"]["tools"]
        ] == names[0]
        # the SDK's refusals stand: an Accept without SSE, a session id nobody opened
        json_only = {**headers, "Accept": "application/json"}
        assert (await http.post(paged.url, json=bad, headers=json_only)).status_code == 406
        forged = {**headers, "Mcp-Session-Id": "0" * 32}
        assert (await http.post(paged.url, json=bad, headers=forged)).status_code == 404
        # an ended session lists no more
        assert (await http.delete(paged.url, headers=headers)).status_code == 200
        ended = await http.post(paged.url, json={"jsonrpc": "2.0", "id": 11, "method": "tools/list"}, headers=headers)
        assert ended.status_code == 404
