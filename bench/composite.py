"""Composite-tool overhead, side by side in one run against a real `vmcp dev` stack.

    .venv/bin/python bench/composite.py [--runs 20] [--callers 50]

(a) three parallel 200 ms steps: end-to-end wall time through vmcp (ideal: 200 ms);
(b) a one-step composite vs the same tool called directly through vmcp;
(c) a diamond with unequal branches (100 ms + 300 ms, then 100 ms) vs its critical path (400 ms);
(d) 50 concurrent callers of a one-step composite: runs/s, p50, p99;
(e) a call reaching an approval gate: how long after the step before the gate completed (workflow
    time) the caller has its `awaiting_approval` answer (median of 10);
(f) the engine's floor on the same dev server, interleaved with (a)-(c): a workflow of one local
    activity that answers at once, started and awaited as vmcp does (`bench/engine.py`), so (b)
    reads as the floor, the direct call, and what vmcp adds beyond both.
The backend is the test fault server over streamable HTTP (`slow(seconds)` sleeps server-side).
Not a test: figures go in notes and the README, never into assertions.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import yaml
from mcp import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, pct, wait_http
from engine import QUEUE, Run, eager_poll, echo
from temporalio.client import Client as TemporalClient
from temporalio.worker import PollerBehaviorAutoscaling, Worker

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def composites(local: bool = True) -> list[dict[str, Any]]:
    """The benchmark's composites. Their steps have a 5 s attempt timeout: short steps, which run
    as local activities (`local_step_timeout`); `local=False` makes them regular activities."""
    slow = "fault.slow"
    tools: list[dict[str, Any]] = [
        {
            "name": "parallel3",
            "steps": [{"id": f"s{i}", "tool": slow, "arguments": {"seconds": 0.2}} for i in range(3)],
        },
        {"name": "one_step", "steps": [{"id": "only", "tool": "fault.echo", "arguments": {"text": "x"}}]},
        {
            "name": "diamond",
            "steps": [
                {"id": "short", "tool": slow, "arguments": {"seconds": 0.1}},
                {"id": "long", "tool": slow, "arguments": {"seconds": 0.3}},
                {"id": "join", "tool": slow, "arguments": {"seconds": 0.1}, "depends_on": ["short", "long"]},
            ],
        },
        {
            "name": "gated",
            "steps": [
                {"id": "before", "tool": "fault.echo", "arguments": {"text": "x"}},
                {"id": "gate", "type": "approval", "message": "Go?", "depends_on": ["before"]},
            ],
        },
    ]
    for tool in tools:
        for step in tool["steps"]:
            if "tool" in step:
                step.update(timeout="5s", local=local)
    return tools


async def gate_answers(client: Client, runs: int) -> list[float]:
    """Seconds from the completion of the step before the gate to the caller's answer."""
    delays = []
    for _ in range(runs):
        answer = await client.call_tool("gated", {})
        received = time.time()
        body = answer.structured_content or {}
        assert body.get("state") == "awaiting_approval", answer
        status = await client.call_tool("vmcp_run_status", {"run_id": body["run_id"]})
        finished = (status.structured_content or {})["steps"]["before"]["finished_at"]
        delays.append(received - datetime.fromisoformat(finished).timestamp())
        await client.call_tool("vmcp_run_cancel", {"run_id": body["run_id"]})
    return delays


async def timed(client: Client, tool: str, args: dict[str, object]) -> float:
    start = time.perf_counter()
    result = await client.call_tool(tool, args)
    elapsed = time.perf_counter() - start
    assert not result.is_error, result
    return elapsed


async def measure(url: str, temporal: str, runs: int, callers: int) -> dict[str, list[float] | float]:
    out: dict[str, list[float] | float] = {"a": [], "b_composite": [], "b_direct": [], "c": [], "f": []}
    engine = await TemporalClient.connect(temporal)
    floor_worker = Worker(
        engine,
        task_queue=QUEUE,
        workflows=[Run],
        activities=[echo],
        workflow_task_poller_behavior=PollerBehaviorAutoscaling(),
        activity_task_poller_behavior=PollerBehaviorAutoscaling(),
    )
    async with Client(url) as client, floor_worker:
        for _ in range(3):  # warm-up: connections, worker caches
            await timed(client, "one_step", {})
            await eager_poll(engine)
        for _ in range(runs):  # interleaved, so each figure sees the same machine
            out["a"].append(await timed(client, "parallel3", {}))  # type: ignore[union-attr]
            out["b_composite"].append(await timed(client, "one_step", {}))  # type: ignore[union-attr]
            out["b_direct"].append(await timed(client, "fault_echo", {"text": "x"}))  # type: ignore[union-attr]
            out["c"].append(await timed(client, "diamond", {}))  # type: ignore[union-attr]
            start = time.perf_counter()
            await eager_poll(engine)
            out["f"].append(time.perf_counter() - start)  # type: ignore[union-attr]

    latencies: list[float] = []

    async def caller(count: int) -> None:
        async with Client(url) as client:
            for _ in range(count):
                latencies.append(await timed(client, "one_step", {}))

    start = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(callers):
            group.start_soon(caller, 4)
    out["d_elapsed"] = time.perf_counter() - start
    out["d"] = latencies
    async with Client(url) as client:
        out["e"] = await gate_answers(client, 10)
    return out


def start_stack(
    directory: Path, backend_url: str, *, encrypted: bool, local: bool = True
) -> tuple[subprocess.Popen[bytes], str, str]:
    """`vmcp dev` in `directory` (its own ports and Temporal), with or without run-data encryption,
    its steps local activities or regular ones: (process, MCP URL, Temporal address)."""
    ports = {name: free_port() for name in ("facade", "temporal", "ui")}
    temporal: dict[str, object] = {
        "address": f"127.0.0.1:{ports['temporal']}",
        "dev_server": {"db_file": str(directory / "t.db"), "ui_port": ports["ui"]},
    }
    if encrypted:
        temporal["encryption"] = {"key_file": str(directory / "keys.json")}
    config = {
        "server": {"host": "127.0.0.1", "port": ports["facade"]},
        "temporal": temporal,
        "backends": [{"name": "fault", "transport": "streamable-http", "url": backend_url}],
        "composite_tools": composites(local),
    }
    (directory / "bench.yaml").write_text(yaml.safe_dump(config))
    dev = subprocess.Popen(
        [str(BIN / "vmcp"), "dev", "--config", str(directory / "bench.yaml")], stdout=subprocess.DEVNULL
    )
    wait_http(f"http://127.0.0.1:{ports['facade']}/readyz", timeout=120)
    return dev, f"http://127.0.0.1:{ports['facade']}/mcp", f"127.0.0.1:{ports['temporal']}"


async def compare(urls: dict[str, str], runs: int) -> dict[str, dict[str, list[float]]]:
    """(a), (b) and (c) on each stack, round after round in turn, so both share the machine's noise."""
    out: dict[str, dict[str, list[float]]] = {
        name: {k: [] for k in ("a", "b_composite", "b_direct", "c")} for name in urls
    }
    async with contextlib.AsyncExitStack() as stack:
        clients = {name: await stack.enter_async_context(Client(url)) for name, url in urls.items()}
        for client in clients.values():
            for _ in range(3):
                await timed(client, "one_step", {})
        for _ in range(runs):
            for name, client in clients.items():
                out[name]["a"].append(await timed(client, "parallel3", {}))
                out[name]["b_composite"].append(await timed(client, "one_step", {}))
                out[name]["b_direct"].append(await timed(client, "fault_echo", {"text": "x"}))
                out[name]["c"].append(await timed(client, "diamond", {}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--callers", type=int, default=50)
    parser.add_argument(
        "--compare-local",
        action="store_true",
        help="two stacks, steps as regular and as local activities, measured in turn",
    )
    parser.add_argument(
        "--compare-encryption",
        action="store_true",
        help="two stacks, run data in clear and encrypted (temporal.encryption), measured in turn",
    )
    args = parser.parse_args()
    backend_port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.servers.fault_server",
                        "--transport",
                        "streamable-http",
                        "--port",
                        str(backend_port),
                    ],
                    cwd=ROOT,
                )
            )
            backend_url = f"http://127.0.0.1:{backend_port}/mcp"
            wait_http(backend_url)
            if args.compare_encryption or args.compare_local:
                names = ("clear", "encrypted") if args.compare_encryption else ("regular", "local")
                urls = {}
                for name in names:
                    (Path(tmp) / name).mkdir()
                    encrypted, local = name == "encrypted", name != "regular"
                    dev, urls[name], _ = start_stack(Path(tmp) / name, backend_url, encrypted=encrypted, local=local)
                    procs.append(dev)
                pair = anyio.run(compare, urls, args.runs, backend_options={"use_uvloop": True})
            else:
                dev, url, temporal = start_stack(Path(tmp), backend_url, encrypted=False)
                procs.append(dev)
                f = anyio.run(measure, url, temporal, args.runs, args.callers, backend_options={"use_uvloop": True})
        finally:
            for proc in reversed(procs):
                proc.terminate()
            for proc in procs:
                proc.wait(30)

    if args.compare_encryption or args.compare_local:
        first, second = pair
        print(f"composite benchmark, {first} vs {second}: {args.runs} runs each, in turn, {os.cpu_count()} cpus")
        print(f"{'':36}{first:>10}{second:>11}{'change':>9}")
        for key, label in (
            ("a", "(a) three parallel 200 ms steps"),
            ("b_composite", "(b) one-step composite"),
            ("b_direct", "    the tool called directly"),
            ("c", "(c) diamond (critical path 400 ms)"),
        ):
            clear, sealed = pct(pair[first][key], 0.5), pct(pair[second][key], 0.5)
            print(f"{label:36}{clear:8.1f}ms{sealed:9.1f}ms{(sealed / clear - 1) * 100:+8.1f}%")
        return

    a, bc, bd, c, d = (f[k] for k in ("a", "b_composite", "b_direct", "c", "d"))
    assert isinstance(a, list) and isinstance(bc, list) and isinstance(bd, list) and isinstance(c, list)
    assert isinstance(d, list)
    elapsed = f["d_elapsed"]
    assert isinstance(elapsed, float)
    direct = pct(bd, 0.5)

    def overhead(p50: float, critical: float) -> str:
        """The run's cost beyond its critical path, in ms and in units of the direct call's p50
        measured in this run: figures from different machines compare in those units."""
        return f"overhead {p50 - critical:+6.1f} ms = {(p50 - critical) / direct:5.1f} x direct"

    print(f"composite benchmark: {args.runs} runs each, {os.cpu_count()} cpus, vmcp dev stack, HTTP fault backend")
    print(f"    the tool called directly through vmcp: p50 {direct:.2f} ms (the unit below)")
    print(
        f"(a) three parallel 200 ms steps   p50 {pct(a, 0.5):7.1f} ms  p99 {pct(a, 0.99):7.1f} ms"
        f"  {overhead(pct(a, 0.5), 200)}"
    )
    print(
        f"(b) one-step composite             p50 {pct(bc, 0.5):7.1f} ms  p99 {pct(bc, 0.99):7.1f} ms"
        f"  {overhead(pct(bc, 0.5), direct)}"
    )
    print(
        f"(c) diamond, critical path 400 ms  p50 {pct(c, 0.5):7.1f} ms  p99 {pct(c, 0.99):7.1f} ms"
        f"  {overhead(pct(c, 0.5), 400)} ({(pct(c, 0.5) / 400 - 1) * 100:+.1f}%)"
    )
    print(
        f"(d) {args.callers} concurrent callers x4      {len(d) / elapsed:7.1f} runs/s  p50 {pct(d, 0.5):7.1f} ms"
        f"  p99 {pct(d, 0.99):7.1f} ms  (p99/p50 {pct(d, 0.99) / pct(d, 0.5):.2f})"
    )
    e = f["e"]
    assert isinstance(e, list)
    print(
        f"(e) gate answered after the step before it: median {statistics.median(e) * 1000:6.1f} ms"
        f"  max {max(e) * 1000:6.1f} ms (10 calls)"
    )
    print(f"    mean one-step {statistics.mean(bc) * 1000:.1f} ms")
    floor = f["f"]
    assert isinstance(floor, list)
    beyond = pct(bc, 0.5) - pct(floor, 0.5) - direct
    print(
        f"(f) the engine's floor (one instant local activity) p50 {pct(floor, 0.5):6.1f} ms: (b) is the floor"
        f" + the direct call + {beyond:.1f} ms ({beyond / direct:.1f} x direct) of vmcp's own"
    )


if __name__ == "__main__":
    main()
