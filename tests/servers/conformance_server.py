"""The fixture server for the official MCP conformance suite, written with the SDK's low-level `Server`.

    python -m tests.servers.conformance_server [--host H] [--port P]

It serves streamable HTTP on `http://H:P/mcp`, one server for two versions of
`@modelcontextprotocol/conformance`:

- 0.1.16's server scenarios (the active suite plus `json-schema-2020-12`): the `test_*` tools,
  prompts and resources, `test_reconnection` (SSE polling), `json_schema_2020_12_tool`, completion
  for `test_prompt_with_arguments`, `logging/setLevel`, and subscriptions on `test://watched-resource`.
- 0.2.0-alpha.12's `--requirements 2026-07-28` set: the same names, `json_schema_2020_12_tool`
  with SEP-2106's `allOf`/`anyOf`, `if`/`then`/`else` and `$anchor`, and the diagnostics in
  `tests.servers.conformance_2026` - the `test_input_required_result_*` tools and prompt,
  `test_missing_capability`, `test_streaming_elicitation`, `test_logging_tool` and
  `test_mcp_param_header` (`Mcp-Param-*`); and for its `tasks-*` scenarios the tasks extension
  (SEP-2663) in `tests.servers.conformance_tasks`: `greet`, `slow_compute`, `failing_job`,
  `protocol_error_job`, `confirm_delete`, `multi_input`, `test_tool_with_task` and `tasks/*`.

The suite is run against it directly (the baseline) and through vmcp (which must score the same).

The low-level `Server` is used instead of `MCPServer` because the scenarios check wire details a
decorator-derived server would not let us state exactly: hand-written input schemas (`$schema`,
`$defs`, `additionalProperties: false`), elicitation schemas with every enum variant, and handlers
for `logging/setLevel` and `resources/subscribe`.

Both protocol eras are served (the SDK's dual-era loop). On a 2025-11-25 handshake session,
sampling and elicitation are server-to-client requests on the call's own stream; on a 2026-07-28
connection there is no back-channel, so the same tools answer with an `InputRequiredResult` and
finish when the client retries with `inputResponses` - a gateway in front of this server may use
either era. With `--session-requests` the tools ask through the session in both eras, as tools
written the usual SDK way (`ctx.elicit`, `ctx.session.create_message`) do: they work only on a
handshake session, so a gateway must reach this server in the handshake era for such callers.
Resource subscriptions and `logging/setLevel` exist only in the handshake era; in 2026-07-28 a
tool logs only when the request's `_meta` names a `logLevel` (the SDK enforces it). `requestState`
is sealed and verified by the SDK's `RequestStateBoundary` under a per-process key, and the
`Mcp-Param-*` headers of a 2026-07-28 `tools/call` are checked against the called tool's schema
by the SDK's HTTP entry (`get_tool_input_schema`).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import struct
import warnings
import wave
import zlib
from dataclasses import dataclass, field
from typing import Any, get_args

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from tests.servers.conformance_2026 import (
    Ctx,
    Diagnostics2026,
    PromptHandler,
    PromptResult,
    ToolHandler,
    ToolResult,
    request_state_boundary,
)
from tests.servers.conformance_tasks import ConformanceTasks

# Logging, sampling and subscriptions are deprecated in 2026-07-28, but this server exists to
# exercise them for 2025-era clients; the SDK's reminders would only drown the test logs.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

STEP_DELAY = 0.05  # the suite asks for ~50 ms between a tool's notifications
WATCHED_URI = "test://watched-resource"
TEMPLATE_URI = "test://template/{id}/data"
JSON_SCHEMA_2020_12 = "https://json-schema.org/draft/2020-12/schema"
LOG_LEVELS: tuple[types.LoggingLevel, ...] = get_args(types.LoggingLevel)  # severity-ascending


# --------------------------------------------------------------------------- media


def _png_1x1_red() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    pixels = zlib.compress(b"\x00\xff\x00\x00")  # filter byte, then one red pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def _wav_silence(frames: int = 800, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * frames)
    return buffer.getvalue()


PNG = base64.b64encode(_png_1x1_red()).decode()
WAV = base64.b64encode(_wav_silence()).decode()


# --------------------------------------------------------------------------- resumability


@dataclass
class MemoryEventStore(EventStore):
    """Keeps every SSE event so a client that lost a stream can resume it with Last-Event-ID.

    With an event store the SDK primes each 2025-11-25 POST stream with an event id and offers
    `close_sse_stream` to handlers, which `test_reconnection` uses (SEP-1699 polling)."""

    events: list[tuple[str, str, types.JSONRPCMessage | None]] = field(default_factory=list)
    _next: int = 0

    async def store_event(self, stream_id: str, message: types.JSONRPCMessage | None) -> str:
        self._next += 1
        event_id = str(self._next)
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        position = next((i for i, (event_id, _, _) in enumerate(self.events) if event_id == last_event_id), None)
        if position is None:
            return None
        stream_id = self.events[position][1]
        for event_id, stream, message in self.events[position + 1 :]:
            if stream == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


# --------------------------------------------------------------------------- tools


def _text_result(text: str, *, is_error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=is_error)


def _object_schema(properties: dict[str, Any] | None = None, required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties or {}}
    if required:
        schema["required"] = required
    return schema


ELICITATION_SCHEMA: dict[str, Any] = _object_schema(
    {
        "username": {"type": "string", "description": "User's response"},
        "email": {"type": "string", "description": "User's email address"},
    },
    ["username", "email"],
)

SEP1034_DEFAULTS_SCHEMA: dict[str, Any] = _object_schema(
    {
        "name": {"type": "string", "description": "Your name", "default": "John Doe"},
        "age": {"type": "integer", "description": "Your age", "default": 30},
        "score": {"type": "number", "description": "Your score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "Account status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verified account", "default": True},
    }
)

SEP1330_ENUMS_SCHEMA: dict[str, Any] = _object_schema(
    {
        "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
        "titledSingle": {
            "type": "string",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
        "titledMulti": {
            "type": "array",
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    }
)

# 0.1.16 reads `$schema`, `$defs` and `additionalProperties`; 0.2.0-alpha.12 also SEP-2106's
# composition (`allOf` holding an `anyOf`), conditional (`if`/`then`/`else`) and `$anchor` keywords.
JSON_SCHEMA_TOOL_INPUT: dict[str, Any] = {
    "$schema": JSON_SCHEMA_2020_12,
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


async def _ask(
    ctx: Ctx, params: types.CallToolRequestParams, request: types.InputRequest, session_requests: bool = False
) -> Any:
    """Put `request` to the client in whichever way this connection's era allows.

    Handshake era: a server-to-client request on the call's own stream; returns its result.
    2026-07-28: returns an `InputRequiredResult` the first time, and the client's answer
    (from `inputResponses`) when it retries the call. `session_requests` (`--session-requests`):
    always the session's request, the usual SDK way, which a 2026-07-28 request cannot carry."""
    if session_requests or ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        result_type = types.CreateMessageResult if request.method == "sampling/createMessage" else types.ElicitResult
        metadata = ServerMessageMetadata(related_request_id=ctx.request_id)
        return await ctx.session.send_request(request, result_type, metadata=metadata)
    if params.input_responses and "input" in params.input_responses:
        return params.input_responses["input"]
    return types.InputRequiredResult(input_requests={"input": request}, request_state=params.name)


@dataclass
class ConformanceFixture:
    """The handlers. Per-session state (log level, subscriptions) is keyed by `Mcp-Session-Id`."""

    session_requests: bool = False  # ask through the session in every era, as SDK-written tools do
    log_levels: dict[str, types.LoggingLevel] = field(default_factory=dict)
    subscriptions: dict[str, set[str]] = field(default_factory=dict)
    diagnostics: Diagnostics2026 = field(init=False)  # the 0.2.0-alpha.12 (2026-07-28) names
    tasks: ConformanceTasks = field(init=False)  # the tasks extension (SEP-2663) and its tools

    def __post_init__(self) -> None:
        self.diagnostics = Diagnostics2026(session_requests=self.session_requests)
        self.tasks = ConformanceTasks(session_requests=self.session_requests)

    @staticmethod
    def _session_key(ctx: Ctx) -> str:
        request = ctx.request
        session_id = request.headers.get("mcp-session-id") if request is not None else None
        return session_id or ""

    # ------------------------------------------------------------------ tool bodies

    async def _simple_text(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        return _text_result("This is a simple text response for testing.")

    async def _image(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        return types.CallToolResult(content=[types.ImageContent(type="image", data=PNG, mime_type="image/png")])

    async def _audio(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        return types.CallToolResult(content=[types.AudioContent(type="audio", data=WAV, mime_type="audio/wav")])

    async def _embedded_resource(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        resource = types.TextResourceContents(
            uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
        )
        return types.CallToolResult(content=[types.EmbeddedResource(type="resource", resource=resource)])

    async def _mixed(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        resource = types.TextResourceContents(
            uri="test://mixed-content-resource",
            mime_type="application/json",
            text=json.dumps({"test": "data", "value": 123}),
        )
        return types.CallToolResult(
            content=[
                types.TextContent(type="text", text="Multiple content types test:"),
                types.ImageContent(type="image", data=PNG, mime_type="image/png"),
                types.EmbeddedResource(type="resource", resource=resource),
            ]
        )

    async def _logging(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        messages = ["Tool execution started", "Tool processing data", "Tool execution completed"]
        for index, message in enumerate(messages):
            if index:
                await anyio.sleep(STEP_DELAY)
            await self._log(ctx, "info", message)
        return _text_result("Tool with logging executed successfully")

    async def _log(self, ctx: Ctx, level: types.LoggingLevel, data: Any) -> None:
        threshold = self.log_levels.get(self._session_key(ctx), "debug")
        if LOG_LEVELS.index(level) >= LOG_LEVELS.index(threshold):
            await ctx.session.send_log_message(level, data, logger="conformance", related_request_id=ctx.request_id)

    async def _error(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        return _text_result("This tool intentionally returns an error for testing", is_error=True)

    async def _progress(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        for index, progress in enumerate((0, 50, 100)):
            if index:
                await anyio.sleep(STEP_DELAY)
            await ctx.session.report_progress(progress, 100, f"Completed step {index + 1} of 3")
        return _text_result("Tool with progress executed successfully")

    async def _sampling(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        prompt = str((params.arguments or {}).get("prompt", ""))
        if not self._client_can(ctx, types.ClientCapabilities(sampling=types.SamplingCapability())):
            return _text_result("The client does not support sampling", is_error=True)
        request = types.CreateMessageRequest(
            params=types.CreateMessageRequestParams(
                messages=[
                    types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt)),
                ],
                max_tokens=100,
            )
        )
        answer = await _ask(ctx, params, request, self.session_requests)
        if isinstance(answer, types.InputRequiredResult):
            return answer
        content = answer.content
        text = content.text if isinstance(content, types.TextContent) else json.dumps(answer.model_dump(mode="json"))
        return _text_result(f"LLM response: {text}")

    async def _elicit(self, ctx: Ctx, params: types.CallToolRequestParams, message: str, schema: Any) -> ToolResult:
        if not self._client_can(ctx, types.ClientCapabilities(elicitation=types.ElicitationCapability())):
            return _text_result("The client does not support elicitation", is_error=True)
        request = types.ElicitRequest(
            params=types.ElicitRequestFormParams(message=message, requested_schema=schema),
        )
        answer = await _ask(ctx, params, request, self.session_requests)
        if isinstance(answer, types.InputRequiredResult):
            return answer
        return _text_result(
            f"Elicitation completed: action={answer.action}, content={json.dumps(answer.content or {})}"
        )

    async def _elicitation(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        message = str((params.arguments or {}).get("message", "Please provide your information"))
        return await self._elicit(ctx, params, message, ELICITATION_SCHEMA)

    async def _elicitation_defaults(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        return await self._elicit(ctx, params, "Please review and update the form fields", SEP1034_DEFAULTS_SCHEMA)

    async def _elicitation_enums(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        return await self._elicit(ctx, params, "Please pick from each kind of choice", SEP1330_ENUMS_SCHEMA)

    async def _json_schema(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        return _text_result(f"Received: {json.dumps(params.arguments or {}, sort_keys=True)}")

    async def _reconnection(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        # SEP-1699 polling: drop this call's SSE stream before answering, so the client must
        # resume with Last-Event-ID and get the result replayed from the event store. The SDK
        # offers the callback only to 2025-11-25+ requests when an event store is configured.
        if ctx.close_sse_stream is not None:
            await ctx.close_sse_stream()
            await anyio.sleep(STEP_DELAY)
        return _text_result("Reconnection test completed")

    @staticmethod
    def _client_can(ctx: Ctx, capability: types.ClientCapabilities) -> bool:
        return ctx.session.check_client_capability(capability)

    # ------------------------------------------------------------------ catalogue

    def tools(self) -> list[tuple[types.Tool, ToolHandler]]:
        def tool(name: str, description: str, schema: dict[str, Any] | None = None) -> types.Tool:
            return types.Tool(name=name, description=description, input_schema=schema or _object_schema())

        return [
            (tool("test_simple_text", "Returns a simple text content block."), self._simple_text),
            (tool("test_image_content", "Returns a 1x1 PNG image content block."), self._image),
            (tool("test_audio_content", "Returns a short WAV audio content block."), self._audio),
            (tool("test_embedded_resource", "Returns an embedded text resource."), self._embedded_resource),
            (tool("test_multiple_content_types", "Returns text, image and resource content."), self._mixed),
            (tool("test_tool_with_logging", "Sends three log notifications while it runs."), self._logging),
            (tool("test_error_handling", "Always fails: returns an isError result."), self._error),
            (tool("test_tool_with_progress", "Reports progress 0, 50 and 100 of 100."), self._progress),
            (
                tool(
                    "test_sampling",
                    "Asks the client's LLM to answer the prompt (sampling/createMessage).",
                    _object_schema({"prompt": {"type": "string", "description": "The prompt for the LLM"}}, ["prompt"]),
                ),
                self._sampling,
            ),
            (
                tool(
                    "test_elicitation",
                    "Asks the user for a username and an email (elicitation/create).",
                    _object_schema({"message": {"type": "string", "description": "What to ask"}}, ["message"]),
                ),
                self._elicitation,
            ),
            (
                tool("test_elicitation_sep1034_defaults", "Elicits a form whose fields carry defaults (SEP-1034)."),
                self._elicitation_defaults,
            ),
            (
                tool("test_elicitation_sep1330_enums", "Elicits a form with every enum variant (SEP-1330)."),
                self._elicitation_enums,
            ),
            (
                tool("json_schema_2020_12_tool", "Tool with JSON Schema 2020-12 features", JSON_SCHEMA_TOOL_INPUT),
                self._json_schema,
            ),
            (tool("test_reconnection", "Closes its SSE stream mid-call, then answers (SEP-1699)."), self._reconnection),
            # server-stateless's name for the logging tool: in 2026-07-28 it must stay silent unless
            # the request's _meta names a logLevel, which the SDK's session enforces for us.
            (tool("test_logging_tool", "As test_tool_with_logging (no logLevel in _meta: no logs)."), self._logging),
            *self.diagnostics.tools(),
        ]

    def build(self) -> Server[Any]:
        tools = self.tools()
        by_name = {definition.name: handler for definition, handler in tools}
        # The tasks extension's tools are listed here and called through `self.tasks` (see install below).
        definitions = [definition for definition, _ in tools] + self.tasks.definitions()
        schemas = {definition.name: definition.input_schema for definition in definitions}

        async def list_tools(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
            return types.ListToolsResult(tools=definitions)

        async def call_tool(ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
            handler = by_name.get(params.name)
            if handler is None:
                raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {params.name}")
            return await handler(ctx, params)

        name = "vmcp-conformance-fixture"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            server = Server(
                name,
                version="1.0.0",
                lifespan=self.tasks.lifespan,  # the task group the tasks' work runs in
                # The SDK's 2026-07-28 HTTP entry checks a tools/call's Mcp-Param-* headers against
                # the called tool's schema (SEP-2243); this saves it a tools/list per call.
                get_tool_input_schema=schemas.get,
                on_list_tools=list_tools,
                on_call_tool=call_tool,
                on_list_resources=self._list_resources,
                on_list_resource_templates=self._list_resource_templates,
                on_read_resource=self._read_resource,
                on_subscribe_resource=self._subscribe,
                on_unsubscribe_resource=self._unsubscribe,
                on_list_prompts=self._list_prompts,
                on_get_prompt=self._get_prompt,
                on_completion=self._complete,
                on_set_logging_level=self._set_level,
            )
        server.middleware.append(request_state_boundary(name))
        self.tasks.install(server)
        return server

    # ------------------------------------------------------------------ logging

    async def _set_level(self, ctx: Ctx, params: types.SetLevelRequestParams) -> types.EmptyResult:
        self.log_levels[self._session_key(ctx)] = params.level
        return types.EmptyResult()

    # ------------------------------------------------------------------ resources

    async def _list_resources(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        return types.ListResourcesResult(
            resources=[
                types.Resource(
                    uri="test://static-text",
                    name="static-text",
                    description="A static text resource.",
                    mime_type="text/plain",
                ),
                types.Resource(
                    uri="test://static-binary",
                    name="static-binary",
                    description="A static binary resource (a 1x1 PNG).",
                    mime_type="image/png",
                ),
                types.Resource(
                    uri=WATCHED_URI,
                    name="watched-resource",
                    description="A resource that can be subscribed to.",
                    mime_type="text/plain",
                ),
            ]
        )

    async def _list_resource_templates(
        self, ctx: Ctx, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(
            resource_templates=[
                types.ResourceTemplate(
                    uri_template=TEMPLATE_URI,
                    name="template-data",
                    description="Data for an id, substituted from the URI.",
                    mime_type="application/json",
                )
            ]
        )

    async def _read_resource(self, ctx: Ctx, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        uri = params.uri
        contents: types.TextResourceContents | types.BlobResourceContents
        if uri == "test://static-text":
            contents = types.TextResourceContents(
                uri=uri, mime_type="text/plain", text="This is the content of the static text resource."
            )
        elif uri == "test://static-binary":
            contents = types.BlobResourceContents(uri=uri, mime_type="image/png", blob=PNG)
        elif uri == WATCHED_URI:
            contents = types.TextResourceContents(uri=uri, mime_type="text/plain", text="Watched resource content.")
        elif (item_id := _template_id(uri)) is not None:
            data = {"id": item_id, "templateTest": True, "data": f"Data for ID: {item_id}"}
            contents = types.TextResourceContents(uri=uri, mime_type="application/json", text=json.dumps(data))
        else:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Resource not found: {uri}", data={"uri": uri})
        return types.ReadResourceResult(contents=[contents])

    async def _subscribe(self, ctx: Ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
        self.subscriptions.setdefault(self._session_key(ctx), set()).add(params.uri)
        if params.uri == WATCHED_URI:
            # Stand-in for "the resource changed": one update, on the subscribe call's own stream so
            # it reaches the client deterministically (the standalone GET stream may not be open).
            await ctx.session.send_notification(
                types.ResourceUpdatedNotification(params=types.ResourceUpdatedNotificationParams(uri=params.uri)),
                related_request_id=ctx.request_id,
            )
        return types.EmptyResult()

    async def _unsubscribe(self, ctx: Ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        self.subscriptions.get(self._session_key(ctx), set()).discard(params.uri)
        return types.EmptyResult()

    # ------------------------------------------------------------------ prompts

    async def _list_prompts(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
        def argument(name: str, description: str) -> types.PromptArgument:
            return types.PromptArgument(name=name, description=description, required=True)

        return types.ListPromptsResult(
            prompts=[
                types.Prompt(name="test_simple_prompt", description="A simple prompt without arguments."),
                types.Prompt(
                    name="test_prompt_with_arguments",
                    description="A prompt that substitutes two arguments.",
                    arguments=[argument("arg1", "First test argument"), argument("arg2", "Second test argument")],
                ),
                types.Prompt(
                    name="test_prompt_with_embedded_resource",
                    description="A prompt that embeds a resource.",
                    arguments=[argument("resourceUri", "URI of the resource to embed")],
                ),
                types.Prompt(name="test_prompt_with_image", description="A prompt that carries an image."),
                *(prompt for prompt, _ in self.diagnostics.prompts()),
            ]
        )

    async def _get_prompt(self, ctx: Ctx, params: types.GetPromptRequestParams) -> PromptResult:
        diagnostic: dict[str, PromptHandler] = {prompt.name: handler for prompt, handler in self.diagnostics.prompts()}
        if params.name in diagnostic:
            return await diagnostic[params.name](ctx, params)
        arguments = params.arguments or {}

        def user(content: types.ContentBlock) -> types.PromptMessage:
            return types.PromptMessage(role="user", content=content)

        def text(value: str) -> types.TextContent:
            return types.TextContent(type="text", text=value)

        if params.name == "test_simple_prompt":
            messages = [user(text("This is a simple prompt for testing."))]
        elif params.name == "test_prompt_with_arguments":
            arg1, arg2 = arguments.get("arg1", ""), arguments.get("arg2", "")
            messages = [user(text(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"))]
        elif params.name == "test_prompt_with_embedded_resource":
            resource = types.TextResourceContents(
                uri=arguments.get("resourceUri", "test://example-resource"),
                mime_type="text/plain",
                text="Embedded resource content for testing.",
            )
            messages = [
                user(types.EmbeddedResource(type="resource", resource=resource)),
                user(text("Please process the embedded resource above.")),
            ]
        elif params.name == "test_prompt_with_image":
            messages = [
                user(types.ImageContent(type="image", data=PNG, mime_type="image/png")),
                user(text("Please analyze the image above.")),
            ]
        else:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown prompt: {params.name}")
        return types.GetPromptResult(messages=messages)

    # ------------------------------------------------------------------ completion

    async def _complete(self, ctx: Ctx, params: types.CompleteRequestParams) -> types.CompleteResult:
        candidates: list[str] = []
        ref = params.ref
        if isinstance(ref, types.PromptReference) and ref.name == "test_prompt_with_arguments":
            candidates = {"arg1": ["paris", "park", "party"], "arg2": ["red", "green", "blue"]}.get(
                params.argument.name, []
            )
        elif isinstance(ref, types.ResourceTemplateReference) and ref.uri == TEMPLATE_URI:
            candidates = ["1", "2", "3", "123"] if params.argument.name == "id" else []
        values = [value for value in candidates if value.startswith(params.argument.value)]
        return types.CompleteResult(completion=types.Completion(values=values, total=len(values), has_more=False))


def _template_id(uri: str) -> str | None:
    prefix, suffix = "test://template/", "/data"
    if uri.startswith(prefix) and uri.endswith(suffix) and len(uri) > len(prefix) + len(suffix):
        item_id = uri[len(prefix) : -len(suffix)]
        return item_id if "/" not in item_id else None
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="conformance_server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--session-requests",
        action="store_true",
        help="tools ask for sampling and elicitation through the session in every era, the usual SDK way "
        "(a 2026-07-28 request has no back-channel for them, so there they fail)",
    )
    args = parser.parse_args(argv)
    import uvicorn

    server = ConformanceFixture(session_requests=args.session_requests).build()
    # host= makes the SDK turn on Host/Origin validation for a loopback bind (DNS rebinding).
    app = server.streamable_http_app(host=args.host, event_store=MemoryEventStore(), retry_interval=500)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
