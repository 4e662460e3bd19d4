"""Search mode from the outside: `find_tools` and `call_tool` through a real client in both eras,
as a caller who may see everything and as one who may not (who must never find, nor call through
`call_tool`, what it may not call by name), with bad arguments, and in the audit trail."""

from __future__ import annotations

import json
from typing import Any

import mcp_types as types
import pytest
from mcp import Client

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

MODES = ["2026-07-28", "legacy"]


@pytest.fixture(scope="module")
def searching(module_procs: Any, fault_stdio_backend: Any) -> Any:
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        "backends": [fault_stdio_backend("a"), fault_stdio_backend("b")],
        "aggregation": {"search": {"mode": "instead", "find_tools": {"name": "find_tools"}}},
        "authorization": {
            "default": "allow",
            "rules": [{"tools": ["b.*"], "effect": "deny", "when": {"clients": ["restricted"]}}],
        },
        "audit": {"file": str(module_procs.workdir / "search-audit.jsonl")},
        "composite_tools": [
            {
                "name": "greet_twice",
                "description": "Greet somebody twice in a row, politely.",
                "steps": [{"id": "one", "tool": "a_echo", "arguments": {"text": "hello"}}],
            }
        ],
    }
    return module_procs.vmcp(config, filename="search.yaml")


def _client(url: str, mode: str, name: str = "searcher") -> Client:
    return Client(url, mode=mode, client_info=types.Implementation(name=name, version="1"))  # type: ignore[arg-type]


async def _find(client: Client, query: str, **extra: Any) -> list[str]:
    result = await client.call_tool("find_tools", {"query": query, **extra})
    assert not result.is_error, result
    found = (result.structured_content or {})["tools"]
    assert all({"name", "description", "inputSchema"} <= set(tool) for tool in found)
    return [tool["name"] for tool in found]


@pytest.mark.parametrize("mode", MODES)
async def test_the_two_search_tools_replace_the_list_and_find_what_is_asked_for(searching: Any, mode: str) -> None:
    async with _client(searching.url, mode) as client:
        listed = [tool.name for tool in (await client.list_tools()).tools]
        assert listed == ["find_tools", "call_tool"]
        assert (await _find(client, "echo the text back"))[:2] in (["a_echo", "b_echo"], ["b_echo", "a_echo"])
        assert (await _find(client, "add two integers"))[0] in {"a_add", "b_add"}
        assert "greet_twice" in await _find(client, "greet somebody")  # composites are searchable
        assert len(await _find(client, "echo", limit=1)) == 1
        assert await _find(client, "zzzz qqqq") == []
        called = await client.call_tool("call_tool", {"name": "a_add", "arguments": {"a": 2, "b": 40}})
        direct = await client.call_tool("call_tool", {"name": "a_echo", "arguments": {"text": "via search"}})
    assert not called.is_error and "42" in json.dumps(called.model_dump(mode="json")), called
    assert (direct.structured_content or {}).get("text") == "via search" or "via search" in str(direct.content)


@pytest.mark.parametrize("mode", MODES)
async def test_a_restricted_caller_never_finds_nor_calls_what_it_may_not(searching: Any, mode: str) -> None:
    async with _client(searching.url, mode, name="restricted") as client:
        found = await _find(client, "echo the text back", limit=25)
        everything = await _find(client, "a b echo add fail slow lookup fetch tally count", limit=25)
        refused = await client.call_tool("call_tool", {"name": "b_echo", "arguments": {"text": "x"}})
        by_name_refused = await client.call_tool("b_echo", {"text": "x"})
        allowed = await client.call_tool("call_tool", {"name": "a_echo", "arguments": {"text": "x"}})
    assert found and not any(name.startswith("b_") for name in found)
    assert everything and not any(name.startswith("b_") for name in everything)
    assert refused.is_error and "not available to you" in str(refused.content)
    assert by_name_refused.is_error and "Unknown tool" not in str(by_name_refused.content)
    assert not allowed.is_error


@pytest.mark.parametrize(
    ("tool", "arguments", "says"),
    [
        ("find_tools", {}, "`query` must be a non-empty string"),
        ("find_tools", {"query": "  "}, "`query` must be a non-empty string"),
        ("find_tools", {"query": "echo", "limit": 0}, "limit"),
        ("find_tools", {"query": "echo", "limit": 10_000}, "limit"),
        ("find_tools", {"query": "x" * 5000}, "too long"),
        ("call_tool", {}, "name"),
        ("call_tool", {"name": "call_tool", "arguments": {}}, "search tool itself"),
        ("call_tool", {"name": "a_echo", "arguments": "text"}, "arguments"),
        ("call_tool", {"name": "no_such_tool"}, "Unknown tool"),
    ],
)
async def test_bad_search_arguments_are_tool_errors_that_say_what_is_wrong(
    searching: Any, tool: str, arguments: dict[str, Any], says: str
) -> None:
    async with _client(searching.url, "2026-07-28") as client:
        result = await client.call_tool(tool, arguments)
        assert result.is_error and says in str(result.content), result
        assert not (await client.call_tool("find_tools", {"query": "echo"})).is_error  # and it carries on


async def test_a_call_through_call_tool_is_audited_as_the_tool_it_reaches(searching: Any) -> None:
    async with _client(searching.url, "2026-07-28", name="auditee") as client:
        assert not (await client.call_tool("call_tool", {"name": "a_tally", "arguments": {"label": "s"}})).is_error
    lines = [
        json.loads(line) for line in (searching.config_file.parent / "search-audit.jsonl").read_text().splitlines()
    ]
    mine = [line for line in lines if line.get("client") == "auditee"]
    tools = [line["tool"] for line in mine]
    assert "a_tally" in tools and "call_tool" in tools, mine
    inner = next(line for line in mine if line["tool"] == "a_tally")
    assert inner["backend"] == "a" and inner["outcome"] == "ok"


async def test_beside_mode_keeps_the_full_list(module_procs: Any, fault_stdio_backend: Any) -> None:
    served = module_procs.vmcp(
        {
            "server": {"host": "127.0.0.1", "port": 0},
            "backends": [fault_stdio_backend("a")],
            "aggregation": {"search": {"mode": "beside", "call_tool": {"name": "use_tool", "description": "Use it."}}},
        },
        filename="search-beside.yaml",
    )
    async with _client(served.url, "legacy") as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert {"a_echo", "find_tools", "use_tool"} <= set(listed)
    assert listed["use_tool"].description == "Use it."
