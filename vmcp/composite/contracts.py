"""The names and payloads that cross the Temporal boundary.

Pure (standard library only): workflows import this module through the sandbox, the façade
starts runs by these names, and activities are registered under them. Every name here is part
of the durable contract — a run in flight replays against them — so they are never renamed;
payloads only ever gain optional fields.

No `from __future__ import annotations` here: Temporal's data converter reads each payload
dataclass's type hints on every conversion, and string annotations are evaluated again each time
(80 µs a conversion against 30 µs; several conversions per step).
"""

from dataclasses import dataclass, field
from typing import Any

COMPOSITE_WORKFLOW = "vmcp.CompositeTool"
"""Workflow type of a composite-tool run (the interpreter in `workflows/`)."""

CALL_BACKEND_TOOL = "vmcp.call_backend_tool"
"""Activity type of one backend tool call made by a composite step."""

NOTIFY_APPROVERS = "vmcp.notify_approvers"
"""Activity type of an approval gate's webhook POST (started, never awaited: it cannot block a run)."""

# Custom search attributes (`vmcp dev` registers them on its dev server; production clusters
# need `temporal operator search-attribute create` once).
SEARCH_ATTRIBUTE_TOOL = "VmcpTool"
"""Keyword: the composite tool a run executes."""
SEARCH_ATTRIBUTE_STATUS = "VmcpStatus"
"""Keyword: running | awaiting_approval | awaiting_input | completed | failed."""
SEARCH_ATTRIBUTE_PENDING_APPROVAL = "VmcpPendingApproval"
"""Bool: true exactly while an approval gate waits."""

SEARCH_ATTRIBUTES: dict[str, str] = {
    SEARCH_ATTRIBUTE_TOOL: "Keyword",
    SEARCH_ATTRIBUTE_STATUS: "Keyword",
    SEARCH_ATTRIBUTE_PENDING_APPROVAL: "Bool",
}
"""Every custom search attribute vmcp uses, with its Temporal type name."""

IDEMPOTENCY_META_KEY = "io.vmcp/idempotency-key"
"""The `_meta` key carrying `<workflow id>/<step id>[/<item index>]` on every step call: an
activity may run twice after a crash, and a backend that honours the key runs the effect once."""


@dataclass(frozen=True)
class CallBackendToolInput:
    """One step's call: which backend tool, with what arguments, under which idempotency key.

    Secrets never appear here (they live in history): the worker resolves the backend's
    credentials from its own configuration by `backend` name.
    """

    backend: str
    tool: str  # the backend's original tool name, not the advertised one
    arguments: dict[str, Any]
    idempotency_key: str
    step_id: str | None = None
    timeout_seconds: float | None = None  # bounds one attempt; None = the backend's `timeout`
    # Composite steps set this: an `isError` result then fails the attempt (ERROR_TOOL, retryable,
    # the result in the error's details), so the step's Temporal retry policy covers tool errors.
    fail_on_error: bool = False
    caller: dict[str, Any] | None = None  # the run's caller summary (no secrets), for the audit trail


@dataclass(frozen=True)
class CallBackendToolOutput:
    """The backend's `CallToolResult`, as plain JSON.

    A tool that failed (`isError`) is returned, not raised: whether that fails the step, is
    retried or is tolerated (`on_error: continue`) is the workflow's decision.
    """

    content: list[dict[str, Any]] = field(default_factory=list)
    structured_content: dict[str, Any] | None = None
    is_error: bool = False
    text: str = ""  # every text content block, joined by newlines
    attempt: int = 1  # which attempt of the activity produced this result


# `ApplicationError.type` values raised by the backend-call activity, so workflows and the Web UI
# can tell why a step failed. Retryable: the backend may answer next time. Non-retryable: the call
# itself is wrong, and sending it again cannot help.
ERROR_BACKEND_UNAVAILABLE = "BackendUnavailable"  # retryable: down, reconnecting or timed out
ERROR_UNKNOWN_BACKEND = "UnknownBackend"  # retryable: another worker may carry a newer config
ERROR_BACKEND_PROTOCOL = "BackendProtocolError"  # retryable: any other JSON-RPC error
ERROR_INVALID_PARAMS = "InvalidParams"  # non-retryable: unknown tool or rejected arguments
ERROR_METHOD_NOT_FOUND = "MethodNotFound"  # non-retryable: the backend has no tools/call
ERROR_INPUT_REQUIRED = "InputRequired"  # non-retryable: the tool asked for input a step cannot give
ERROR_TOOL = "ToolError"  # retryable: the tool answered isError (only with `fail_on_error`)
ERROR_POLICY = "PolicyViolation"  # non-retryable (raised so): an argument broke the tool's policy
PERMANENT_ERRORS = (ERROR_INVALID_PARAMS, ERROR_METHOD_NOT_FOUND, ERROR_INPUT_REQUIRED)

# Signals and queries of a composite run (the approver's CLI and `temporal workflow signal` use them).
# Decisions and answers: Temporal Updates (a refused one never enters the history, and its caller
# learns why at once) and, under the same names, signals (for `temporal workflow signal`).
SIGNAL_APPROVE = "approve"
SIGNAL_REJECT = "reject"
SIGNAL_ANSWER = "answer"
"""An elicitation step's answer: `{"step": …, "action": "accept" | "decline" | "cancel", "content": {…},
"responder": …}` (what the calling client answered, or anyone else answering for it later)."""
QUERY_STATUS = "status"
# An Update the façade waits on instead of polling: the run answers it as soon as it waits for a
# person, or a step the caller has not heard of finishes (the run's end answers through its result).
UPDATE_WATCH = "watch"
WAITING_FOR_PEOPLE = ("awaiting_approval", "awaiting_input")

# Who started a run (the caller's issuer and subject), kept in the run's memo: the run tools let a
# caller reach only its own runs unless an authorization rule says `runs: any`.
MEMO_OWNER = "vmcp.owner"
# A run id: the workflow id of a run vmcp started. Anything else is refused before Temporal is asked.
RUN_ID_PATTERN = r"vmcp-[A-Za-z0-9_][A-Za-z0-9_-]*-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def run_owner(caller: dict[str, Any]) -> dict[str, Any]:
    """The owner a run records for `caller`: who it is, by issuer and subject (never more)."""
    return {"issuer": caller.get("issuer"), "subject": caller.get("subject")}


@dataclass(frozen=True)
class NotifyApproversInput:
    """What an approval gate's webhook says. The URL itself is not here (it may hold a token): the
    worker looks it up in its own configuration by tool and step."""

    tool: str
    step: str
    run_id: str
    message: str
    approvers: list[str]
    timeout_seconds: float


@dataclass(frozen=True)
class CompositeRunInput:
    """Everything a run needs, carried in its own input: the resolved definition (so editing the
    config never changes a run in flight, and the Web UI shows exactly what ran), the validated
    arguments with defaults applied, and a non-secret summary of the caller."""

    tool: str
    definition: dict[str, Any]  # a `vmcp.composite.CompositeTool`, resolved, as JSON
    params: dict[str, Any]
    caller: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CompositeRunOutput:
    """The run's result: what the MCP client receives as `structuredContent` plus text."""

    structured: Any
    text: str
    is_error: bool = False
    steps: dict[str, Any] = field(default_factory=dict)  # step id -> status, timing, attempts, error
