"""The CLI's commands for composite runs: `vmcp runs list|show`, `vmcp approve|reject`, `vmcp answer`.

They talk to Temporal through the orchestrator only, print for people (or `--json`), and exit non-zero
with a one-line reason when the run is unknown, not waiting, or the decision was refused.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import uuid
from typing import Any

import anyio

from vmcp.cli.common import clip, config_or_none


def add_run_commands(sub: Any) -> None:
    runs = sub.add_parser("runs", help="composite runs, from Temporal")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True, metavar="SUBCOMMAND")
    runs_list = runs_sub.add_parser("list", help="recent composite runs, newest first")
    runs_list.add_argument("--config")
    runs_list.add_argument("--pending", action="store_true", help="only runs waiting for an approval")
    runs_list.add_argument("--limit", type=int, default=50)
    runs_list.add_argument("--json", action="store_true")
    runs_list.set_defaults(func=cmd_runs)
    runs_show = runs_sub.add_parser("show", help="one run: state and every step's status, timing and output")
    runs_show.add_argument("run", help="run id (vmcp-<tool>-<uuid>)")
    runs_show.add_argument("--config")
    runs_show.add_argument("--json", action="store_true")
    runs_show.set_defaults(func=cmd_runs)

    for kind in ("approve", "reject"):
        decide = sub.add_parser(kind, help=f"{kind} a run waiting at an approval gate (a Temporal signal)")
        decide.add_argument("run", help="run id (vmcp-<tool>-<uuid>)")
        decide.add_argument("--step", help="the gate's step id (needed only when several gates wait)")
        if kind == "approve":
            decide.add_argument("--comment", default=None)
        else:
            decide.add_argument("--reason", required=True)
        decide.add_argument("--as", dest="as_", help="approver name (default: $VMCP_APPROVER, else the OS user)")
        decide.add_argument("--group", action="append", help="a group the approver belongs to (repeatable)")
        decide.add_argument("--config")
        decide.set_defaults(func=cmd_decide)

    answer = sub.add_parser("answer", help="answer a run's question (an elicitation step), as a Temporal signal")
    answer.add_argument("run", help="run id (vmcp-<tool>-<uuid>)")
    answer.add_argument("--step", help="the question's step id (needed only when several wait)")
    answer.add_argument(
        "--set",
        dest="fields",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="one field of the answer (repeatable); typed by the question's schema",
    )
    answer.add_argument("--json", dest="content", help="the whole answer as a JSON object")
    refuse = answer.add_mutually_exclusive_group()
    refuse.add_argument("--decline", action="store_true", help="decline to answer (the step fails)")
    refuse.add_argument("--cancel", action="store_true", help="dismiss the question (the step fails)")
    answer.add_argument("--as", dest="as_", help="who answers (default: $VMCP_APPROVER, else the OS user)")
    answer.add_argument("--config")
    answer.set_defaults(func=cmd_answer)


def cmd_runs(args: argparse.Namespace) -> int:
    config = config_or_none(args.config)
    if config is None:
        return 1
    from vmcp.runs.errors import RunNotFound
    from vmcp.runs.orchestrator import Orchestrator
    from vmcp.runs.payload_codec import KeyRingError, MissingKey
    from vmcp.runs.temporal_client import TemporalUnreachable

    orchestrator = Orchestrator(config)
    try:
        if args.runs_command == "list":
            runs = anyio.run(lambda: orchestrator.list_runs(pending_only=args.pending, limit=args.limit))
            _print_runs(runs, args.json)
        else:
            status = anyio.run(lambda: orchestrator.status(args.run, prompt=True))
            _print_run(status, args.json)
    except RunNotFound:
        print(f"vmcp runs: no run {args.run!r} in namespace {config.temporal.namespace!r}", file=sys.stderr)
        return 1
    except (TemporalUnreachable, KeyRingError, MissingKey) as exc:
        print(f"vmcp runs: {exc}", file=sys.stderr)
        return 1
    return 0


def _print_runs(runs: list[dict[str, object]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(runs, indent=2))
        return
    if not runs:
        print("no composite runs")
        return
    columns = [("RUN", "run_id"), ("TOOL", "tool"), ("STATE", "state"), ("STARTED", "started_at")]
    widths = [max(len(title), *(len(str(run.get(key) or "")) for run in runs)) for title, key in columns]
    print("  ".join(title.ljust(width) for (title, _), width in zip(columns, widths, strict=True)))
    for run in runs:
        print("  ".join(str(run.get(key) or "").ljust(width) for (_, key), width in zip(columns, widths, strict=True)))


def _print_run(status: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(status, indent=2, default=str))
        return
    print(f"run      {status.get('run_id')}")
    print(f"state    {status.get('state')}")
    print(f"started  {status.get('started_at')}")
    if status.get("closed_at"):
        print(f"closed   {status.get('closed_at')}")
    if status.get("error"):
        print(f"error    {status.get('error')}")
    if status.get("busy"):
        print(f"busy     {status.get('busy')}")
    waiting = status.get("waiting_for")
    if isinstance(waiting, dict) and waiting:
        for gate in waiting.get("gates", [waiting]):
            if gate.get("kind") == "input":
                fields = ", ".join((gate.get("requested_schema") or {}).get("properties") or {}) or "none"
                print(f"waiting  step {gate.get('step')} asks: {gate.get('message')} (fields: {fields})")
            else:
                approvers = ", ".join(gate.get("approvers") or ["anyone"])
                print(f"waiting  step {gate.get('step')} for approval: {gate.get('message')} (approvers: {approvers})")
    steps = status.get("steps")
    if isinstance(steps, dict) and steps:
        print()
        print(f"{'STEP':20} {'STATUS':10} {'MS':>7} {'TRIES':>5}  DETAIL")
        ordered = sorted(
            ((sid, st) for sid, st in steps.items() if isinstance(st, dict)),
            key=lambda item: (str(item[1].get("started_at") or "~"), item[0]),
        )
        for step_id, state in ordered:
            detail = state.get("error") or _summary(state.get("output"))
            duration = state.get("duration_ms")
            print(
                f"{step_id:20} {state.get('status', ''):10} {duration if duration is not None else '':>7} "
                f"{state.get('attempts', '') or '':>5}  {clip(str(detail or ''), 80)}"
            )


def _summary(output: object) -> str:
    if output is None:
        return ""
    text = output if isinstance(output, str) else json.dumps(output, sort_keys=True, default=str)
    return " ".join(text.split())


def cmd_decide(args: argparse.Namespace) -> int:
    """`vmcp approve` / `vmcp reject`: a decision sent as a signal; exit 1 when refused."""
    config = config_or_none(args.config)
    if config is None:
        return 1

    from vmcp.runs.errors import RunNotFound, RunNotWaiting
    from vmcp.runs.orchestrator import Orchestrator
    from vmcp.runs.payload_codec import KeyRingError, MissingKey
    from vmcp.runs.temporal_client import TemporalUnreachable

    kind = args.command
    approver = args.as_ or os.environ.get("VMCP_APPROVER") or getpass.getuser()
    decision: dict[str, object] = {"id": str(uuid.uuid4()), "approver": approver}
    if args.step:
        decision["step"] = args.step
    if args.group:
        decision["groups"] = list(args.group)
    decision["reason" if kind == "reject" else "comment"] = args.reason if kind == "reject" else args.comment
    orchestrator = Orchestrator(config)
    try:
        record = anyio.run(orchestrator.decide, args.run, kind, decision)
    except RunNotFound:
        print(f"vmcp {kind}: no run {args.run!r} in namespace {config.temporal.namespace!r}", file=sys.stderr)
        return 1
    except (RunNotWaiting, TemporalUnreachable, KeyRingError, MissingKey) as exc:
        print(f"vmcp {kind}: {exc}", file=sys.stderr)
        return 1
    if record.get("outcome") != "accepted":
        print(f"vmcp {kind}: refused: {record.get('problem')}", file=sys.stderr)
        return 1
    verb = "approved" if kind == "approve" else "rejected"
    print(f"{verb} step {record.get('step')} of {args.run} as {approver}")
    return 0


def cmd_answer(args: argparse.Namespace) -> int:
    """`vmcp answer`: an elicitation step's answer sent as a signal; exit 1 when refused."""
    config = config_or_none(args.config)
    if config is None:
        return 1
    from vmcp.runs.errors import RunNotFound, RunNotWaiting
    from vmcp.runs.orchestrator import Orchestrator
    from vmcp.runs.payload_codec import KeyRingError, MissingKey
    from vmcp.runs.questions import open_questions
    from vmcp.runs.temporal_client import TemporalUnreachable

    orchestrator = Orchestrator(config)
    responder = args.as_ or os.environ.get("VMCP_APPROVER") or getpass.getuser()
    action = "decline" if args.decline else "cancel" if args.cancel else "accept"

    async def send() -> dict[str, Any]:
        content: dict[str, Any] | None = None
        if action == "accept":
            questions = open_questions(await orchestrator.status(args.run))
            question = next((q for q in questions if args.step in (None, q.get("step"))), None)
            if question is None:
                raise RunNotWaiting(
                    f"run {args.run} is not waiting for an answer" + (f" at {args.step}" if args.step else "")
                )
            content = _answer_content(args, question.get("requested_schema") or {})
        payload = {
            "id": str(uuid.uuid4()),
            "step": args.step,
            "action": action,
            "content": content,
            "responder": responder,
        }
        return await orchestrator.decide(args.run, "answer", payload)

    try:
        record = anyio.run(send)
    except RunNotFound:
        print(f"vmcp answer: no run {args.run!r} in namespace {config.temporal.namespace!r}", file=sys.stderr)
        return 1
    except (RunNotWaiting, TemporalUnreachable, KeyRingError, MissingKey, ValueError) as exc:
        print(f"vmcp answer: {exc}", file=sys.stderr)
        return 1
    if record.get("outcome") != "accepted":
        print(f"vmcp answer: refused: {record.get('problem')}", file=sys.stderr)
        return 1
    print(f"answered step {record.get('step')} of {args.run} ({action}) as {responder}")
    return 0


def _answer_content(args: argparse.Namespace, schema: dict[str, Any]) -> dict[str, Any]:
    """`--json` and `--set` merged into one object; `--set` values typed by the question's schema."""
    content: dict[str, Any] = {}
    if args.content:
        loaded = json.loads(args.content)
        if not isinstance(loaded, dict):
            raise ValueError("--json must be a JSON object")
        content.update(loaded)
    properties = schema.get("properties") or {}
    for item in args.fields:
        name, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: write FIELD=VALUE")
        content[name] = _typed(raw, (properties.get(name) or {}).get("type"), name)
    return content


def _typed(raw: str, kind: Any, name: str) -> Any:
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":
            return float(raw)
    except ValueError:
        raise ValueError(f"--set {name}: {raw!r} is not a{'n integer' if kind == 'integer' else ' number'}") from None
    if kind == "boolean":
        if raw.lower() in ("true", "yes", "1"):
            return True
        if raw.lower() in ("false", "no", "0"):
            return False
        raise ValueError(f"--set {name}: {raw!r} is not true or false")
    return raw
