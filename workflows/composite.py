"""The composite-tool interpreter: one generic workflow that runs the step graph in its input.

Deterministic: it reads only its input, the clock and randomness Temporal gives it, and activity
results; it renders templates with the pure `vmcp.templating`. Each step is a coroutine that
starts the moment its own dependencies have finished (not level by level). Tool steps call their
backends through `workflows.calls` (a step's `retry` is the retry policy of its activity, so
every attempt shows in the Web UI); the steps that wait for people are `workflows.waiting`'s.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from vmcp.composite.contracts import (
        QUERY_STATUS,
        SEARCH_ATTRIBUTE_STATUS,
        SIGNAL_ANSWER,
        SIGNAL_APPROVE,
        SIGNAL_REJECT,
        UPDATE_WATCH,
        WAITING_FOR_PEOPLE,
        CompositeRunInput,
        CompositeRunOutput,
    )
    from vmcp.composite.templating import TemplateFailure, evaluate, render
    from vmcp.config.composite import (
        ApprovalStep,
        CompositeTool,
        ElicitationStep,
        ForEachStep,
        ToolStep,
    )


from workflows.calls import StepCalls
from workflows.gates import Gates
from workflows.waiting import StepFailed, WaitingSteps

_STATUS_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_STATUS)


@workflow.defn(name="vmcp.CompositeTool")
class CompositeToolWorkflow:
    def __init__(self) -> None:
        self._steps: dict[str, dict[str, Any]] = {}
        self._state = "running"
        self._failure: str | None = None
        self._gates = Gates()

    # ------------------------------------------------------------------ queries

    @workflow.query(name=QUERY_STATUS)
    def status(self) -> dict[str, Any]:
        """The run as the façade and `vmcp runs show` see it: state and every step's progress."""
        return {
            "state": self._state,
            "error": self._failure,
            "steps": self._steps,
            "waiting_for": self._gates.waiting_for(),
            "decisions": self._gates.decisions,
        }

    # ------------------------------------------------------------------ approvals

    @workflow.signal(name=SIGNAL_APPROVE)
    def approve(self, decision: Any) -> None:
        """`{"approver": …, "step": …, "comment": …}`; `step` may be left out when one gate waits."""
        self._gates.decide("approve", decision, workflow.now().isoformat())

    @workflow.signal(name=SIGNAL_REJECT)
    def reject(self, decision: Any) -> None:
        """`{"approver": …, "step": …, "reason": …}`."""
        self._gates.decide("reject", decision, workflow.now().isoformat())

    @workflow.signal(name=SIGNAL_ANSWER)
    def answer(self, answer: Any) -> None:
        """`{"step": …, "action": "accept" | "decline" | "cancel", "content": {…}, "responder": …}`."""
        self._gates.answer(answer, workflow.now().isoformat())

    # The same three as Updates: the validator refuses before anything enters the history.

    @workflow.update(name=SIGNAL_APPROVE)
    def approve_now(self, decision: Any) -> dict[str, Any]:
        return self._gates.decide("approve", decision, workflow.now().isoformat())

    @approve_now.validator
    def _may_approve(self, decision: Any) -> None:
        _refuse_if(self._gates.decision_problem("approve", decision))

    @workflow.update(name=SIGNAL_REJECT)
    def reject_now(self, decision: Any) -> dict[str, Any]:
        return self._gates.decide("reject", decision, workflow.now().isoformat())

    @reject_now.validator
    def _may_reject(self, decision: Any) -> None:
        _refuse_if(self._gates.decision_problem("reject", decision))

    @workflow.update(name=SIGNAL_ANSWER)
    def answer_now(self, answer: Any) -> dict[str, Any]:
        return self._gates.answer(answer, workflow.now().isoformat())

    @answer_now.validator
    def _may_answer(self, answer: Any) -> None:
        _refuse_if(self._gates.answer_problem(answer))

    # ------------------------------------------------------------------ the façade's wait

    @workflow.update(name=UPDATE_WATCH, unfinished_policy=workflow.HandlerUnfinishedPolicy.ABANDON)
    async def watch(self, known: list[str]) -> dict[str, Any]:
        """The run's status as soon as it waits for a person or a step not in `known` (the steps
        the caller has heard of) finishes: the façade waits on the run itself instead of polling."""
        heard = set(known)
        await workflow.wait_condition(lambda: self._state in WAITING_FOR_PEOPLE or bool(self._finished_steps() - heard))
        return self.status()

    @watch.validator
    def _may_watch(self, known: list[str]) -> None:
        if not isinstance(known, list) or not all(isinstance(step, str) for step in known):
            raise ValueError("watch takes the list of step ids the caller has heard of")

    def _finished_steps(self) -> set[str]:
        return {sid for sid, state in self._steps.items() if state["status"] in ("completed", "failed", "skipped")}

    # ------------------------------------------------------------------ the run

    @workflow.run
    async def run(self, run: CompositeRunInput) -> CompositeRunOutput:
        tool = CompositeTool.model_validate(run.definition)
        self._tool = tool
        self._calls = StepCalls(tool, run.caller if isinstance(run.caller, dict) else None)
        owner = run.caller.get("subject") if isinstance(run.caller, dict) else None
        self._waiting = WaitingSteps(tool, self._gates, self._context, lambda: self._state, self._set_state, owner)
        self._params = run.params
        self._context_base = {
            "params": run.params,
            "run": {"id": workflow.info().workflow_id, "tool": tool.name},
            "caller": run.caller,
        }
        for step in tool.steps:
            self._steps[step.id] = {"status": "pending", "depends_on": list(step.depends_on)}
        self._state = "running"  # VmcpTool and VmcpStatus=running were set by the starter

        tasks = {step.id: asyncio.create_task(self._run_step(step)) for step in tool.steps}
        self._tasks = tasks
        try:
            # A step ends by completing, failing or being skipped (all handled inside it) or by being
            # cancelled. Anything else is a bug of the interpreter: it fails this workflow task at
            # once (Temporal retries the task, the Web UI shows why, and a fixed deploy resumes the
            # run) rather than leaving the step `running` and its dependants waiting for ever.
            done, _ = await workflow.wait(tasks.values(), return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            # the run was cancelled: its steps are stopped, and the status query and the search
            # attribute say so
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            if workflow.patched("vmcp-status-cancelled"):
                self._set_status("cancelled")
            raise
        crash = next((task.exception() for task in done if not task.cancelled() and task.exception()), None)
        if crash is not None:
            raise RuntimeError(f"the interpreter failed unexpectedly: {crash!r}") from crash

        if self._failure is not None:
            return self._failed(tool.name, self._failure)
        try:
            structured = render(tool.output, self._context()) if tool.output is not None else self._summaries()
        except TemplateFailure as exc:
            return self._failed(tool.name, f"output: {exc}")
        self._set_status("completed")
        return CompositeRunOutput(
            structured=structured,
            text=json.dumps(structured, sort_keys=True, default=str),
            steps=self._summaries(),
        )

    def _failed(self, tool: str, reason: str) -> CompositeRunOutput:
        self._failure = reason
        self._set_status("failed")
        return CompositeRunOutput(
            structured={"error": reason, "steps": self._summaries()},
            text=f"{tool} failed: {reason}",
            is_error=True,
            steps=self._summaries(),
        )

    def _set_state(self, state: str) -> None:
        self._state = state

    def _set_status(self, state: str) -> None:
        self._state = state
        workflow.upsert_search_attributes([_STATUS_KEY.value_set(state)])

    def _summaries(self) -> dict[str, Any]:
        keys = ("status", "output", "error", "duration_ms", "attempts")
        return {sid: {k: v for k, v in state.items() if k in keys} for sid, state in self._steps.items()}

    def _context(self) -> dict[str, Any]:
        steps = {}
        for sid, state in self._steps.items():
            steps[sid] = {
                "output": state.get("output"),
                "text": state.get("text", ""),
                "status": state["status"],
                "error": state.get("error"),
                "duration_ms": state.get("duration_ms"),
                "attempts": state.get("attempts", 0),
            }
        return {**self._context_base, "steps": steps}

    # ------------------------------------------------------------------ one step

    async def _run_step(self, step: Any) -> None:
        state = self._steps[step.id]
        await workflow.wait_condition(
            lambda: (
                self._failure is not None
                or all(self._steps[dep]["status"] in ("completed", "failed", "skipped") for dep in step.depends_on)
            )
        )
        if self._failure is not None:
            state.update(status="skipped", error="not run: the run failed", output=step.default_output)
            return
        started = workflow.now()
        state.update(status="running", started_at=started.isoformat())
        try:
            if step.when and not evaluate(step.when, self._context()):
                state.update(status="skipped", output=step.default_output, reason="when was false")
                return
            if isinstance(step, ToolStep):
                output, text, attempts = await self._calls.call(
                    step.id, "", step, render(step.arguments, self._context())
                )
                state.update(status="completed", output=output, text=text, attempts=attempts)
            elif isinstance(step, ForEachStep):
                await self._for_each(step, state)
            elif isinstance(step, ApprovalStep):
                decision = await self._waiting.approval(step, state)
                self._calls.gate_passed = True
                state.update(status="completed", output=decision, decision=decision, attempts=0)
            elif isinstance(step, ElicitationStep):
                answer = await self._waiting.question(step, state)
                self._calls.gate_passed = True
                state.update(status="completed", output=answer, answer=answer, attempts=0)
        except (StepFailed, TemplateFailure) as exc:
            attempts = exc.attempts if isinstance(exc, StepFailed) else 0
            state.update(status="failed", error=str(exc), attempts=attempts, output=step.default_output)
            if step.on_error == "fail" and self._failure is None:
                self._failure = f"step {step.id!r}: {exc}"
                for sid, task in self._tasks.items():
                    if sid != step.id and self._steps[sid]["status"] == "running":
                        task.cancel()
        except asyncio.CancelledError:
            reason = "another step failed" if self._failure is not None else "the run was cancelled"
            reason = f"cancelled: {reason}"
            state.update(status="skipped", error=reason, output=step.default_output)
            raise
        finally:
            finished = workflow.now()
            state["duration_ms"] = int((finished - started).total_seconds() * 1000)
            state["finished_at"] = finished.isoformat()

    async def _for_each(self, step: ForEachStep, state: dict[str, Any]) -> None:
        expression = step.collection.strip()
        if expression.startswith("{{") and expression.endswith("}}"):
            expression = expression[2:-2]
        items = render("{{" + expression + "}}", self._context())
        if not isinstance(items, list):
            raise StepFailed(f"collection is {type(items).__name__}, not a list", 0)
        if len(items) > step.max_items and workflow.patched("vmcp-for-each-ceiling"):
            raise StepFailed(f"collection has {len(items)} items, more than max_items ({step.max_items})", 0)
        limit = asyncio.Semaphore(step.max_parallel)
        results: list[Any] = [None] * len(items)
        failures: list[str] = []
        attempts = 0

        async def one(index: int, item: Any) -> None:
            nonlocal attempts
            async with limit:
                context = {**self._context(), step.item_var: item}
                try:
                    output, _, used = await self._calls.call(
                        step.id, f"/{index}", step.step, render(step.step.arguments, context)
                    )
                    results[index] = output
                    attempts += used
                except (StepFailed, TemplateFailure) as exc:
                    failures.append(f"item {index}: {exc}")
                    results[index] = {"error": str(exc)}
                    attempts += exc.attempts if isinstance(exc, StepFailed) else 0

        await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))
        state.update(output=results, attempts=attempts, items=len(items))
        if failures:
            raise StepFailed(
                f"{len(failures)} of {len(items)} items failed: {'; '.join(failures[:3])}", attempts, results
            )
        state["status"] = "completed"


def _refuse_if(problem: str | None) -> None:
    """An Update validator's refusal: the caller gets `problem`, the history nothing."""
    if problem is not None:
        raise ApplicationError(problem, type="DecisionRefused", non_retryable=True)
