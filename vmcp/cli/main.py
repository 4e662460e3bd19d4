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
from typing import Any

import anyio

from vmcp.cli.common import DEFAULT_CONFIG, clip, config_or_none
from vmcp.config.files import load_runnable
from vmcp.config.loading import ConfigError
from vmcp.ops import logs
from vmcp.ops.event_loop import event_loop_options

# --------------------------------------------------------------------------- commands


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        config = load_runnable(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.offline:
        print(f"{args.file}: valid ({len(config.backends)} backends; backends not contacted)")
        return 0
    from vmcp.cli.probe import probe_catalog

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
    config = config_or_none(args.config)
    if config is None:
        return 1
    from vmcp.cli.probe import probe_catalog

    outcome = anyio.run(probe_catalog, config, args.timeout)
    for line in outcome.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if outcome.error is not None:
        print(outcome.error, file=sys.stderr)
        return 1
    catalog = outcome.catalog
    from vmcp.security.arguments import describe

    rows: list[dict[str, Any]] = []
    for tool in catalog.tools:
        route = catalog.tool_routes[tool.name]
        shape = route.shape
        rows.append(
            {
                "name": tool.name,
                "backend": route.backend,
                "original": route.original,
                "description": (tool.description or "").strip().splitlines()[0] if tool.description else "",
                "input_schema": tool.input_schema,  # the effective schema: what a caller may send
                "fixed": dict(shape.fixed) if shape else {},
                "policy": describe(shape.policies) if shape else {},
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
        print("  ".join(cells) + "  " + clip(str(row["description"]), 80))
        for name, value in row.get("fixed", {}).items():
            print(f"    fixed  {name} = {json.dumps(value)}")
        for name, rules in row.get("policy", {}).items():
            print(f"    policy {name}: {json.dumps(rules, sort_keys=True)}")
    down = [s for s in outcome.statuses if s.state != "ready"]
    for status in down:
        print(f"backend {status.name} unavailable: {status.last_error or status.state}", file=sys.stderr)
    # partial catalogue: still printed, but the exit code tells a script it is incomplete
    return 2 if down else 0


_TOOL_COLUMNS = [("NAME", "name"), ("BACKEND", "backend"), ("ORIGINAL", "original")]


def cmd_serve(args: argparse.Namespace) -> int:
    config = config_or_none(args.config, runnable=True)
    if config is None:
        return 1
    from vmcp.pipeline.app import StartupRefused, serve

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
    config = config_or_none(args.config, runnable=True)
    if config is None:
        return 1
    from worker import run_worker_until_interrupted

    return run_worker_until_interrupted(config)


def cmd_dev(args: argparse.Namespace) -> int:
    config = config_or_none(args.config, runnable=True)
    if config is None:
        return 1
    from vmcp.dev.stack import run_dev

    return run_dev(config)


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vmcp", description="A durable virtual MCP server on Temporal.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="log lines as text or JSON (default: $VMCP_LOG_FORMAT, else text)",
    )
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

    from vmcp.cli.keys import add_key_commands
    from vmcp.cli.runs import add_run_commands

    add_run_commands(sub)
    add_key_commands(sub)

    tools = sub.add_parser("tools", help="list the aggregated tool catalogue")
    tools.add_argument("--config")
    tools.add_argument("--json", action="store_true", help="print JSON, with input schemas")
    tools.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for backends")
    tools.set_defaults(func=cmd_tools)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logs.configure(logging.DEBUG if args.verbose else logging.WARNING, args.log_format)
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
