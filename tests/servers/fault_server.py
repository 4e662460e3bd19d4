"""A real MCP server for fault injection, written with the SDK's `MCPServer`.

    python -m tests.servers.fault_server --transport stdio|streamable-http [--port P] [--name N]
        [--legacy-only] [--startup-delay SECONDS]

Both transports serve both protocol eras: the SDK's dual-era loop lets the client's first
request decide (`initialize` → 2025-11-25 handshake; `server/discover` or a 2026-07-28 envelope
→ the modern, sessionless era). `--legacy-only` refuses `server/discover`, so a client in
`auto` mode falls back to the handshake: the way to test a backend that only speaks the old era.

The tools are deliberately plain so a test can compare what it gets through vmcp with what
the server answers directly: `count` reports how many tool calls and how many connection set-ups
(`initialize` / `server/discover`) this process has served, which shows whether concurrent calls
shared one connection and whether a restart produced a new process.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import time
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel

# A 1x1 red PNG: small, valid, and byte-comparable after a round trip.
PNG_1X1 = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
        "0000000c4944415408d763f8cfc000000301010018dd8db00000000049454e44ae426082"
    )
).decode()

_HANDSHAKE_METHODS = ("initialize", "server/discover")


class _Counters:
    def __init__(self) -> None:
        self.tallies: dict[str, int] = {}  # label -> calls (exactly-once checks)
        self.keys: dict[str, int] = {}  # idempotency key -> calls carrying it
        self.running = 0
        self.max_running = 0  # the most `slow` calls ever in progress at once
        self.cancelled = 0
        self.tool_calls = 0
        self.connections = 0
        self.methods: dict[str, int] = {}
        self.fetched: list[dict[str, Any]] = []  # every `fetch` call's arguments, as received


def _text(text: str, structured: dict[str, Any] | None = None, *, is_error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content=structured,
        is_error=is_error,
    )


def _digest(value: str) -> str:
    """What the tests compare credentials by: a call's result may land in workflow history."""
    return hashlib.sha256(value.encode()).hexdigest()[:16]


class _Answer(BaseModel):
    answer: str


def create_server(name: str = "fault", *, legacy_only: bool = False, modern_only: bool = False) -> MCPServer:
    counters = _Counters()

    async def counting(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        counters.methods[ctx.method] = counters.methods.get(ctx.method, 0) + 1
        if ctx.method in _HANDSHAKE_METHODS:
            if legacy_only and ctx.method == "server/discover":
                raise MCPError(code=types.METHOD_NOT_FOUND, message="this server only speaks the handshake era")
            if modern_only and ctx.method == "initialize":
                raise MCPError(code=types.METHOD_NOT_FOUND, message="this server only speaks 2026-07-28")
            counters.connections += 1
        elif ctx.method == "tools/call":
            counters.tool_calls += 1
        return await call_next(ctx)

    # subscriptions (the default in-memory bus) serve `subscriptions/listen`: 2026-07-28 clients
    # follow list changes and resource updates through it
    server = MCPServer(name, version="1.0.0", middleware=[counting], log_level="WARNING")

    @server.tool(description="Echo the text back, as text and as structuredContent.")
    def echo(text: str) -> types.CallToolResult:
        return _text(text, {"text": text})

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Sleep for `seconds`, then answer.")
    async def slow(seconds: float, label: str = "") -> types.CallToolResult:
        counters.running += 1
        counters.max_running = max(counters.max_running, counters.running)
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            counters.cancelled += 1  # the client (or vmcp on its behalf) cancelled the call
            raise
        finally:
            counters.running -= 1
        if label:
            counters.tallies[label] = counters.tallies.get(label, 0) + 1
        return _text(f"slept {seconds:g}s", {"slept": seconds, "label": label})

    @server.tool(description="Count a call under `label` and answer with how many there were.")
    def tally(label: str, ctx: Context) -> types.CallToolResult:
        counters.tallies[label] = counters.tallies.get(label, 0) + 1
        key = (ctx.request_context.meta or {}).get("io.vmcp/idempotency-key")
        if isinstance(key, str):
            counters.keys[key] = counters.keys.get(key, 0) + 1
        return _text(
            f"{label}: {counters.tallies[label]}", {"label": label, "calls": counters.tallies[label], "key": key}
        )

    @server.tool(description="Fail (isError) the first `failures` calls with this `label`, then succeed.")
    def flaky(label: str, failures: int) -> types.CallToolResult:
        seen = counters.tallies.get(label, 0) + 1
        counters.tallies[label] = seen
        if seen <= failures:
            return _text(f"{label}: failure {seen} of {failures}", is_error=True)
        return _text(f"{label}: succeeded on call {seen}", {"label": label, "calls": seen})

    @server.tool(description="Fail on purpose: an isError result carrying the message.")
    def fail(message: str) -> types.CallToolResult:
        return _text(message, is_error=True)

    @server.tool(description="Exit the process at once, without answering.")
    def crash() -> types.CallToolResult:
        os._exit(17)

    @server.tool(description="Look a person up by name: their id (an isError result for a name nobody has).")
    def lookup(name: str) -> types.CallToolResult:
        if not name.isalpha():
            return _text(f"nobody is called {name!r}", is_error=True)
        return _text(f"id of {name}", {"id": f"u-{name.lower()}", "name": name})

    @server.tool(description="Pretend to fetch `url`: record the arguments as received and echo them.")
    def fetch(url: str, max_length: int = 5000, raw: bool = False, user: str = "") -> types.CallToolResult:
        arguments = {"url": url, "max_length": max_length, "raw": raw, "user": user}
        counters.fetched.append(arguments)
        return _text(f"fetched {url}", arguments)

    @server.tool(description="What credentials this call came with: a digest of each (never the value).")
    def whoami(ctx: Context) -> types.CallToolResult:
        headers = {k.lower(): v for k, v in (ctx.headers or {}).items()}
        seen = {name: _digest(headers[name]) for name in ("authorization", "x-api-key") if name in headers}
        seen["x-request-id"] = headers.get("x-request-id", "")
        return _text(json.dumps(seen, sort_keys=True), seen)

    @server.tool(description="How many tool calls and connection set-ups this process has served.")
    def count() -> types.CallToolResult:
        data = {
            "calls": counters.tool_calls,
            "cancelled": counters.cancelled,
            "tallies": dict(counters.tallies),
            "keys": dict(counters.keys),
            "max_running": counters.max_running,
            "running": counters.running,
            "connections": counters.connections,
            "pid": os.getpid(),
            "name": name,
            "methods": dict(counters.methods),
            "fetched": list(counters.fetched),
        }
        return _text(str(counters.tool_calls), data)

    @server.tool(description="The value of an environment variable of this process ('' when unset).")
    def env(name: str) -> types.CallToolResult:
        value = os.environ.get(name)
        return _text(value or "", {"name": name, "value": value})

    @server.tool(description="Send `steps` progress notifications, then answer.")
    async def progress(steps: int, ctx: Context) -> types.CallToolResult:
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, f"step {step}/{steps}")
        return _text(f"done {steps} steps", {"steps": steps})

    @server.tool(description="A 1x1 PNG image.")
    def image() -> types.CallToolResult:
        return types.CallToolResult(
            content=[
                types.ImageContent(type="image", data=PNG_1X1, mime_type="image/png"),
                types.TextContent(type="text", text="a red pixel"),
            ]
        )

    @server.tool(description="Return the request `_meta` this server received.")
    def record_meta(ctx: Context) -> types.CallToolResult:
        meta = dict(ctx.request_context.meta or {})
        if "progress_token" in meta:  # the SDK's Python name for the wire's progressToken
            meta["progressToken"] = meta.pop("progress_token")
        return _text(json.dumps(meta, sort_keys=True, default=str), {"meta": meta})

    @server.tool(description="Send `lines` info log messages during the call, then answer.")
    async def chatty(lines: int, ctx: Context) -> types.CallToolResult:
        for line in range(1, lines + 1):
            await ctx.log("info", f"line {line} of {lines}", logger_name=name)
        return _text(f"logged {lines} lines", {"lines": lines})

    @server.tool(description="Register a new tool named `tool` (it echoes), and announce the list change.")
    async def grow(tool: str, ctx: Context) -> types.CallToolResult:
        server.add_tool(lambda text: text, name=tool, description=f"Grown at runtime: echoes ({tool})")
        await ctx.notify_tools_changed()  # 2026-07-28 listeners
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            await ctx.session.send_tool_list_changed()  # handshake-era connections
        return _text(f"grew {tool}", {"tool": tool})

    @server.tool(description="Announce that the resource at `uri` changed.")
    async def touch(uri: str, ctx: Context) -> types.CallToolResult:
        await ctx.notify_resource_updated(uri)  # 2026-07-28 listeners
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            await ctx.session.send_resource_updated(uri)  # handshake-era subscribers
        return _text(f"touched {uri}", {"uri": uri})

    @server.tool(description="Ask the user `question` (elicitation), and return the answer.")
    async def ask(question: str, ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            answered = (ctx.input_responses or {}).get("question")
            if answered is None:  # 2026-07-28: no back-channel; ask through the result, the client retries
                request = types.ElicitRequest(
                    params=types.ElicitRequestFormParams(message=question, requested_schema=schema)
                )
                return types.InputRequiredResult(input_requests={"question": request}, request_state="asked")
            result = types.ElicitResult.model_validate(answered.model_dump(by_alias=True, exclude_none=True))
        else:
            result = await ctx.request_context.session.elicit_form(question, schema, related_request_id=ctx.request_id)
        answer = (result.content or {}).get("answer") if result.action == "accept" else None
        return _text(f"{result.action}: {answer}", {"action": result.action, "answer": answer})

    @server.tool(description="Ask the user `question` the usual SDK way (`ctx.elicit`): handshake era only.")
    async def ask_sdk_way(question: str, ctx: Context) -> types.CallToolResult:
        result = await ctx.elicit(question, schema=_Answer)
        answer = result.data.answer if result.action == "accept" else None
        return _text(f"{result.action}: {answer}", {"action": result.action, "answer": answer})

    @server.prompt(name="greet", description="A greeting for someone, in a style.")
    def greet(who: str, style: str = "plain") -> str:
        greeting = f"Hello, {who}!"
        return greeting.upper() if style == "loud" else greeting

    @server.resource("fault://static", name="static", description="A fixed text.", mime_type="text/plain")
    def static() -> str:
        return f"static content from {name}"

    @server.resource("fault://item/{id}", name="item", description="An item by id.", mime_type="text/plain")
    def item(id: str) -> str:
        return f"item {id} from {name}"

    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fault_server", description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=["stdio", "streamable-http"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="fault")
    parser.add_argument("--legacy-only", action="store_true", help="refuse server/discover (2025-11-25 only)")
    parser.add_argument("--modern-only", action="store_true", help="refuse initialize (2026-07-28 only)")
    parser.add_argument("--json-response", action="store_true", help="answer POSTs with JSON, not event streams")
    parser.add_argument(
        "--startup-delay", type=float, default=0.0, help="seconds to wait before serving (a slow-booting server)"
    )
    args = parser.parse_args(argv)
    if args.startup_delay > 0:
        time.sleep(args.startup_delay)  # the fault being injected: a server that takes long to boot
    server = create_server(args.name, legacy_only=args.legacy_only, modern_only=args.modern_only)
    if args.transport == "stdio":
        server.run("stdio")
        return
    import uvicorn

    app = server.streamable_http_app(host=args.host, json_response=args.json_response)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
