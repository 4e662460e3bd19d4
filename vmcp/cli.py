"""The `vmcp` command line.

Every command returns an exit code and leaves through `_exit`, which flushes and then ends the
process with `os._exit`: a short-lived process holding the Temporal client was seen to crash at
interpreter teardown after printing its output, and a CLI must keep its exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from vmcp.config import ConfigError, VmcpConfig, load_config

DEFAULT_CONFIG = "temporal-dev.yaml"


def _config_path(value: str | None) -> str:
    return value or os.environ.get("VMCP_CONFIG") or DEFAULT_CONFIG


def _load(path: str) -> VmcpConfig:
    return load_config(path)


def _config_or_none(path: str | None) -> VmcpConfig | None:
    """The configuration (`--config`, else $VMCP_CONFIG, else ./temporal-dev.yaml), or None after
    printing what is wrong with it."""
    try:
        return _load(_config_path(path))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def event_loop_options() -> dict[str, bool]:
    """uvloop when installed: it roughly halves the event-loop cost of every forwarded call."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


# --------------------------------------------------------------------------- commands


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        config = _load(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.offline:
        print(f"{args.file}: valid ({len(config.backends)} backends; backends not contacted)")
        return 0
    from vmcp.probe import probe_catalog

    outcome = anyio.run(probe_catalog, config, args.timeout)
    for line in outcome.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if outcome.error is not None:
        print(f"invalid configuration in {args.file}:", file=sys.stderr)
        for issue in outcome.error.issues:
            print(f"  {issue}", file=sys.stderr)
        return 1
    print(
        f"{args.file}: valid ({len(config.backends)} backends, {outcome.reachable} reachable, "
        f"{len(outcome.catalog.tools)} backend tools and {len(config.composite_tools)} composite tools advertised)"
    )
    return 0


def cmd_tools(args: argparse.Namespace) -> int:
    config = _config_or_none(args.config)
    if config is None:
        return 1
    from vmcp.probe import probe_catalog

    outcome = anyio.run(probe_catalog, config, args.timeout)
    for line in outcome.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if outcome.error is not None:
        print(outcome.error, file=sys.stderr)
        return 1
    catalog = outcome.catalog
    rows = []
    for tool in catalog.tools:
        route = catalog.tool_routes[tool.name]
        rows.append(
            {
                "name": tool.name,
                "backend": route.backend,
                "original": route.original,
                "description": (tool.description or "").strip().splitlines()[0] if tool.description else "",
                "input_schema": tool.input_schema,
            }
        )
    for composite in config.composite_tools:
        rows.append(
            {
                "name": composite.name,
                "backend": "(composite)",
                "original": f"{len(composite.steps)} steps",
                "description": composite.description.strip().splitlines()[0] if composite.description else "",
                "input_schema": composite.parameters,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0 if outcome.reachable == len(config.backends) else 2
    widths = [max([len(h)] + [len(str(r[k])) for r in rows]) for h, k in _TOOL_COLUMNS[:3]]
    header = "  ".join(h.ljust(w) for (h, _), w in zip(_TOOL_COLUMNS[:3], widths, strict=True))
    print(header + "  DESCRIPTION")
    for row in rows:
        cells = [str(row[k]).ljust(w) for (_, k), w in zip(_TOOL_COLUMNS[:3], widths, strict=True)]
        print("  ".join(cells) + "  " + _clip(str(row["description"]), 80))
    down = [s for s in outcome.statuses if s.state != "ready"]
    for status in down:
        print(f"backend {status.name} unavailable: {status.last_error or status.state}", file=sys.stderr)
    # partial catalogue: still printed, but the exit code tells a script it is incomplete
    return 2 if down else 0


_TOOL_COLUMNS = [("NAME", "name"), ("BACKEND", "backend"), ("ORIGINAL", "original")]


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_serve(args: argparse.Namespace) -> int:
    config = _config_or_none(args.config)
    if config is None:
        return 1
    from vmcp.app import StartupRefused, serve

    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    print(f"vmcp façade: http://{host}:{port}{config.server.path}", flush=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            anyio.run(lambda: serve(config, host=host, port=port), backend_options=event_loop_options())
    except StartupRefused as exc:
        print(f"vmcp serve: not starting:\n{exc}", file=sys.stderr)
        return 1
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    config = _config_or_none(args.config)
    if config is None:
        return 1
    from worker import run_worker_until_interrupted

    return run_worker_until_interrupted(config)


def cmd_dev(args: argparse.Namespace) -> int:
    config = _config_or_none(args.config)
    if config is None:
        return 1
    from vmcp.devstack import run_dev

    return run_dev(config)


def cmd_runs(args: argparse.Namespace) -> int:
    config = _config_or_none(args.config)
    if config is None:
        return 1
    from vmcp.orchestrator import Orchestrator, RunNotFound, TemporalUnreachable

    orchestrator = Orchestrator(config)
    try:
        if args.runs_command == "list":
            runs = anyio.run(lambda: orchestrator.list_runs(pending_only=args.pending, limit=args.limit))
            _print_runs(runs, args.json)
        else:
            status = anyio.run(orchestrator.status, args.run)
            _print_run(status, args.json)
    except RunNotFound:
        print(f"vmcp runs: no run {args.run!r} in namespace {config.temporal.namespace!r}", file=sys.stderr)
        return 1
    except TemporalUnreachable as exc:
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
                f"{state.get('attempts', '') or '':>5}  {_clip(str(detail or ''), 80)}"
            )


def _summary(output: object) -> str:
    if output is None:
        return ""
    text = output if isinstance(output, str) else json.dumps(output, sort_keys=True, default=str)
    return " ".join(text.split())


def cmd_decide(args: argparse.Namespace) -> int:
    """`vmcp approve` / `vmcp reject`: a decision sent as a signal; exit 1 when refused."""
    config = _config_or_none(args.config)
    if config is None:
        return 1
    import getpass
    import uuid

    from vmcp.orchestrator import Orchestrator, RunNotFound, RunNotWaiting, TemporalUnreachable

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
    except (RunNotWaiting, TemporalUnreachable) as exc:
        print(f"vmcp {kind}: {exc}", file=sys.stderr)
        return 1
    if record.get("outcome") != "accepted":
        print(f"vmcp {kind}: refused: {record.get('problem')}", file=sys.stderr)
        return 1
    verb = "approved" if kind == "approve" else "rejected"
    print(f"{verb} step {record.get('step')} of {args.run} as {approver}")
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vmcp", description="A durable virtual MCP server on Temporal.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser("dev", help="run Temporal dev server, worker and façade together")
    dev.add_argument("--config", help=f"configuration file (default: $VMCP_CONFIG or {DEFAULT_CONFIG})")
    dev.set_defaults(func=cmd_dev)

    serve = sub.add_parser("serve", help="run the MCP façade")
    serve.add_argument("--config")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run a Temporal worker for composite tools")
    worker.add_argument("--config")
    worker.set_defaults(func=cmd_worker)

    validate = sub.add_parser("validate", help="check a configuration file")
    validate.add_argument("file")
    validate.add_argument(
        "--offline",
        action="store_true",
        help="check the file alone; do not contact backends for name clashes",
    )
    validate.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for backends")
    validate.set_defaults(func=cmd_validate)

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

    tools = sub.add_parser("tools", help="list the aggregated tool catalogue")
    tools.add_argument("--config")
    tools.add_argument("--json", action="store_true", help="print JSON, with input schemas")
    tools.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for backends")
    tools.set_defaults(func=cmd_tools)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # worker.py lives at the repository root, beside the packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        # the reader went away (`vmcp tools | head`): stop quietly, as other command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141
    _exit(code)


def _exit(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
