"""The built-in MCP tools that reach a composite run by its id, and the results a run is reported in.

`vmcp_run_status`, `vmcp_run_result` and `vmcp_run_cancel` follow a run that outlasted its call;
`vmcp_run_approve` and `vmcp_run_reject` decide its gates as the caller the token names. Like the
rest of the façade they speak to Temporal only through the orchestrator.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import mcp_types as types

from vmcp.composite.contracts import SIGNAL_APPROVE, SIGNAL_REJECT, CompositeRunOutput, run_owner
from vmcp.runs.errors import RunNotFound, RunNotWaiting

if TYPE_CHECKING:  # an instance is handed in; the module loads the Temporal client
    from vmcp.runs.orchestrator import Orchestrator

STATUS_TOOL = "vmcp_run_status"
RESULT_TOOL = "vmcp_run_result"
CANCEL_TOOL = "vmcp_run_cancel"
APPROVE_TOOL = "vmcp_run_approve"
REJECT_TOOL = "vmcp_run_reject"
MAX_RESULT_WAIT = 300.0

_RUN_ID = {"type": "string", "description": "A run id, `vmcp-<tool>-<uuid>`, as a composite call returned it."}
_STEP = {"type": "string", "description": "The gate's step id; needed only when several gates wait."}


def _tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> types.Tool:
    schema = {"type": "object", "properties": {"run_id": _RUN_ID, **properties}, "required": ["run_id", *required]}
    return types.Tool(name=name, description=description, input_schema=schema)


BUILTIN_TOOLS = [
    _tool(
        STATUS_TOOL,
        "State of a composite-tool run and of each of its steps (status, timing, attempts, errors).",
        {},
        [],
    ),
    _tool(
        RESULT_TOOL,
        "The result of a composite-tool run, waiting up to `wait_seconds` for it to finish.",
        {"wait_seconds": {"type": "number", "minimum": 0, "maximum": MAX_RESULT_WAIT, "default": 0}},
        [],
    ),
    _tool(CANCEL_TOOL, "Cancel a composite-tool run: running steps are cancelled, no later step starts.", {}, []),
    _tool(
        APPROVE_TOOL,
        "Approve a run waiting at an approval gate, as the authenticated caller (its subject and groups).",
        {"step": _STEP, "comment": {"type": "string"}},
        [],
    ),
    _tool(
        REJECT_TOOL,
        "Reject a run waiting at an approval gate, as the authenticated caller; the run ends there.",
        {"step": _STEP, "reason": {"type": "string"}},
        ["reason"],
    ),
]


def error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


def data(structured: Any, text: str | None = None, *, is_error: bool = False) -> types.CallToolResult:
    body = text if text is not None else json.dumps(structured, sort_keys=True, default=str)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=body)],
        structured_content=structured if isinstance(structured, dict) else {"result": structured},
        is_error=is_error,
    )


def result_of(run_id: str, output: CompositeRunOutput) -> types.CallToolResult:
    """A finished run as its call's result: structuredContent plus text, the run id in `_meta`."""
    result = data(output.structured, output.text, is_error=output.is_error)
    return result.model_copy(update={"meta": {"io.vmcp/run_id": run_id}})


def still_going(run_id: str, status: Mapping[str, Any]) -> types.CallToolResult:
    """A run that has not finished: its id, state and what it waits for."""
    state = status.get("state", "running")
    body = {"run_id": run_id, "state": state, "waiting_for": status.get("waiting_for") or {}}
    text = (
        f"Run {run_id} is {state.replace('_', ' ')}. Fetch its result later with "
        f"{RESULT_TOOL}(run_id) or follow it with {STATUS_TOOL}(run_id)."
    )
    return data(body, text)


def _no_run(name: str, run_id: str) -> str:
    return (
        f"{name}: no run {run_id[:120]!r} of yours (a run is reached by whoever started it, and by "
        "operators an authorization rule allows)"
    )


class RunTools:
    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator

    async def call(
        self, caller: Mapping[str, Any], name: str, arguments: dict[str, Any], *, others: bool = False
    ) -> types.CallToolResult:
        """A run tool, for `caller`. Status, result and cancel reach the caller's own runs, and
        others' runs only when `others` (an authorization rule with `runs: any`); a decision goes to
        any run of this vmcp, whose gate decides who may decide. An id that names no run of this
        vmcp is refused, and one of somebody else's runs is refused in the same words."""
        run_id = arguments.get("run_id")
        if not isinstance(run_id, str) or not run_id:
            return error(f"{name}: argument `run_id` is required (a run id such as vmcp-<tool>-<uuid>)")
        try:
            if name in (APPROVE_TOOL, REJECT_TOOL):
                await self.orchestrator.owner(run_id)  # any run of this vmcp: its gate decides who decides
                return await self._decide(caller, name, run_id, arguments)
            if not await self.reaches(caller, run_id, others=others):
                return error(_no_run(name, run_id))
        except RunNotFound:  # NotARun too: the same words, whatever the id names
            return error(_no_run(name, run_id))
        if name == STATUS_TOOL:
            return data(await self.orchestrator.status(run_id, prompt=True))
        if name == CANCEL_TOOL:
            await self.orchestrator.cancel(run_id)
            return data({"run_id": run_id, "cancel_requested": True})
        wait = arguments.get("wait_seconds", 0)
        if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 <= wait <= MAX_RESULT_WAIT:
            return error(f"{name}: argument `wait_seconds` must be a number from 0 to {MAX_RESULT_WAIT:g}")
        output = await self.orchestrator.result(run_id, float(wait))
        if output is None:
            return still_going(run_id, await self.orchestrator.status(run_id, prompt=True))
        return result_of(run_id, output)

    async def reaches(self, caller: Mapping[str, Any], run_id: str, *, others: bool) -> bool:
        """Whether `caller` may follow run `run_id` (its status, result, cancellation; as a task
        too): its own runs, and others' when `others`. RunNotFound (NotARun too) for an id that
        names no run of this vmcp."""
        owner = await self.orchestrator.owner(run_id)
        return others or owner == run_owner(dict(caller))

    async def _decide(
        self, caller: Mapping[str, Any], name: str, run_id: str, arguments: dict[str, Any]
    ) -> types.CallToolResult:
        """An approval decision from an MCP client: the approver is who the token says the caller
        is (subject and groups), not something it declares, as the CLI's `--as` is."""
        kind = SIGNAL_APPROVE if name == APPROVE_TOOL else SIGNAL_REJECT
        note = arguments.get("comment" if kind == SIGNAL_APPROVE else "reason")
        if kind == SIGNAL_REJECT and (not isinstance(note, str) or not note.strip()):
            return error(f"{name}: argument `reason` is required")
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
            return error(f"{name}: {exc}")
        if record.get("outcome") != "accepted":
            return error(f"{name}: refused: {record.get('problem')}")
        return data({"run_id": run_id, "step": record.get("step"), "decision": kind, "by": decision["approver"]})
