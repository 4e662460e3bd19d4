"""Composite tools as the façade serves them: arguments checked, runs started, waited for, reported.

A composite call validates its arguments against the tool's JSON Schema (defaults applied) before
anything starts, resolves the definition against the current catalogue, and starts the run under
the id `vmcp-<tool>-<uuid>`. It waits at most the tool's `wait`; a run still going then answers at
once with its id and state, and the built-in tools reach it later. No Temporal types here: the
orchestrator is the only module that talks to Temporal.
"""

from __future__ import annotations

import copy
import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any

import anyio
import mcp_types as types
from jsonschema import Draft202012Validator
from jsonschema.validators import validator_for
from mcp.server.context import ServerRequestContext

from vmcp import logs
from vmcp.auth import run_caller
from vmcp.catalog import Catalog
from vmcp.composite import CompositeTool, ForEachStep, ToolStep, resolve, resolve_tool
from vmcp.config import VmcpConfig
from vmcp.contracts import SIGNAL_APPROVE, SIGNAL_REJECT, CompositeRunInput, CompositeRunOutput
from vmcp.forwarding import caller_of
from vmcp.orchestrator import Orchestrator, RunNotFound, RunNotWaiting, TemporalUnreachable
from vmcp.questions import Questions, can_elicit, open_questions
from vmcp.relay import is_modern
from vmcp.request_state import InvalidState

logger = logging.getLogger(__name__)

STATUS_TOOL = "vmcp_run_status"
RESULT_TOOL = "vmcp_run_result"
CANCEL_TOOL = "vmcp_run_cancel"
APPROVE_TOOL = "vmcp_run_approve"
REJECT_TOOL = "vmcp_run_reject"
_PROGRESS_POLL = 0.25
_MAX_RESULT_WAIT = 300.0
_FINISHED = ("completed", "failed", "skipped")
_GATES = ("approval", "elicitation")
_WAITING_FOR_PEOPLE = ("awaiting_approval", "awaiting_input")
_MAX_QUESTION_ROUNDS = 5  # answers refused in a row before the call returns the run id instead

_RUN_ID_SCHEMA = {"type": "string", "description": "A run id, `vmcp-<tool>-<uuid>`, as a composite call returned it."}
_STEP_SCHEMA = {"type": "string", "description": "The gate's step id; needed only when several gates wait."}
BUILTIN_TOOLS = [
    types.Tool(
        name=STATUS_TOOL,
        description="State of a composite-tool run and of each of its steps (status, timing, attempts, errors).",
        input_schema={"type": "object", "properties": {"run_id": _RUN_ID_SCHEMA}, "required": ["run_id"]},
    ),
    types.Tool(
        name=RESULT_TOOL,
        description="The result of a composite-tool run, waiting up to `wait_seconds` for it to finish.",
        input_schema={
            "type": "object",
            "properties": {
                "run_id": _RUN_ID_SCHEMA,
                "wait_seconds": {"type": "number", "minimum": 0, "maximum": _MAX_RESULT_WAIT, "default": 0},
            },
            "required": ["run_id"],
        },
    ),
    types.Tool(
        name=CANCEL_TOOL,
        description="Cancel a composite-tool run: running steps are cancelled, no later step starts.",
        input_schema={"type": "object", "properties": {"run_id": _RUN_ID_SCHEMA}, "required": ["run_id"]},
    ),
    types.Tool(
        name=APPROVE_TOOL,
        description="Approve a run waiting at an approval gate, as the authenticated caller (its subject and groups).",
        input_schema={
            "type": "object",
            "properties": {"run_id": _RUN_ID_SCHEMA, "step": _STEP_SCHEMA, "comment": {"type": "string"}},
            "required": ["run_id"],
        },
    ),
    types.Tool(
        name=REJECT_TOOL,
        description="Reject a run waiting at an approval gate, as the authenticated caller; the run ends there.",
        input_schema={
            "type": "object",
            "properties": {"run_id": _RUN_ID_SCHEMA, "step": _STEP_SCHEMA, "reason": {"type": "string"}},
            "required": ["run_id", "reason"],
        },
    ),
]


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


def _data(structured: Any, text: str | None = None, *, is_error: bool = False) -> types.CallToolResult:
    body = text if text is not None else json.dumps(structured, sort_keys=True, default=str)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=body)],
        structured_content=structured if isinstance(structured, dict) else {"result": structured},
        is_error=is_error,
    )


class CompositeRuns:
    def __init__(self, config: VmcpConfig, orchestrator: Orchestrator | None = None) -> None:
        self.config = config
        self.tools: dict[str, CompositeTool] = {tool.name: tool for tool in config.composite_tools}
        self.orchestrator = orchestrator or Orchestrator(config)
        self.questions = Questions(self.orchestrator, config.resolve_path(config.server.request_state_key_file))
        self._validators = {name: _validator(tool.parameters) for name, tool in self.tools.items()}

    @property
    def names(self) -> set[str]:
        return {*self.tools, *(tool.name for tool in BUILTIN_TOOLS)}

    def advertised(self) -> list[types.Tool]:
        entries = [
            types.Tool(
                name=tool.name,
                description=tool.description or f"Composite tool {tool.name}",
                input_schema=tool.parameters,
            )
            for tool in self.tools.values()
        ]
        return [*entries, *BUILTIN_TOOLS] if self.tools else entries

    def needs(self, name: str, catalog: Catalog) -> list[tuple[str, ...]]:
        """Every tool a call of composite `name` needs permission for, each with the names it is
        known by: the composite itself, then each step's backend tool (`backend.original`, and its
        advertised name when it has one). A step the catalogue cannot place is named as written."""
        tool = self.tools[name]
        backends = {backend.name for backend in self.config.backends}
        advertised = {(route.backend, route.original): alias for alias, route in catalog.tool_routes.items()}
        needed: list[tuple[str, ...]] = [(name,)]
        for step in tool.steps:
            call = step if isinstance(step, ToolStep) else step.step if isinstance(step, ForEachStep) else None
            if call is None:
                continue
            target = resolve_tool(call.tool, catalog, backends)
            if target is None:
                needed.append((call.tool,))
                continue
            qualified = f"{target[0]}.{target[1]}"
            alias = advertised.get(target)
            needed.append((qualified, alias) if alias else (qualified,))
        return needed

    def input_schema(self, name: str) -> Mapping[str, Any] | None:
        tool = self.tools.get(name)
        return tool.parameters if tool is not None else None

    async def call(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams, catalog: Catalog
    ) -> types.CallToolResult | types.InputRequiredResult:
        name, arguments = params.name, dict(params.arguments or {})
        try:
            if name not in self.tools:
                return await self._builtin(ctx, name, arguments)
            if params.request_state is not None:  # a 2026-07-28 client answering a run's question
                return await self._resume(ctx, self.tools[name], params.request_state, params.input_responses)
            return await self._run(ctx, self.tools[name], arguments, catalog)
        except InvalidState as exc:
            return _error(f"{name}: {exc}")
        except TemporalUnreachable as exc:
            return _error(f"{name}: composite tools run on Temporal, which is not reachable now: {exc}")
        except RunNotFound as exc:
            return _error(f"no run {exc.args[0]!r}: unknown run id (runs are kept for the namespace's retention)")

    # ------------------------------------------------------------------ composite calls

    async def _run(
        self, ctx: ServerRequestContext[Any], tool: CompositeTool, arguments: dict[str, Any], catalog: Catalog
    ) -> types.CallToolResult | types.InputRequiredResult:
        params = with_defaults(tool.parameters, arguments)
        problems = sorted(self._validators[tool.name].iter_errors(params), key=lambda e: list(e.path))
        if problems:
            return _error(f"{tool.name}: invalid arguments: " + "; ".join(_describe(p) for p in problems))
        index = list(self.tools).index(tool.name)
        resolved, issues = resolve(tool, catalog, [b.name for b in self.config.backends], index)
        if issues:
            return _error(f"{tool.name} cannot run: " + "; ".join(issue.message for issue in issues))
        run_id = f"vmcp-{tool.name}-{uuid.uuid4()}"
        definition = resolved.model_dump(mode="json")
        run = CompositeRunInput(tool=tool.name, definition=definition, params=params, caller=run_caller(caller_of(ctx)))
        await self.orchestrator.start(run_id, run, tool.run_timeout)
        with logs.about_run(run_id):
            return await self._follow(ctx, run_id, tool)

    async def _resume(
        self,
        ctx: ServerRequestContext[Any],
        tool: CompositeTool,
        request_state: str,
        responses: types.InputResponses | None,
    ) -> types.CallToolResult | types.InputRequiredResult:
        pending = self.questions.sealer.open(request_state)
        if pending.tool != tool.name:
            return _error(f"{tool.name}: this requestState belongs to a call of {pending.tool!r}")
        await self.questions.deliver_all(pending, responses)
        return await self._follow(ctx, pending.run_id, tool)

    async def _follow(
        self, ctx: ServerRequestContext[Any], run_id: str, tool: CompositeTool
    ) -> types.CallToolResult | types.InputRequiredResult:
        """The run's result within the tool's `wait`. A question the run asks (an elicitation step)
        goes to the caller while it is on the line; an approval gate, a caller that cannot answer,
        or the end of the wait returns the run id and state at once."""
        deadline = anyio.current_time() + tool.wait
        for _ in range(_MAX_QUESTION_ROUNDS):
            output = await self._wait(ctx, run_id, tool, max(0.0, deadline - anyio.current_time()))
            if output is not None:
                return _result(run_id, output)
            status = await self.orchestrator.status(run_id)
            questions = open_questions(status)
            if not questions or not can_elicit(ctx) or anyio.current_time() >= deadline:
                return self._still_going(run_id, status)
            if is_modern(ctx):
                return self.questions.input_required(run_id, tool.name, questions)
            if not await self.questions.ask_mid_call(ctx, run_id, questions):
                return self._still_going(run_id, status)  # it could not answer: the run waits for a signal
        return self._still_going(run_id, await self.orchestrator.status(run_id))

    async def _wait(
        self, ctx: ServerRequestContext[Any], run_id: str, tool: CompositeTool, wait: float
    ) -> CompositeRunOutput | None:
        """The result within `wait`, or None as soon as the run waits for a person (a gate) or the
        wait is over; with a progress token, a notification as each step finishes."""
        progress = _wants_progress(ctx)
        has_gates = any(getattr(step, "type", "tool") in _GATES for step in tool.steps)
        if not progress and not has_gates:
            return await self.orchestrator.result(run_id, wait)
        outcome: list[CompositeRunOutput | None] = []
        reported: set[str] = set()
        total = len(tool.steps)

        rank = _dependency_order(tool)

        async def announce(steps: Mapping[str, Any]) -> None:
            if not progress:
                return

            # in the order they finished (workflow time), ties and untimed ones dependencies first:
            # the status query's JSON comes with its keys sorted alphabetically
            def finish_order(item: tuple[str, Any]) -> tuple[str, int]:
                return (str(item[1].get("finished_at") or "~"), rank.get(item[0], 0))

            for step_id, state in sorted(steps.items(), key=finish_order):
                if state.get("status") in _FINISHED and step_id not in reported:
                    reported.add(step_id)
                    await ctx.session.report_progress(len(reported), total, f"step {step_id}: {state.get('status')}")

        async with anyio.create_task_group() as group:

            async def poll() -> None:
                while True:
                    await anyio.sleep(_PROGRESS_POLL)
                    try:
                        status = await self.orchestrator.status(run_id)
                    except Exception:  # best effort; the result decides
                        logger.debug("status poll failed", exc_info=True)
                        continue
                    await announce(status.get("steps", {}))
                    if status.get("state") in _WAITING_FOR_PEOPLE:
                        group.cancel_scope.cancel()  # answer now: a person may take days

            async def result() -> None:
                outcome.append(await self.orchestrator.result(run_id, wait))
                group.cancel_scope.cancel()

            group.start_soon(poll)
            group.start_soon(result)
        if outcome and outcome[0] is not None:
            # steps that finished between polls (or all of them, for a fast run), in their order
            await announce(outcome[0].steps)
            return outcome[0]
        return None

    def _still_going(self, run_id: str, status: Mapping[str, Any]) -> types.CallToolResult:
        state = status.get("state", "running")
        waiting = status.get("waiting_for") or {}
        body = {"run_id": run_id, "state": state, "waiting_for": waiting}
        text = (
            f"Run {run_id} is {state.replace('_', ' ')}. Fetch its result later with "
            f"{RESULT_TOOL}(run_id) or follow it with {STATUS_TOOL}(run_id)."
        )
        return _data(body, text)

    # ------------------------------------------------------------------ built-in tools

    async def _builtin(
        self, ctx: ServerRequestContext[Any], name: str, arguments: dict[str, Any]
    ) -> types.CallToolResult:
        run_id = arguments.get("run_id")
        if not isinstance(run_id, str) or not run_id:
            return _error(f"{name}: argument `run_id` is required (a run id such as vmcp-<tool>-<uuid>)")
        if name in (APPROVE_TOOL, REJECT_TOOL):
            return await self._decide(ctx, name, run_id, arguments)
        if name == STATUS_TOOL:
            return _data(await self.orchestrator.status(run_id))
        if name == CANCEL_TOOL:
            await self.orchestrator.cancel(run_id)
            return _data({"run_id": run_id, "cancel_requested": True})
        wait = arguments.get("wait_seconds", 0)
        if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 <= wait <= _MAX_RESULT_WAIT:
            return _error(f"{name}: argument `wait_seconds` must be a number from 0 to {_MAX_RESULT_WAIT:g}")
        output = await self.orchestrator.result(run_id, float(wait))
        if output is None:
            return self._still_going(run_id, await self.orchestrator.status(run_id))
        return _result(run_id, output)

    async def _decide(
        self, ctx: ServerRequestContext[Any], name: str, run_id: str, arguments: dict[str, Any]
    ) -> types.CallToolResult:
        """An approval decision from an MCP client: the approver is who the token says the caller
        is (subject and groups), not something it declares, as the CLI's `--as` is."""
        kind = SIGNAL_APPROVE if name == APPROVE_TOOL else SIGNAL_REJECT
        note = arguments.get("comment" if kind == SIGNAL_APPROVE else "reason")
        if kind == SIGNAL_REJECT and (not isinstance(note, str) or not note.strip()):
            return _error(f"{name}: argument `reason` is required")
        caller = caller_of(ctx)
        decision: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "approver": caller.get("subject"),
            "groups": list(caller.get("groups") or []),
            "comment" if kind == SIGNAL_APPROVE else "reason": note,
        }
        if isinstance(arguments.get("step"), str):
            decision["step"] = arguments["step"]
        try:
            record = await self.orchestrator.decide(run_id, kind, decision)
        except RunNotWaiting as exc:
            return _error(f"{name}: {exc}")
        if record.get("outcome") != "accepted":
            return _error(f"{name}: refused: {record.get('problem')}")
        return _data({"run_id": run_id, "step": record.get("step"), "decision": kind, "by": decision["approver"]})


def _result(run_id: str, output: CompositeRunOutput) -> types.CallToolResult:
    result = _data(output.structured, output.text, is_error=output.is_error)
    return result.model_copy(update={"meta": {"io.vmcp/run_id": run_id}})


def _dependency_order(tool: CompositeTool) -> dict[str, int]:
    """Step id -> position in an order where every step comes after its dependencies."""
    deps = {step.id: list(step.depends_on) for step in tool.steps}
    order: dict[str, int] = {}

    def place(step_id: str) -> None:
        if step_id not in order:
            for dep in deps.get(step_id, []):
                place(dep)
            order[step_id] = len(order)

    for step_id in deps:
        place(step_id)
    return order


def _wants_progress(ctx: ServerRequestContext[Any]) -> bool:
    meta = ctx.meta or {}
    return meta.get("progress_token", meta.get("progressToken")) is not None  # type: ignore[union-attr]


def _validator(schema: dict[str, Any]) -> Any:
    cls = validator_for(schema, default=Draft202012Validator)
    return cls(schema)


def _describe(error: Any) -> str:
    where = ".".join(str(p) for p in error.path)
    return f"`{where}`: {error.message}" if where else error.message


def with_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """`value` with every missing property that has a `default` in `schema` filled in (nested
    objects included), as the caller would have sent it."""
    if not isinstance(value, dict) or schema.get("type", "object") != "object":
        return value
    filled = dict(value)
    for key, sub in (schema.get("properties") or {}).items():
        if not isinstance(sub, Mapping):
            continue
        if key not in filled and "default" in sub:
            filled[key] = copy.deepcopy(sub["default"])
        if key in filled:
            filled[key] = with_defaults(sub, filled[key])
    return filled
