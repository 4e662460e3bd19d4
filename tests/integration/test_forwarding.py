"""Plain forwarding through a real vmcp to real backends, seen by the SDK's real client in both eras.

One `vmcp serve` process (per module) fronts six backends: the published mcp-server-time,
mcp-server-fetch (reading this suite's own page on 127.0.0.1) and mcp-server-git (on a repository
made here), the fault server over streamable HTTP and over stdio, and the fault server again in
handshake-only mode. Every client-facing check runs with the client in `legacy` (2025-11-25
handshake), `2026-07-28` and `auto` mode; results are compared with what the backend answers
when asked directly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
import yaml
from mcp import Client, MCPError, StdioServerParameters

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

MODES = ["legacy", "2026-07-28", "auto"]
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
SECRET_ENV = {"VMCP_TEST_TOKEN": "token-from-config-5b2e"}
CALL_TIMEOUT = 30.0


@dataclass
class Stack:
    vmcp: Any
    fault_url: str
    legacy_url: str
    repo: Path
    page_url: str
    page_marker: str
    direct: dict[str, Any]


def _backends(fault_url: str, legacy_url: str, repo: Path, fault_stdio_backend: Any) -> list[dict[str, Any]]:
    return [
        {"name": "time", "transport": "stdio", "command": "mcp-server-time", "args": ["--local-timezone", "UTC"]},
        {"name": "fetch", "transport": "stdio", "command": "mcp-server-fetch", "args": ["--allow-private-ips"]},
        {"name": "git", "transport": "stdio", "command": "mcp-server-git", "args": ["--repository", str(repo)]},
        {"name": "fault", "transport": "streamable-http", "url": fault_url},
        fault_stdio_backend("fault_stdio", env=dict(SECRET_ENV)),
        {"name": "legacy", "transport": "streamable-http", "url": legacy_url},
    ]


def _direct_targets(stack_urls: dict[str, str], repo: Path) -> dict[str, Any]:
    """How to reach each backend without vmcp (the same commands the config runs)."""
    return {
        "time": StdioServerParameters(command=str(BIN / "mcp-server-time"), args=["--local-timezone", "UTC"]),
        "fetch": StdioServerParameters(command=str(BIN / "mcp-server-fetch"), args=["--allow-private-ips"]),
        "git": StdioServerParameters(command=str(BIN / "mcp-server-git"), args=["--repository", str(repo)]),
        "fault": stack_urls["fault"],
        "fault_stdio": StdioServerParameters(
            command=sys.executable,
            args=["-m", "tests.servers.fault_server", "--transport", "stdio", "--name", "fault_stdio"],
            env=dict(SECRET_ENV),
            cwd=ROOT,
        ),
        "legacy": stack_urls["legacy"],
    }


def _calls(repo: Path, page_url: str) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Deterministic calls whose results must come back through vmcp exactly as sent."""
    return {
        "fetch": [("fetch", {"url": page_url})],
        "git": [("git_status", {"repo_path": str(repo)}), ("git_log", {"repo_path": str(repo)})],
        "fault": [
            ("echo", {"text": "héllo, wörld"}),
            ("add", {"a": 2, "b": 40}),
            ("image", {}),
            ("fail", {"message": "deliberate failure 42"}),
        ],
        "fault_stdio": [("echo", {"text": "over stdio"}), ("image", {}), ("fail", {"message": "stdio failure"})],
        "legacy": [("echo", {"text": "handshake era"})],
    }


def _call_key(backend: str, tool: str, arguments: dict[str, Any]) -> str:
    return f"{backend}.{tool}({json.dumps(arguments, sort_keys=True)})"


async def _collect_direct(
    targets: dict[str, Any], calls: dict[str, list[tuple[str, dict[str, Any]]]]
) -> dict[str, Any]:
    out: dict[str, Any] = {"tools": {}, "prompts": {}, "results": {}}

    async def one(backend: str, target: Any) -> None:
        with anyio.fail_after(60):
            async with Client(target, mode="auto") as client:
                out["tools"][backend] = (await client.list_tools()).tools
                if client.server_capabilities.prompts is not None:
                    out["prompts"][backend] = (await client.list_prompts()).prompts
                else:
                    out["prompts"][backend] = []
                for tool, arguments in calls.get(backend, []):
                    result = await client.call_tool(tool, arguments)
                    out["results"][_call_key(backend, tool, arguments)] = result

    async with anyio.create_task_group() as group:
        for backend, target in targets.items():
            group.start_soon(one, backend, target)
    return out


@pytest.fixture(scope="module")
def stack(module_procs: Any, git_repo: Path, web_page: Any, free_port: Any, fault_stdio_backend: Any) -> Stack:
    fault = module_procs.fault_http("fault")
    legacy = module_procs.fault_http("legacy", legacy_only=True)
    dead_temporal = free_port()  # nothing listens there: plain forwarding must not care
    config = {
        "server": {"host": "127.0.0.1"},
        "temporal": {"address": f"127.0.0.1:{dead_temporal}"},
        "backends": _backends(fault.url, legacy.url, git_repo, fault_stdio_backend),
        "aggregation": {"conflict_resolution": "prefix", "prefix_format": "{backend}_"},
    }
    served = module_procs.vmcp(config)
    direct = anyio.run(
        _collect_direct,
        _direct_targets({"fault": fault.url, "legacy": legacy.url}, git_repo),
        _calls(git_repo, web_page.url),
    )
    return Stack(served, fault.url, legacy.url, git_repo, web_page.url, web_page.marker, direct)


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _text(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


def _dump(blocks: Any) -> Any:
    return [block.model_dump(by_alias=True, exclude_none=True) for block in blocks]


# --------------------------------------------------------------------------- catalogue


async def test_tools_are_every_backends_tools_under_their_prefix(stack: Stack, mode: str) -> None:
    async with Client(stack.vmcp.url, mode=mode) as client:
        advertised = {tool.name: tool for tool in (await client.list_tools()).tools}

    expected: dict[str, types.Tool] = {}
    for backend, tools in stack.direct["tools"].items():
        assert tools, f"backend {backend} listed no tools directly"
        for tool in tools:
            expected[f"{backend}_{tool.name}"] = tool
    assert sorted(advertised) == sorted(expected)
    for name, original in expected.items():
        tool = advertised[name]
        assert tool.description == original.description, name
        assert tool.input_schema == original.input_schema, name
        assert tool.output_schema == original.output_schema, name
        assert tool.annotations == original.annotations, name


async def test_prompts_and_resources_are_listed(stack: Stack, mode: str) -> None:
    async with Client(stack.vmcp.url, mode=mode) as client:
        prompts = {prompt.name for prompt in (await client.list_prompts()).prompts}
        resources = [resource.uri for resource in (await client.list_resources()).resources]
        templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]

    expected = {f"{backend}_{p.name}" for backend, listed in stack.direct["prompts"].items() for p in listed}
    assert prompts == expected
    assert {"fault_greet", "fault_stdio_greet", "legacy_greet", "fetch_fetch"} <= prompts
    # resource URIs are never rewritten; the first backend in config order serves a shared URI
    assert resources.count("fault://static") == 1
    assert "fault://item/{id}" in templates


# --------------------------------------------------------------------------- tool calls


def _deterministic_calls() -> list[tuple[str, str, dict[str, Any]]]:
    calls = _calls(Path("<repo>"), "<page>")
    return [(backend, tool, args) for backend, listed in calls.items() for tool, args in listed]


@pytest.mark.parametrize(
    ("backend", "tool", "arguments"),
    _deterministic_calls(),
    ids=[f"{b}.{t}" for b, t, _ in _deterministic_calls()],
)
async def test_tool_result_is_the_backends_own(
    stack: Stack, mode: str, backend: str, tool: str, arguments: dict[str, Any]
) -> None:
    arguments = {
        key: str(stack.repo) if value == "<repo>" else stack.page_url if value == "<page>" else value
        for key, value in arguments.items()
    }
    direct: types.CallToolResult = stack.direct["results"][_call_key(backend, tool, arguments)]
    async with Client(stack.vmcp.url, mode=mode) as client:
        with anyio.fail_after(CALL_TIMEOUT):
            result = await client.call_tool(f"{backend}_{tool}", arguments)

    assert _dump(result.content) == _dump(direct.content)
    assert result.structured_content == direct.structured_content
    assert result.is_error == direct.is_error


async def test_each_published_backend_answers(stack: Stack, mode: str) -> None:
    async with Client(stack.vmcp.url, mode=mode) as client:
        with anyio.fail_after(CALL_TIMEOUT):
            converted = await client.call_tool(
                "time_convert_time",
                {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"},
            )
            fetched = await client.call_tool("fetch_fetch", {"url": stack.page_url})
            log = await client.call_tool("git_git_log", {"repo_path": str(stack.repo)})

    assert not converted.is_error, _text(converted)
    assert converted.structured_content is not None
    assert converted.structured_content["target"]["timezone"] == "Asia/Tokyo"
    assert converted.structured_content["target"]["datetime"].endswith("T21:00:00+09:00")
    assert converted.structured_content["time_difference"] == "+9.0h"
    assert not fetched.is_error, _text(fetched)
    assert stack.page_marker in _text(fetched)
    assert not log.is_error, _text(log)
    assert "Initial commit" in _text(log)


async def test_image_content_arrives_intact(stack: Stack, mode: str) -> None:
    async with Client(stack.vmcp.url, mode=mode) as client:
        result = await client.call_tool("fault_stdio_image", {})
    images = [block for block in result.content if isinstance(block, types.ImageContent)]
    assert len(images) == 1
    assert images[0].mime_type == "image/png"
    direct = stack.direct["results"][_call_key("fault_stdio", "image", {})]
    assert images[0].data == next(b for b in direct.content if isinstance(b, types.ImageContent)).data


async def test_unknown_tool_is_an_error_result_naming_it(stack: Stack, mode: str) -> None:
    async with Client(stack.vmcp.url, mode=mode) as client:
        result = await client.call_tool("no_such_tool_anywhere", {"x": 1})
    assert result.is_error
    assert "no_such_tool_anywhere" in _text(result)


async def test_backend_error_result_passes_through(stack: Stack, mode: str) -> None:
    async with Client(stack.vmcp.url, mode=mode) as client:
        result = await client.call_tool("fault_fail", {"message": "the backend says no"})
    assert result.is_error
    assert _text(result) == "the backend says no"


async def test_stdio_env_from_config_reaches_the_child(stack: Stack, mode: str) -> None:
    async with Client(stack.vmcp.url, mode=mode) as client:
        result = await client.call_tool("fault_stdio_env", {"name": "VMCP_TEST_TOKEN"})
        unset = await client.call_tool("fault_stdio_env", {"name": "VMCP_TEST_NOT_SET"})
    assert _text(result) == SECRET_ENV["VMCP_TEST_TOKEN"]
    assert _text(unset) == ""


@pytest.mark.parametrize("backend", ["fault", "fault_stdio", "legacy"])
async def test_progress_notifications_reach_the_caller(stack: Stack, mode: str, backend: str) -> None:
    received: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        received.append((progress, total, message))

    async with Client(stack.vmcp.url, mode=mode) as client:
        with anyio.fail_after(CALL_TIMEOUT):
            result = await client.call_tool(f"{backend}_progress", {"steps": 4}, progress_callback=on_progress)
    assert not result.is_error, _text(result)
    assert [(p, t) for p, t, _ in received] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert received[-1][2] == "step 4/4"


async def test_client_meta_reaches_the_backend(stack: Stack, mode: str) -> None:
    meta: Any = {"example.com/trace": "trace-abc", "example.com/tenant": {"id": 7}}
    async with Client(stack.vmcp.url, mode=mode) as client:
        result = await client.call_tool("fault_record_meta", {}, meta=meta)
    seen = result.structured_content["meta"] if result.structured_content else {}
    assert seen["example.com/trace"] == "trace-abc"
    assert seen["example.com/tenant"] == {"id": 7}
    assert "progressToken" not in seen


async def test_client_progress_token_is_not_forwarded(stack: Stack, mode: str) -> None:
    """The backend gets vmcp's own progress token (its notifications are relayed under the caller's)."""
    meta: Any = {"example.com/trace": "with-token", "progressToken": "client-token-9f3"}
    async with Client(stack.vmcp.url, mode=mode) as client:
        result = await client.call_tool("fault_record_meta", {}, meta=meta)
    seen = result.structured_content["meta"] if result.structured_content else {}
    assert seen["example.com/trace"] == "with-token"
    assert seen.get("progressToken") != "client-token-9f3"


async def test_handshake_era_backend_gets_no_envelope_of_the_callers_hop(stack: Stack, mode: str) -> None:
    """The `io.modelcontextprotocol/*` request envelope describes the client→vmcp hop (its protocol
    version, its clientInfo and capabilities). A backend that vmcp reached over the 2025-11-25
    handshake must not receive a request claiming protocol 2026-07-28 and another client's identity."""
    async with Client(stack.vmcp.url, mode=mode) as client:
        result = await client.call_tool("legacy_record_meta", {}, meta={"example.com/trace": "t"})
    status = stack.vmcp.backend_status("legacy")
    assert status["protocol_version"] == "2025-11-25"
    seen = result.structured_content["meta"] if result.structured_content else {}
    assert seen["example.com/trace"] == "t"
    leaked = sorted(key for key in seen if key.startswith("io.modelcontextprotocol/"))
    assert leaked == [], f"the caller's request envelope leaked to a 2025-11-25 backend: {leaked}"


# --------------------------------------------------------------------------- prompts and resources


async def test_prompt_routes_to_its_backend(stack: Stack, mode: str) -> None:
    async with Client(stack.vmcp.url, mode=mode) as client:
        loud = await client.get_prompt("fault_greet", {"who": "Ada", "style": "loud"})
        plain = await client.get_prompt("fault_stdio_greet", {"who": "Grace"})
        with pytest.raises(MCPError):
            await client.get_prompt("no_such_prompt", {})
    assert [m.content.text for m in loud.messages if isinstance(m.content, types.TextContent)] == ["HELLO, ADA!"]
    assert [m.content.text for m in plain.messages if isinstance(m.content, types.TextContent)] == ["Hello, Grace!"]


async def test_resources_route_to_the_fault_backend(stack: Stack, mode: str) -> None:
    async with Client(stack.vmcp.url, mode=mode) as client:
        static = await client.read_resource("fault://static")
        item = await client.read_resource("fault://item/42")
        with pytest.raises(MCPError):
            await client.read_resource("nowhere://nothing")
    assert [c.text for c in static.contents if isinstance(c, types.TextResourceContents)] == [
        "static content from fault"
    ]
    assert [c.text for c in item.contents if isinstance(c, types.TextResourceContents)] == ["item 42 from fault"]


# --------------------------------------------------------------------------- transport and environment


_POST_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
_INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "host-check", "version": "1"},
    },
}
# A self-contained 2026-07-28 request: no session, the envelope rides in `_meta`.
_MODERN_CALL = {
    "jsonrpc": "2.0",
    "id": 7,
    "method": "tools/call",
    "params": {
        "name": "fault_echo",
        "arguments": {"text": "raw"},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "host-check", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {},
        },
    },
}
_MODERN_HEADERS = {
    **_POST_HEADERS,
    "Mcp-Protocol-Version": "2026-07-28",
    "Mcp-Method": "tools/call",
    "Mcp-Name": "fault_echo",
}


@pytest.mark.parametrize(
    ("body", "headers"), [(_INITIALIZE, _POST_HEADERS), (_MODERN_CALL, _MODERN_HEADERS)], ids=["initialize", "modern"]
)
async def test_host_and_origin_headers_are_validated(
    stack: Stack, body: dict[str, Any], headers: dict[str, str]
) -> None:
    async with httpx.AsyncClient(timeout=10.0) as http:
        evil_host = await http.post(stack.vmcp.url, json=body, headers={**headers, "Host": "evil.example"})
        evil_origin = await http.post(stack.vmcp.url, json=body, headers={**headers, "Origin": "http://evil.example"})
        good = await http.post(stack.vmcp.url, json=body, headers=headers)
        local_origin = await http.post(
            stack.vmcp.url, json=body, headers={**headers, "Origin": f"http://127.0.0.1:{stack.vmcp.port}"}
        )
    assert 400 <= evil_host.status_code < 500, evil_host.status_code
    assert 400 <= evil_origin.status_code < 500, evil_origin.status_code
    assert "evil" not in evil_host.text and "raw" not in evil_host.text
    assert good.status_code == 200, good.text
    assert local_origin.status_code == 200, local_origin.text


async def test_plain_calls_work_while_temporal_is_unreachable(stack: Stack, mode: str) -> None:
    """The config names a Temporal address where nothing listens; forwarding never touches it."""
    async with Client(stack.vmcp.url, mode=mode) as client:
        with anyio.fail_after(CALL_TIMEOUT):
            result = await client.call_tool("fault_add", {"a": 1, "b": 2})
    assert result.structured_content == {"result": 3}
    status = stack.vmcp.status()
    assert status["ready"] is True
    assert all(b["state"] == "ready" for b in status["backends"]), status["backends"]


# --------------------------------------------------------------------------- other strategies


async def test_priority_keeps_original_names_and_the_first_listed_wins(
    stack: Stack, procs: Any, fault_stdio_backend: Any
) -> None:
    config = {
        "backends": [
            {"name": "fault", "transport": "streamable-http", "url": stack.fault_url},
            fault_stdio_backend("local", server_name="local-server"),
        ],
        "aggregation": {"conflict_resolution": "priority", "priority": ["local", "fault"]},
    }
    served = procs.vmcp(config)
    async with Client(served.url, mode="auto") as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        winner = await client.call_tool("count", {})
        loser = await client.call_tool("fault_count", {})
        prompt = await client.get_prompt("greet", {"who": "x"})
        prefixed_prompt = await client.get_prompt("fault_greet", {"who": "y"})
    originals = {"echo", "add", "slow", "fail", "crash", "count", "env", "progress", "image", "record_meta"}
    assert originals <= names
    assert {f"fault_{name}" for name in originals} <= names
    assert winner.structured_content is not None and winner.structured_content["name"] == "local-server"
    assert loser.structured_content is not None and loser.structured_content["name"] == "fault"
    assert prompt.messages and prefixed_prompt.messages


async def test_manual_keeps_original_names_and_overrides_exactly(stack: Stack, procs: Any) -> None:
    config = {
        "backends": [
            {"name": "time", "transport": "stdio", "command": "mcp-server-time", "args": ["--local-timezone", "UTC"]},
            {"name": "fault", "transport": "streamable-http", "url": stack.fault_url},
        ],
        "aggregation": {
            "conflict_resolution": "manual",
            "backends": {
                "fault": {"overrides": {"echo": {"name": "say", "description": "Say it back"}}},
                "time": {"include": ["get_*"]},
            },
        },
    }
    served = procs.vmcp(config)
    async with Client(served.url, mode="auto") as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        said = await client.call_tool("say", {"text": "manual"})
        now = await client.call_tool("get_current_time", {"timezone": "UTC"})
    assert "get_current_time" in tools and "convert_time" not in tools
    assert {"say", "add", "count", "record_meta"} <= set(tools)
    assert "echo" not in tools and not any(name.startswith("fault_") for name in tools)
    assert tools["say"].description == "Say it back"
    assert said.structured_content == {"text": "manual"}
    assert now.structured_content is not None and now.structured_content["timezone"] == "UTC"


def test_manual_with_an_unresolved_clash_refuses_to_start(
    stack: Stack, tmp_path: Path, fault_stdio_backend: Any, free_port: Any
) -> None:
    """`manual` promises every clash is settled: with one left, `vmcp serve` names it and exits 1
    instead of serving a catalogue decided by which backend connected first."""
    config = {
        "temporal": {"address": "127.0.0.1:1"},
        "backends": [
            {"name": "fault", "transport": "streamable-http", "url": stack.fault_url},
            fault_stdio_backend("other"),
        ],
        "aggregation": {"conflict_resolution": "manual"},
    }
    config_file = tmp_path / "clash.yaml"
    config_file.write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "vmcp"), "serve", "--config", str(config_file), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "not starting" in proc.stderr
    assert "aggregation.backends.other.overrides.echo.name" in proc.stderr
    assert "Traceback" not in proc.stderr
