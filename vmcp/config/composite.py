"""Composite tools: the step-graph language.

Pure: the config loader validates with it (its checks: `vmcp.config.composite_checks`), the façade
resolves a definition against the catalogue (`vmcp.catalog.steps`), and the workflow interpreter
reads the resolved definition (plain JSON in its input) with the same models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from jsonschema.validators import validator_for
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from vmcp.config.types import Seconds

STEP_ID = r"^[A-Za-z_][A-Za-z0-9_]*$"
TEMPLATE_ROOTS = frozenset({"params", "steps", "run", "caller"})
DEFAULT_WAIT = 60.0
DEFAULT_TIMEOUT = 3600.0
DEFAULT_APPROVAL_TIMEOUT = 86400.0
DEFAULT_LOCAL_STEP_TIMEOUT = 30.0  # steps given an attempt timeout up to this run as local activities
MAX_FOR_EACH_ITEMS = 2000  # the ceiling `max_items` may be raised to (history stays well inside Temporal's limit)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrySpec(_Strict):
    max_attempts: int = Field(default=1, ge=1, le=100)  # counts every attempt: 1 = no retry
    initial_interval: Seconds = 1.0
    backoff: float = Field(default=2.0, ge=1.0)
    max_interval: Seconds | None = None


class _StepBase(_Strict):
    id: str = Field(pattern=STEP_ID)
    description: str | None = None
    depends_on: list[str] = Field(default_factory=list)
    when: str | None = None
    on_error: Literal["fail", "continue"] = "fail"
    timeout: Seconds | None = None  # one attempt (tool steps) or the whole wait (gates)
    default_output: Any = None


class ToolStep(_StepBase):
    type: Literal["tool"] = "tool"
    tool: str = Field(min_length=1)  # `backend.original_tool`, or an advertised name
    arguments: dict[str, Any] = Field(default_factory=dict)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    # as a local activity (true), a regular one (false), or by the composite's local_step_timeout
    local: bool | None = None
    # filled in by `resolve` at run start: where the call really goes
    backend: str | None = None
    original: str | None = None


class NestedToolStep(_Strict):
    """The call a `for_each` step makes once per item."""

    tool: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    timeout: Seconds | None = None
    local: bool | None = None
    backend: str | None = None
    original: str | None = None


class ForEachStep(_StepBase):
    type: Literal["for_each"]
    collection: str  # an expression (or one `{{ … }}`) giving the list to iterate
    item_var: str = Field(default="item", pattern=STEP_ID)
    max_parallel: int = Field(default=4, ge=1, le=256)
    # the longest list a run takes: each item is an activity in the run's history, which Temporal
    # bounds (51,200 events); a longer list fails the step with a clear error rather than the run
    max_items: int = Field(default=1000, ge=1, le=MAX_FOR_EACH_ITEMS)
    step: NestedToolStep


class ApprovalStep(_StepBase):
    type: Literal["approval"]
    message: str
    # subjects and `group:` entries (a subject never matches a group entry); empty: anyone but the
    # run's own caller
    approvers: list[str] = Field(default_factory=list)
    allow_self_approval: bool = False  # may the run's own caller decide this gate?
    on_timeout: Literal["reject", "approve"] = "reject"
    webhook: str | None = None


class ElicitationStep(_StepBase):
    type: Literal["elicitation"]
    message: str
    # MCP elicitation's restricted form: a flat object of string / number / integer / boolean fields
    requested_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


WEBHOOK_IN_CONFIG = "configured"
"""What a run's definition says in place of a gate's webhook URL: the URL may carry a token, so it
stays in the worker's configuration and out of workflow history."""


def _step_type(value: Any) -> str:
    if isinstance(value, Mapping):
        return str(value.get("type", "tool"))
    return str(getattr(value, "type", "tool"))


Step = Annotated[
    Annotated[ToolStep, Tag("tool")]
    | Annotated[ForEachStep, Tag("for_each")]
    | Annotated[ApprovalStep, Tag("approval")]
    | Annotated[ElicitationStep, Tag("elicitation")],
    Discriminator(_step_type),
]


class CompositeTool(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    # The whole run. Unset: an hour of work plus every gate's own timeout, so a gate that may wait
    # a day is never cut short by the run's deadline before its `on_timeout` decides.
    timeout: Seconds | None = None
    wait: Seconds = DEFAULT_WAIT  # how long a call waits before answering with the run id
    # A tool step whose attempt timeout is at most this runs as a Temporal local activity: inside
    # the workflow task that schedules it, without a round trip through the server's task queue
    # per step. Longer steps, and steps started after a gate, stay regular activities.
    local_step_timeout: Seconds = DEFAULT_LOCAL_STEP_TIMEOUT
    steps: list[Step] = Field(min_length=1)
    output: Any = None

    def step(self, step_id: str) -> Any:
        return next(step for step in self.steps if step.id == step_id)

    @property
    def run_timeout(self) -> float:
        if self.timeout is not None:
            return self.timeout
        return DEFAULT_TIMEOUT + sum(gate_timeout(step) for step in self.steps)


def gate_timeout(step: Any) -> float:
    if isinstance(step, ApprovalStep | ElicitationStep):
        return float(step.timeout or DEFAULT_APPROVAL_TIMEOUT)
    return 0.0


# --------------------------------------------------------------------------- checks


def answer_problems(schema: Mapping[str, Any], content: Any) -> list[str]:
    """Why `content` does not answer an elicitation step's `requested_schema` (empty: it does)."""
    if not isinstance(content, Mapping):
        return [f"the answer must be an object, not {type(content).__name__}"]
    validator = validator_for(schema)(schema)
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or 'answer'}: {error.message}"
        for error in sorted(validator.iter_errors(dict(content)), key=lambda e: list(e.absolute_path))
    ]
