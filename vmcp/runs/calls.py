"""Composite tools as the façade serves them: arguments checked, runs started, waited for, reported.

A composite call validates its arguments against the tool's JSON Schema (defaults applied) before
anything starts, resolves the definition against the current catalogue, and starts the run under
the id `vmcp-<tool>-<uuid>`. It waits at most the tool's `wait`; a run still going then answers at
once with its id and state, and the built-in tools reach it later. No Temporal types here: the
orchestrator (with `temporal_client`, how it connects) is the only code that talks to Temporal.
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import anyio
import mcp_types as types
from jsonschema import Draft202012Validator
from jsonschema.validators import validator_for
from mcp.server.context import ServerRequestContext

from vmcp.catalog.aggregate import Catalog
from vmcp.catalog.steps import resolve, resolve_tool
from vmcp.clients.relay import is_modern
from vmcp.composite.contracts import WAITING_FOR_PEOPLE, CompositeRunInput, CompositeRunOutput
from vmcp.config.composite import CompositeTool, ForEachStep, ToolStep
from vmcp.config.models import VmcpConfig
from vmcp.ops import logs
from vmcp.runs.errors import RunNotFound, TemporalUnreachable
from vmcp.runs.questions import Questions, can_elicit, open_questions
from vmcp.runs.request_state import InvalidState
from vmcp.runs.tasks import RunTasks, created, declares_tasks
from vmcp.runs.tools import BUILTIN_TOOLS, RunTools, error, result_of, still_going

if TYPE_CHECKING:
    from vmcp.runs.orchestrator import Orchestrator

logger = logging.getLogger(__name__)

_FINISHED = ("completed", "failed", "skipped")
_GATES = ("approval", "elicitation")
_MAX_QUESTION_ROUNDS = 5  # answers refused in a row before the call returns the run id instead


class CompositeRuns:
    def __init__(self, config: VmcpConfig, orchestrator: Orchestrator | None = None) -> None:
        self.config = config
        self.tools: dict[str, CompositeTool] = {tool.name: tool for tool in config.composite_tools}
        self.orchestrator = orchestrator or cast("Orchestrator", _OnFirstUse(config))
        self.run_tools = RunTools(self.orchestrator)
        self.questions = Questions(self.orchestrator, config.resolve_path(config.server.request_state_key_file))
        self.tasks = RunTasks(self.orchestrator, self.run_tools, self.questions)
        self._validators = {name: _validator(tool.parameters) for name, tool in self.tools.items()}

    @property
    def names(self) -> set[str]:
        """vmcp's own tools: the composites, and the run tools when there are composites to run."""
        return {*self.tools, *(tool.name for tool in BUILTIN_TOOLS)} if self.tools else set()

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
        self,
        ctx: ServerRequestContext[Any],
        params: types.CallToolRequestParams,
        catalog: Catalog,
        caller: Mapping[str, Any],
        *,
        others: bool = False,
    ) -> types.CallToolResult | types.InputRequiredResult | dict[str, Any]:
        """A composite or built-in run tool, for `caller` (whom the pipeline identified; `others`:
        whether it may reach runs other callers started)."""
        name, arguments = params.name, dict(params.arguments or {})
        try:
            if name not in self.tools:
                return await self.run_tools.call(caller, name, arguments, others=others)
            if params.request_state is not None:  # a 2026-07-28 client answering a run's question
                return await self._resume(ctx, self.tools[name], params.request_state, params.input_responses, caller)
            return await self._run(ctx, self.tools[name], arguments, catalog, caller)
        except InvalidState as exc:
            return error(f"{name}: {exc}")
        except TemporalUnreachable as exc:  # its address and cause are the operator's to read, in the log
            logger.warning("%s: %s", name, exc)
            return error(f"{name}: composite tools run on Temporal, which is not reachable now; try again later")
        except RunNotFound as exc:
            return error(f"no run {exc.args[0]!r}: unknown run id (runs are kept for the namespace's retention)")

    # ------------------------------------------------------------------ composite calls

    async def _run(
        self,
        ctx: ServerRequestContext[Any],
        tool: CompositeTool,
        arguments: dict[str, Any],
        catalog: Catalog,
        caller: Mapping[str, Any],
    ) -> types.CallToolResult | types.InputRequiredResult | dict[str, Any]:
        params = with_defaults(tool.parameters, arguments)
        problems = sorted(self._validators[tool.name].iter_errors(params), key=lambda e: list(e.path))
        if problems:
            return error(f"{tool.name}: invalid arguments: " + "; ".join(_describe(p) for p in problems))
        index = list(self.tools).index(tool.name)
        resolved, issues = resolve(tool, catalog, [b.name for b in self.config.backends], index)
        if issues:
            return error(f"{tool.name} cannot run: " + "; ".join(issue.message for issue in issues))
        run_id = f"vmcp-{tool.name}-{uuid.uuid4()}"
        definition = resolved.model_dump(mode="json")
        run = CompositeRunInput(tool=tool.name, definition=definition, params=params, caller=run_caller(caller))
        await self.orchestrator.start(run_id, run, tool.run_timeout)
        if declares_tasks(ctx):  # the run is durable now: any replica answers tasks/get for it
            return created(run_id)
        with logs.about_run(run_id):
            return await self._follow(ctx, run_id, tool, caller)

    async def _resume(
        self,
        ctx: ServerRequestContext[Any],
        tool: CompositeTool,
        request_state: str,
        responses: types.InputResponses | None,
        caller: Mapping[str, Any],
    ) -> types.CallToolResult | types.InputRequiredResult:
        pending = self.questions.opened(request_state, caller)
        if pending.tool != tool.name:
            return error(f"{tool.name}: this requestState belongs to a call of {pending.tool!r}")
        await self.questions.deliver_all(pending, responses, caller)
        return await self._follow(ctx, pending.run_id, tool, caller)

    async def _follow(
        self, ctx: ServerRequestContext[Any], run_id: str, tool: CompositeTool, caller: Mapping[str, Any]
    ) -> types.CallToolResult | types.InputRequiredResult:
        """The run's result within the tool's `wait`. A question the run asks (an elicitation step)
        goes to the caller while it is on the line; an approval gate, a caller that cannot answer,
        or the end of the wait returns the run id and state at once."""
        deadline = anyio.current_time() + tool.wait
        for _ in range(_MAX_QUESTION_ROUNDS):
            output = await self._wait(ctx, run_id, tool, max(0.0, deadline - anyio.current_time()))
            if output is not None:
                return result_of(run_id, output)
            status = await self.orchestrator.status(run_id, prompt=True)
            questions = open_questions(status)
            if not questions or not can_elicit(ctx) or anyio.current_time() >= deadline:
                return still_going(run_id, status)
            if is_modern(ctx):
                return self.questions.input_required(run_id, tool.name, questions, caller)
            if not await self.questions.ask_mid_call(ctx, run_id, questions, caller):
                return still_going(run_id, status)  # it could not answer: the run waits for a signal
        return still_going(run_id, await self.orchestrator.status(run_id, prompt=True))

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
                    # whole or not at all: the wait may be cancelled (the result came) mid-announcement
                    with anyio.CancelScope(shield=True):
                        await ctx.session.report_progress(
                            len(reported) + 1, total, f"step {step_id}: {state.get('status')}"
                        )
                        reported.add(step_id)

        # everything counts as heard of when nobody listens for progress: only a gate answers then
        everything = [step.id for step in tool.steps] if not progress else []

        async with anyio.create_task_group() as group:

            async def watch() -> None:
                """Wait on the run itself (an Update it answers), not on a timer."""
                heard: list[str] = everything
                while True:
                    status = await self.orchestrator.watch(run_id, heard)
                    if status is None:
                        return  # the run is ending: its result decides
                    steps = status.get("steps", {})
                    await announce(steps)
                    if status.get("state") in WAITING_FOR_PEOPLE:
                        group.cancel_scope.cancel()  # answer now: a person may take days
                        return
                    heard = everything or sorted(sid for sid, s in steps.items() if s.get("status") in _FINISHED)

            async def result() -> None:
                outcome.append(await self.orchestrator.result(run_id, wait))
                group.cancel_scope.cancel()

            group.start_soon(watch)
            group.start_soon(result)
        if outcome and outcome[0] is not None:
            # steps that finished between polls (or all of them, for a fast run), in their order
            await announce(outcome[0].steps)
            return outcome[0]
        return None


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


def run_caller(caller: Mapping[str, Any]) -> dict[str, Any]:
    """What of the caller a composite run carries in its input (and so in Temporal history): the
    summary without the token's other claims."""
    return {key: value for key, value in caller.items() if key != "claims"}


class _OnFirstUse:
    """The orchestrator, made when first used: loading the Temporal client takes a quarter of a
    second and some 25 MiB, which a façade that never talks to Temporal (no composite called, no
    run asked about) need not pay."""

    def __init__(self, config: VmcpConfig) -> None:
        self._config = config
        self._made: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._made is None:
            from vmcp.runs.orchestrator import Orchestrator

            self._made = Orchestrator(self._config)
        return getattr(self._made, name)
