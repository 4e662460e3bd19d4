"""`vmcp keys show|rotate`: the key ring that encrypts run data in Temporal (`temporal.encryption`).

`rotate` adds a new random key and makes it current; every older key stays in the ring, because
runs whose history holds payloads sealed with it need it to be read (and to carry on). Façades and
workers load the ring when they start: restart them after a rotation. A ring kept in an
environment variable cannot be written from here: `rotate` prints the new ring for the operator to
store wherever that variable comes from.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from vmcp.cli.common import config_or_none


def add_key_commands(sub: Any) -> None:
    keys = sub.add_parser("keys", help="the key ring that encrypts run data (temporal.encryption)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    for name, text in (
        ("show", "the ring's key ids and which one is current (never the keys)"),
        ("rotate", "add a new key and make it current; the older ones stay for reading"),
    ):
        command = keys_sub.add_parser(name, help=text)
        command.add_argument("--config")
        command.set_defaults(func=cmd_keys)


def cmd_keys(args: argparse.Namespace) -> int:
    config = config_or_none(args.config)
    if config is None:
        return 1
    settings = config.temporal.encryption
    if settings is None:
        print("vmcp keys: temporal.encryption is not set: run data is not encrypted", file=sys.stderr)
        return 1
    from vmcp.runs.payload_codec import KeyRing, KeyRingError, load_ring, write_key_file

    try:
        ring = load_ring(config)
    except KeyRingError as exc:
        if (
            args.keys_command != "rotate"
            or settings.key_file is None
            or config.resolve_path(settings.key_file).exists()
        ):
            print(f"vmcp keys: {exc}", file=sys.stderr)
            return 1
        ring = None  # no file yet: rotating makes the first key
    if args.keys_command == "show":
        assert ring is not None
        for key_id in ring.keys:
            print(f"{key_id}{'  (current)' if key_id == ring.current else ''}")
        return 0
    rotated = ring.rotated() if ring is not None else KeyRing.new()
    if settings.key_file is not None:
        path = config.resolve_path(settings.key_file)
        write_key_file(path, rotated)
        print(
            f"vmcp keys: {path}: {rotated.current} is now current ({len(rotated.keys)} keys); restart the "
            "façades and workers to seal new run data with it; keep the older keys while runs may need them"
        )
        return 0
    print(
        f"# the new ring for {settings.keys_env} ({rotated.current} current); store it, then restart", file=sys.stderr
    )
    print(rotated.dumps(), end="")
    return 0
