"""A soak: a real `vmcp dev` stack under steady mixed load for a long time, watched every minute.

    .venv/bin/python bench/soak.py [--minutes 30] [--clients 20] [--out bench/soak-results.json]
    .venv/bin/python bench/soak.py --plot bench/soak-results.json     # the PNG again, from the JSON

Twenty MCP clients (half in the handshake era, half in 2026-07-28) loop over a mix of what users
do: plain tool calls through the lean and SDK paths, tools/prompts/resources lists, one-step and
parallel composite runs, and composite runs that stop at an approval gate, approved by
`vmcp approve` (the CLI, one process per decision, as an approver runs it) before the client reads
the result. Each client thinks 50–250 ms between operations, so the stack is busy but not
saturated: the soak looks for errors and growth, not for peak throughput.

Every minute it records the operations and errors of that minute, p50/p99 latency, and the RSS of
the `vmcp dev` process (façade and worker share it) and of its Temporal dev server. At the end it
prints the table and the memory slope over the second half of the run (least squares, MiB per
10 minutes) and draws RSS over time into a PNG (matplotlib, the `bench` extra).
Not a test: figures go in notes and bench/README.md, never into assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import yaml
from mcp import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, pct, wait_http

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
APPROVER = "soak-approver"
# The trend is read over the second half of the run: the first minutes fill caches (Temporal's
# history and mutable-state caches grow for about ten minutes under this load, then hold), and
# a fill is not a leak. A leak keeps its slope in the second half; a cache flattens out.


TAIL_GRACE = 60.0  # seconds an operation may still run after the end before it counts as hung


def settle_minute(records: list[dict[str, Any]]) -> int:
    return max(5, records[-1]["minute"] // 2)


# operation name -> weight; together they are what one client does over time
MIX = {
    "echo": 35,
    "echo_big": 5,
    "list_tools": 12,
    "list_other": 5,
    "one_step": 20,
    "parallel": 10,
    "gated": 1,  # each decision is a CLI process (about a second of CPU): approvals are rare
    "status": 8,
}


def composites() -> list[dict[str, Any]]:
    return [
        {
            "name": "one_step",
            "steps": [{"id": "only", "tool": "fault.echo", "arguments": {"text": "{{ params.text }}"}}],
            "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        },
        {
            "name": "parallel",
            "steps": [
                {"id": "a", "tool": "fault.slow", "arguments": {"seconds": 0.05}},
                {"id": "b", "tool": "fault.slow", "arguments": {"seconds": 0.05}},
                {"id": "join", "tool": "fault.echo", "arguments": {"text": "joined"}, "depends_on": ["a", "b"]},
            ],
        },
        {
            "name": "gated",
            "wait": "2s",
            "steps": [
                {"id": "before", "tool": "fault.echo", "arguments": {"text": "before"}},
                {"id": "gate", "type": "approval", "message": "Go?", "approvers": [APPROVER], "depends_on": ["before"]},
                {"id": "after", "tool": "fault.echo", "arguments": {"text": "after"}, "depends_on": ["gate"]},
            ],
        },
    ]


@dataclass
class Minute:
    """What happened in one minute of the soak."""

    ops: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    composite_latencies: list[float] = field(default_factory=list)


class Soak:
    def __init__(self, url: str, config_file: Path, dev_pid: int) -> None:
        self.url = url
        self.config_file = config_file
        self.dev_pid = dev_pid
        self.current = Minute()
        self.first_errors: list[str] = []
        self.clients_running = 0
        self.approvals: anyio.abc.ObjectSendStream[tuple[str, anyio.Event, list[str]]] | None = None

    def error(self, op: str, what: str) -> None:
        self.current.errors[op] += 1
        if len(self.first_errors) < 20:
            self.first_errors.append(f"{time.strftime('%H:%M:%S')} {op}: {what[:500]}")

    async def operation(self, client: Client, op: str, rng: random.Random) -> None:
        start = time.perf_counter()
        try:
            problem = await self._do(client, op, rng)
        except Exception as exc:  # a soak counts every failure; the first few are kept whole
            problem = "".join(traceback.format_exception_only(exc)).strip()
        elapsed = time.perf_counter() - start
        minute = self.current
        minute.ops[op] += 1
        if problem:
            self.error(op, problem)
            return
        if op == "gated":  # its time is mostly the approver's: counted, not timed
            return
        (minute.composite_latencies if op in ("one_step", "parallel") else minute.latencies).append(elapsed)

    async def _do(self, client: Client, op: str, rng: random.Random) -> str | None:
        if op in ("echo", "echo_big"):
            text = f"soak-{rng.getrandbits(64):016x}" * (2000 if op == "echo_big" else 1)
            result = await client.call_tool("fault_echo", {"text": text})
            got = "".join(getattr(block, "text", "") for block in result.content)
            return None if not result.is_error and got == text else f"echo answered {got[:200]!r}"
        if op == "list_tools":
            tools = await client.list_tools()
            names = {tool.name for tool in tools.tools}
            return None if {"fault_echo", "one_step", "gated"} <= names else f"tools/list lacks tools: {sorted(names)}"
        if op == "list_other":
            await client.list_prompts()
            await client.list_resources()
            return None
        if op == "one_step":
            text = f"run-{rng.getrandbits(32):08x}"
            result = await client.call_tool("one_step", {"text": text})
            body = json.dumps(result.structured_content or {})
            return None if not result.is_error and text in body else f"one_step answered {body[:300]}"
        if op == "parallel":
            result = await client.call_tool("parallel", {})
            state = (result.structured_content or {}).get("state")
            return None if not result.is_error and state in (None, "completed") else f"parallel: {result}"
        if op == "status":
            unknown = f"vmcp-one_step-{uuid.UUID(int=rng.getrandbits(128), version=4)}"
            result = await client.call_tool("vmcp_run_status", {"run_id": unknown})
            return None if result.is_error else "a status of a run that does not exist was not an error"
        if op == "gated":
            return await self._gated(client)
        raise AssertionError(op)

    async def _gated(self, client: Client) -> str | None:
        started = await client.call_tool("gated", {})
        body = started.structured_content or {}
        if started.is_error or body.get("state") != "awaiting_approval":
            return f"gated did not wait for approval: {started}"
        run_id = str(body["run_id"])
        decided = anyio.Event()
        outcome: list[str] = []
        assert self.approvals is not None
        await self.approvals.send((run_id, decided, outcome))
        await decided.wait()
        if outcome:
            return outcome[0]
        result = await client.call_tool("vmcp_run_result", {"run_id": run_id, "wait_seconds": 60})
        final = result.structured_content or {}
        if result.is_error or (final.get("after") or {}).get("status") != "completed":
            return f"gated run {run_id} after approval: {final or result}"
        return None

    async def approver(self, inbox: anyio.abc.ObjectReceiveStream[tuple[str, anyio.Event, list[str]]]) -> None:
        """Approves gated runs with the CLI, as an approver at a terminal would (one of several)."""
        async for run_id, decided, outcome in inbox:
            done = await anyio.run_process(
                [str(BIN / "vmcp"), "approve", run_id, "--as", APPROVER, "--config", str(self.config_file)],
                check=False,
            )
            if done.returncode != 0:
                outcome.append(f"vmcp approve exited {done.returncode}: {done.stderr.decode(errors='replace')}")
            decided.set()

    async def client(self, index: int, mode: str, until: float) -> None:
        self.clients_running += 1
        try:
            await self._client(index, mode, until)
        finally:
            self.clients_running -= 1

    async def _client(self, index: int, mode: str, until: float) -> None:
        rng = random.Random(index)
        ops, weights = list(MIX), list(MIX.values())
        while time.monotonic() < until:
            try:
                async with Client(self.url, mode=mode) as client:  # type: ignore[arg-type]
                    # a client reconnects now and then, as real ones do
                    for _ in range(rng.randint(50, 200)):
                        if time.monotonic() >= until:
                            return
                        await self.operation(client, rng.choices(ops, weights)[0], rng)
                        await anyio.sleep(rng.uniform(0.05, 0.25))
            except Exception as exc:
                self.error("session", "".join(traceback.format_exception_only(exc)).strip())
                await anyio.sleep(1)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """RSS in MiB; `RssAnon` is the process's own memory, `RssFile` pages of mapped files."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def files_mib(*paths: Path) -> float:
    return sum(path.stat().st_size for path in paths if path.exists()) / 2**20


def temporal_pid(dev_pid: int) -> int:
    for child in children(dev_pid):
        if b"start-dev" in Path(f"/proc/{child}/cmdline").read_bytes():
            return child
    raise RuntimeError("vmcp dev has no temporal child")


async def soak(url: str, config_file: Path, db_file: Path, dev_pid: int, minutes: int, clients: int) -> dict[str, Any]:
    runner = Soak(url, config_file, dev_pid)
    temporal = temporal_pid(dev_pid)
    database = [db_file, db_file.with_name(db_file.name + "-wal")]
    records: list[dict[str, Any]] = []
    start = time.monotonic()
    until = start + minutes * 60

    def sample(minute_index: int) -> None:
        m, runner.current = runner.current, Minute()
        plain, comp = m.latencies, m.composite_latencies
        records.append(
            {
                "minute": minute_index,
                "ops": sum(m.ops.values()),
                "by_op": dict(m.ops),
                "errors": sum(m.errors.values()),
                "errors_by_op": dict(m.errors),
                "p50_ms": round(pct(plain, 0.5), 2) if plain else None,
                "p99_ms": round(pct(plain, 0.99), 2) if plain else None,
                "composite_p50_ms": round(pct(comp, 0.5), 2) if comp else None,
                "composite_p99_ms": round(pct(comp, 0.99), 2) if comp else None,
                "rss_vmcp_dev_mib": round(rss_mib(dev_pid), 1),
                "rss_temporal_mib": round(rss_mib(temporal), 1),
                "rss_temporal_anon_mib": round(rss_mib(temporal, "RssAnon"), 1),
                "temporal_db_mib": round(files_mib(*database), 1),
            }
        )
        r = records[-1]
        print(
            f"min {minute_index:3d}  ops {r['ops']:6d}  errors {r['errors']:3d}"
            f"  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms"
            f"  composite p50 {r['composite_p50_ms']} ms  RSS vmcp dev {r['rss_vmcp_dev_mib']} MiB"
            f"  temporal {r['rss_temporal_mib']} MiB (anon {r['rss_temporal_anon_mib']})"
            f"  database {r['temporal_db_mib']} MiB",
            flush=True,
        )

    send, receive = anyio.create_memory_object_stream[tuple[str, anyio.Event, list[str]]](100)
    runner.approvals = send
    records.append(
        {
            "minute": 0,
            "ops": 0,
            "errors": 0,
            "rss_vmcp_dev_mib": round(rss_mib(dev_pid), 1),
            "rss_temporal_mib": round(rss_mib(temporal), 1),
            "rss_temporal_anon_mib": round(rss_mib(temporal, "RssAnon"), 1),
            "temporal_db_mib": round(files_mib(*database), 1),
        }
    )
    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(runner.approver, receive.clone())
        receive.close()
        # approvers outlive the clients: a gated run still in flight at the end gets its decision
        async with anyio.create_task_group() as load:
            for index in range(clients):
                load.start_soon(runner.client, index, "legacy" if index % 2 else "2026-07-28", until)
            for minute_index in range(1, minutes + 1):
                await anyio.sleep(max(0.0, start + minute_index * 60 - time.monotonic()))
                sample(minute_index)
            # an operation still running a minute after the end hangs: that is an error too
            with anyio.move_on_after(TAIL_GRACE):
                while runner.clients_running:  # noqa: ASYNC110 - clients finish on their own
                    await anyio.sleep(0.5)
            if runner.clients_running:
                hung = f"{runner.clients_running} clients still in an operation {TAIL_GRACE:g}s after the end"
                runner.first_errors.append(f"{time.strftime('%H:%M:%S')} hung: {hung}")
                records[-1]["errors"] += runner.clients_running
                records[-1].setdefault("errors_by_op", {})["hung"] = runner.clients_running
                print(f"hung: {hung}", flush=True)
                load.cancel_scope.cancel()
        await send.aclose()
    return {"records": records, "first_errors": runner.first_errors}


def slope_per_10_minutes(records: list[dict[str, Any]], key: str) -> float:
    """Least-squares slope of `key` over the second half of the run, in MiB per 10 min."""
    points = [(r["minute"], r[key]) for r in records if r["minute"] >= settle_minute(records)]
    if len(points) < 2:
        return float("nan")
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in points)
    variance = sum((x - mean_x) ** 2 for x, _ in points)
    return covariance / variance * 10


def plot(results: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = results["records"]
    minutes = [r["minute"] for r in records]
    figure, (memory, latency) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for key, label in (("rss_vmcp_dev_mib", "vmcp dev (façade + worker)"), ("rss_temporal_mib", "Temporal dev server")):
        memory.plot(
            minutes,
            [r[key] for r in records],
            marker="o",
            markersize=3,
            label=f"{label}: {slope_per_10_minutes(records, key):+.2f} MiB / 10 min"
            f" after minute {settle_minute(records)}",
        )
    memory.axvline(settle_minute(records), color="grey", linestyle=":", linewidth=1)
    memory.set_ylabel("RSS (MiB)")
    memory.set_ylim(bottom=0)
    memory.legend(loc="lower right")
    memory.set_title(
        f"vmcp soak: {results['clients']} clients, {results['minutes']} minutes, "
        f"{sum(r['ops'] for r in records)} operations, {sum(r['errors'] for r in records)} errors"
    )
    timed = [r for r in records if r.get("p50_ms") is not None]
    latency.plot([r["minute"] for r in timed], [r["p50_ms"] for r in timed], label="plain p50", marker=".")
    latency.plot([r["minute"] for r in timed], [r["p99_ms"] for r in timed], label="plain p99", marker=".")
    latency.plot(
        [r["minute"] for r in timed], [r["composite_p50_ms"] for r in timed], label="composite p50", marker="."
    )
    latency.plot(
        [r["minute"] for r in timed], [r["composite_p99_ms"] for r in timed], label="composite p99", marker="."
    )
    latency.set_ylabel("latency (ms)")
    latency.set_xlabel("minute")
    latency.set_ylim(bottom=0)
    latency.legend(loc="upper right", ncol=2)
    figure.tight_layout()
    figure.savefig(png, dpi=110)
    print(f"plot: {png}")


def summarize(results: dict[str, Any]) -> None:
    records = results["records"]
    print(f"\nsoak: {results['minutes']} min, {results['clients']} clients, {os.cpu_count()} cpus")
    print(f"operations {sum(r['ops'] for r in records)}, errors {sum(r['errors'] for r in records)}")
    for key in ("rss_vmcp_dev_mib", "rss_temporal_mib"):
        first, last = records[0][key], records[-1][key]
        print(
            f"{key}: {first} -> {last} MiB; slope after minute {settle_minute(records)}: "
            f"{slope_per_10_minutes(records, key):+.2f} MiB / 10 min"
        )
    for line in results["first_errors"]:
        print("  error:", line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "soak-results.json")
    parser.add_argument("--png", type=Path, default=ROOT / "bench" / "soak.png")
    parser.add_argument("--plot", type=Path, help="only draw the PNG from an earlier results file")
    parser.add_argument(
        "--dynamic-config",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="a Temporal dynamic config value for the dev server (temporal.dev_server.dynamic_config)",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stopped early: the stack still goes down
    if args.plot:
        results = json.loads(args.plot.read_text())
        summarize(results)
        plot(results, args.png)
        return

    ports = {name: free_port() for name in ("backend", "facade", "temporal", "ui")}
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp) / "soak.yaml"
        config = {
            "server": {"host": "127.0.0.1", "port": ports["facade"]},
            "temporal": {
                "address": f"127.0.0.1:{ports['temporal']}",
                "dev_server": {
                    "db_file": str(Path(tmp) / "t.db"),
                    "ui_port": ports["ui"],
                    "dynamic_config": {
                        key: json.loads(value)
                        for key, _, value in (item.partition("=") for item in args.dynamic_config)
                    },
                },
            },
            "backends": [
                {"name": "fault", "transport": "streamable-http", "url": f"http://127.0.0.1:{ports['backend']}/mcp"}
            ],
            "composite_tools": composites(),
        }
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        fault = [sys.executable, "-m", "tests.servers.fault_server", "--transport", "streamable-http"]
        try:
            procs.append(subprocess.Popen([*fault, "--port", str(ports["backend"])], cwd=ROOT))
            wait_http(f"http://127.0.0.1:{ports['backend']}/mcp")
            dev = subprocess.Popen(
                [str(BIN / "vmcp"), "dev", "--config", str(config_file)],
                stdout=subprocess.DEVNULL,
                stderr=open(Path(tmp) / "dev.log", "wb"),  # noqa: SIM115 - lives as long as the process
            )
            procs.append(dev)
            wait_http(f"http://127.0.0.1:{ports['facade']}/readyz", timeout=120)
            results = anyio.run(
                soak,
                f"http://127.0.0.1:{ports['facade']}/mcp",
                config_file,
                Path(tmp) / "t.db",
                dev.pid,
                args.minutes,
                args.clients,
            )
        finally:
            for proc in reversed(procs):
                proc.terminate()
            for proc in procs:
                proc.wait(30)
    results.update(minutes=args.minutes, clients=args.clients, cpus=os.cpu_count(), mix=MIX)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    summarize(results)
    plot(results, args.png)


if __name__ == "__main__":
    main()
