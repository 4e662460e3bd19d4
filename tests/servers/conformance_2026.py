"""The conformance fixture's 2026-07-28 diagnostics, served by `tests.servers.conformance_server`.

These are the names `@modelcontextprotocol/conformance` 0.2.0-alpha.12's `--requirements
2026-07-28` server scenarios call beyond 0.1.16's: the `test_input_required_result_*` tools and
prompt (SEP-2322, multi-round trips), `test_missing_capability`, `test_streaming_elicitation` and
`test_logging_tool` (SEP-2575, stateless), and `test_mcp_param_header` (SEP-2243 `Mcp-Param-*`).

Every tool works in both eras. On a 2026-07-28 request a tool that needs the client's input
answers with an `InputRequiredResult` and finishes when the client retries with `inputResponses`
(and the `requestState` it was given, if any); on a handshake session it asks the same questions
as server-to-client requests on the call's own stream and finishes in one call. `requestState` is
sealed by the SDK's `RequestStateBoundary` under a key made at process start (see
`request_state_boundary`), so the handlers here see the plaintext they minted, and a state the
client altered is refused with -32602 before any handler runs.

A capability a tool needs and the client did not declare (per request in 2026-07-28 `_meta`, in
the handshake otherwise) is refused with -32021 MissingRequiredClientCapability - HTTP 400 on the
2026-07-28 wire - rather than asked for anyway.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

Ctx = ServerRequestContext[Any, Any]
ToolResult = types.CallToolResult | types.InputRequiredResult
ToolHandler = Callable[[Ctx, types.CallToolRequestParams], Awaitable[ToolResult]]
PromptResult = types.GetPromptResult | types.InputRequiredResult
PromptHandler = Callable[[Ctx, types.GetPromptRequestParams], Awaitable[PromptResult]]
Answers = dict[str, types.InputResponse]

# The client capability each kind of input request relies on.
ELICITATION = types.ClientCapabilities(elicitation=types.ElicitationCapability())
SAMPLING = types.ClientCapabilities(sampling=types.SamplingCapability())
ROOTS = types.ClientCapabilities(roots=types.RootsCapability())

MCP_PARAM_HEADER_TOOL_INPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        # SEP-2243: a 2026-07-28 client mirrors this argument into an `Mcp-Param-Region` header,
        # which the SDK's HTTP entry checks against the body before dispatch (400, -32020 on mismatch).
        "region": {"type": "string", "description": "Where to route the call", "x-mcp-header": "Region"},
    },
    "required": ["region"],
}


def request_state_boundary(server_name: str) -> RequestStateBoundary:
    """Seal every outgoing `requestState` and verify every echo, under a key this process made.

    The spec has servers treat an echoed `requestState` as attacker-controlled; with the boundary
    a tampered, expired or foreign state (minted for another tool or other arguments) is refused
    with -32602 before the handler runs. The key dies with the process: a state minted before a
    restart is refused the same way."""
    return RequestStateBoundary(RequestStateSecurity.ephemeral(), default_audience=server_name)


# --------------------------------------------------------------------------- asking the client


def is_modern(ctx: Ctx) -> bool:
    """A 2026-07-28 request: no back-channel, so questions go out as an `InputRequiredResult`."""
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def require_capability(ctx: Ctx, capability: types.ClientCapabilities) -> None:
    """Refuse with -32021 when the client did not declare `capability` (a server must not rely on it)."""
    if ctx.session.check_client_capability(capability):
        return
    data = types.MissingRequiredClientCapabilityErrorData(required_capabilities=capability)
    raise MCPError(
        code=types.MISSING_REQUIRED_CLIENT_CAPABILITY,
        message="The client did not declare a capability this request needs",
        data=data.model_dump(mode="json", by_alias=True, exclude_none=True),
    )


def _answers(request: types.InputRequest, response: types.InputResponse | None) -> bool:
    """Whether `response` is the kind of result that answers `request` (else it counts as missing)."""
    if isinstance(request, types.CreateMessageRequest):
        return isinstance(response, types.CreateMessageResult | types.CreateMessageResultWithTools)
    if isinstance(request, types.ListRootsRequest):
        return isinstance(response, types.ListRootsResult)
    return isinstance(response, types.ElicitResult)


async def _ask_on_stream(ctx: Ctx, request: types.InputRequest) -> types.InputResponse:
    """Handshake era: the question as a server-to-client request on the call's own stream."""
    metadata = ServerMessageMetadata(related_request_id=ctx.request_id)
    if isinstance(request, types.CreateMessageRequest):
        return await ctx.session.send_request(request, types.CreateMessageResult, metadata=metadata)
    if isinstance(request, types.ListRootsRequest):
        return await ctx.session.send_request(request, types.ListRootsResult, metadata=metadata)
    return await ctx.session.send_request(request, types.ElicitResult, metadata=metadata)


async def gather_input(
    ctx: Ctx,
    params: types.InputResponseRequestParams,
    requests: types.InputRequests,
    *,
    state: str | None = None,
    session_requests: bool = False,
) -> Answers | types.InputRequiredResult:
    """Get the client's answer to every request in `requests`, keyed as `requests` is.

    Handshake era (or `session_requests`): asks each in turn on the call's stream.
    2026-07-28: the answers come from the retry's `inputResponses`; until all of them are there -
    of the right kind, and alongside the `state` this round was minted with when it has one - the
    result is an `InputRequiredResult` asking for all of them again (a round's partial answers are
    not kept). Answers to keys not asked for are ignored."""
    if session_requests or not is_modern(ctx):
        return {key: await _ask_on_stream(ctx, request) for key, request in requests.items()}
    offered = params.input_responses or {}
    in_round = state is None or params.request_state == state
    answers = {key: offered[key] for key, request in requests.items() if _answers(request, offered.get(key))}
    if in_round and len(answers) == len(requests):
        return answers
    return types.InputRequiredResult(input_requests=requests, request_state=state)


def elicit(message: str, fields: dict[str, str]) -> types.ElicitRequest:
    """A form elicitation asking for `fields` (name -> JSON type), all required."""
    schema = {
        "type": "object",
        "properties": {name: {"type": kind} for name, kind in fields.items()},
        "required": list(fields),
    }
    return types.ElicitRequest(params=types.ElicitRequestFormParams(message=message, requested_schema=schema))


def sample(prompt: str, max_tokens: int) -> types.CreateMessageRequest:
    message = types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))
    return types.CreateMessageRequest(
        params=types.CreateMessageRequestParams(messages=[message], max_tokens=max_tokens),
    )


def list_roots() -> types.ListRootsRequest:
    return types.ListRootsRequest()


def describe(answer: types.InputResponse) -> str:
    """One line for an answer, for the tools' result text."""
    if isinstance(answer, types.ElicitResult):
        return f"action={answer.action}, content={json.dumps(answer.content or {}, sort_keys=True)}"
    if isinstance(answer, types.ListRootsResult):
        return ", ".join(str(root.uri) for root in answer.roots) or "no roots"
    content = answer.content
    return content.text if isinstance(content, types.TextContent) else json.dumps(answer.model_dump(mode="json"))


def _form_value(answer: types.InputResponse, field: str) -> str | None:
    if isinstance(answer, types.ElicitResult) and answer.action == "accept" and answer.content:
        value = answer.content.get(field)
        return None if value is None else str(value)
    return None


def _text_result(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


# --------------------------------------------------------------------------- the questions

ASK_NAME = elicit("What is your name?", {"name": "string"})
ASK_CAPITAL = sample("What is the capital of France?", 100)
ASK_CONFIRM = elicit("Please confirm", {"ok": "boolean"})
ASK_STEP1 = elicit("Step 1: What is your name?", {"name": "string"})
ASK_STEP2 = elicit("Step 2: What is your favorite color?", {"color": "string"})
ASK_GREETING = sample("Generate a greeting", 50)
ASK_CONTEXT = elicit("What context should the prompt use?", {"context": "string"})
ASK_CONTINUE = elicit("Continue with the streamed operation?", {"continue": "boolean"})

CONFIRM_STATE = "awaiting-confirmation"  # plaintext; the boundary seals it on the wire


# --------------------------------------------------------------------------- tools and prompt


@dataclass
class Diagnostics2026:
    """The 2026-07-28 scenarios' tools and prompt. `session_requests` as in `ConformanceFixture`."""

    session_requests: bool = False

    async def _gather(
        self,
        ctx: Ctx,
        params: types.InputResponseRequestParams,
        requests: types.InputRequests,
        state: str | None = None,
    ) -> Answers | types.InputRequiredResult:
        return await gather_input(ctx, params, requests, state=state, session_requests=self.session_requests)

    # ------------------------------------------------------------------ SEP-2322 input required

    async def _elicitation(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        require_capability(ctx, ELICITATION)
        answers = await self._gather(ctx, params, {"user_name": ASK_NAME})
        if isinstance(answers, types.InputRequiredResult):
            return answers
        name = _form_value(answers["user_name"], "name")
        return _text_result(f"Hello, {name}!" if name else f"No name given ({describe(answers['user_name'])})")

    async def _sampling(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        require_capability(ctx, SAMPLING)
        answers = await self._gather(ctx, params, {"capital_question": ASK_CAPITAL})
        if isinstance(answers, types.InputRequiredResult):
            return answers
        return _text_result(f"LLM response: {describe(answers['capital_question'])}")

    async def _list_roots(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        require_capability(ctx, ROOTS)
        answers = await self._gather(ctx, params, {"client_roots": list_roots()})
        if isinstance(answers, types.InputRequiredResult):
            return answers
        return _text_result(f"Client roots: {describe(answers['client_roots'])}")

    async def _confirm_with_state(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        # The answer counts only next to the state it was asked with; the boundary has already
        # refused a state that was altered, so reaching the end means the state checked out.
        require_capability(ctx, ELICITATION)
        answers = await self._gather(ctx, params, {"confirm": ASK_CONFIRM}, state=CONFIRM_STATE)
        if isinstance(answers, types.InputRequiredResult):
            return answers
        return _text_result(f"state-ok: {describe(answers['confirm'])}")

    async def _multiple_inputs(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        for capability in (ELICITATION, SAMPLING, ROOTS):
            require_capability(ctx, capability)
        requests: types.InputRequests = {"user_name": ASK_NAME, "greeting": ASK_GREETING, "client_roots": list_roots()}
        answers = await self._gather(ctx, params, requests, state="multiple-inputs")
        if isinstance(answers, types.InputRequiredResult):
            return answers
        return _text_result("; ".join(f"{key}: {describe(answer)}" for key, answer in sorted(answers.items())))

    async def _multi_round(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        # Two questions in sequence. In 2026-07-28 the first answer travels to the third round in
        # the (sealed) requestState: {"round": 1} while step 1 is open, {"round": 2, "name": ...} after.
        require_capability(ctx, ELICITATION)
        progress = _decode_state(params.request_state) if is_modern(ctx) else {}
        name = progress.get("name") if progress.get("round") == 2 else None
        if not isinstance(name, str):
            step1 = await self._gather(ctx, params, {"step1": ASK_STEP1}, state=_encode_state({"round": 1}))
            if isinstance(step1, types.InputRequiredResult):
                return step1
            name = _form_value(step1["step1"], "name") or ""
        step2_state = _encode_state({"round": 2, "name": name})
        step2 = await self._gather(ctx, params, {"step2": ASK_STEP2}, state=step2_state)
        if isinstance(step2, types.InputRequiredResult):
            return step2
        color = _form_value(step2["step2"], "color")
        return _text_result(f"{name or 'Someone'} likes {color or 'no color in particular'}")

    async def _capabilities(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        # Asks only what the client declared it can answer: one question per declared capability.
        offered: list[tuple[types.ClientCapabilities, str, types.InputRequest]] = [
            (ELICITATION, "user_name", ASK_NAME),
            (SAMPLING, "capital_question", ASK_CAPITAL),
            (ROOTS, "client_roots", list_roots()),
        ]
        requests: types.InputRequests = {
            key: request for capability, key, request in offered if ctx.session.check_client_capability(capability)
        }
        if not requests:
            return _text_result("The client declared no capability to ask through; nothing to ask")
        answers = await self._gather(ctx, params, requests)
        if isinstance(answers, types.InputRequiredResult):
            return answers
        return _text_result("; ".join(f"{key}: {describe(answer)}" for key, answer in sorted(answers.items())))

    async def _prompt(self, ctx: Ctx, params: types.GetPromptRequestParams) -> PromptResult:
        require_capability(ctx, ELICITATION)
        answers = await self._gather(ctx, params, {"user_context": ASK_CONTEXT})
        if isinstance(answers, types.InputRequiredResult):
            return answers
        context = _form_value(answers["user_context"], "context") or "(none given)"
        text = types.TextContent(type="text", text=f"Answer with this context in mind: {context}")
        return types.GetPromptResult(messages=[types.PromptMessage(role="user", content=text)])

    # ------------------------------------------------------------------ SEP-2575 stateless

    async def _missing_capability(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        # Needs sampling: refused with -32021 unless the client declared it, asked otherwise.
        require_capability(ctx, SAMPLING)
        answers = await self._gather(ctx, params, {"capital_question": ASK_CAPITAL})
        if isinstance(answers, types.InputRequiredResult):
            return answers
        return _text_result(f"LLM response: {describe(answers['capital_question'])}")

    async def _streaming_elicitation(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        # In 2026-07-28 the question must come back as the response's InputRequiredResult, never
        # as an elicitation/create request on the response stream (there is no one to answer it).
        require_capability(ctx, ELICITATION)
        answers = await self._gather(ctx, params, {"continue": ASK_CONTINUE})
        if isinstance(answers, types.InputRequiredResult):
            return answers
        return _text_result(f"Streaming elicitation completed: {describe(answers['continue'])}")

    # ------------------------------------------------------------------ SEP-2243 custom headers

    async def _mcp_param_header(self, ctx: Ctx, params: types.CallToolRequestParams) -> ToolResult:
        # The header check happens in the SDK's HTTP entry before dispatch; reaching here means it held.
        return _text_result(f"Routed to region {(params.arguments or {}).get('region')}")

    # ------------------------------------------------------------------ catalogue

    def tools(self) -> list[tuple[types.Tool, ToolHandler]]:
        def tool(name: str, description: str, schema: dict[str, Any] | None = None) -> types.Tool:
            return types.Tool(
                name=name, description=description, input_schema=schema or {"type": "object", "properties": {}}
            )

        return [
            (
                tool("test_input_required_result_elicitation", "Asks the user's name (elicitation), then greets."),
                self._elicitation,
            ),
            (
                tool("test_input_required_result_sampling", "Asks the client's LLM a question (sampling)."),
                self._sampling,
            ),
            (tool("test_input_required_result_list_roots", "Asks for the client's roots."), self._list_roots),
            (
                tool("test_input_required_result_request_state", "Asks a confirmation; needs its requestState back."),
                self._confirm_with_state,
            ),
            (
                tool("test_input_required_result_tampered_state", "As request_state; an altered state is refused."),
                self._confirm_with_state,
            ),
            (
                tool("test_input_required_result_multiple_inputs", "Asks for a name, a greeting and roots at once."),
                self._multiple_inputs,
            ),
            (
                tool("test_input_required_result_multi_round", "Asks two questions, one round after the other."),
                self._multi_round,
            ),
            (
                tool("test_input_required_result_capabilities", "Asks only through capabilities the client declared."),
                self._capabilities,
            ),
            (
                tool("test_missing_capability", "Needs sampling: -32021 when the client did not declare it."),
                self._missing_capability,
            ),
            (
                tool("test_streaming_elicitation", "Asks a confirmation, never as a request on the response stream."),
                self._streaming_elicitation,
            ),
            (
                tool(
                    "test_mcp_param_header",
                    "Echoes `region`, mirrored in the Mcp-Param-Region header (SEP-2243).",
                    MCP_PARAM_HEADER_TOOL_INPUT,
                ),
                self._mcp_param_header,
            ),
        ]

    def prompts(self) -> list[tuple[types.Prompt, PromptHandler]]:
        prompt = types.Prompt(
            name="test_input_required_result_prompt",
            description="Asks for context (elicitation) before it can be rendered.",
        )
        return [(prompt, self._prompt)]


def _encode_state(progress: dict[str, Any]) -> str:
    return json.dumps(progress, sort_keys=True, separators=(",", ":"))


def _decode_state(state: str | None) -> dict[str, Any]:
    """The plaintext a previous round minted (the boundary has verified it), or nothing."""
    if state is None:
        return {}
    try:
        progress = json.loads(state)
    except ValueError:
        return {}
    return progress if isinstance(progress, dict) else {}
