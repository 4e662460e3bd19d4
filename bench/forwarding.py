"""Forwarding overhead: tools/call direct to a backend vs through vmcp, side by side in one run.

    .venv/bin/python bench/forwarding.py [--calls 400] [--concurrency 10] [--mode auto|legacy]

Starts the echo backend (streamable HTTP) and `vmcp serve` in front of it, then alternates
rounds of direct and proxied calls so both see the same machine noise. Prints p50/p99 latency,
throughput with N concurrent clients, the ratios, and the façade's resident memory. Not a
test: the figures go in notes and the README, never into assertions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, pct, wait_http

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def latency_round(url: str, tool: str, calls: int, mode: str, out: list[float]) -> None:
    async with Client(url, mode=mode) as client:
        await client.call_tool(tool, {"text": "warm"})
        for i in range(calls):
            start = time.perf_counter()
            result = await client.call_tool(tool, {"text": f"x{i}"})
            out.append(time.perf_counter() - start)
            assert not result.is_error, result


async def throughput(url: str, tool: str, clients: int, calls_each: int, mode: str) -> float:
    async def one(worker: int) -> None:
        async with Client(url, mode=mode) as client:
            for i in range(calls_each):
                result = await client.call_tool(tool, {"text": f"{worker}-{i}"})
                assert not result.is_error, result

    start = time.perf_counter()
    async with anyio.create_task_group() as group:
        for worker in range(clients):
            group.start_soon(one, worker)
    return clients * calls_each / (time.perf_counter() - start)


async def measure(direct: str, proxied: str, args: argparse.Namespace, mode: str) -> dict[str, float]:
    direct_lat: list[float] = []
    proxied_lat: list[float] = []
    rounds = 4
    for _ in range(rounds):  # interleaved so both paths share the same noise
        await latency_round(direct, "echo", args.calls // rounds, mode, direct_lat)
        await latency_round(proxied, "bench_echo", args.calls // rounds, mode, proxied_lat)
    direct_tp: list[float] = []
    proxied_tp: list[float] = []
    for _ in range(2):
        direct_tp.append(await throughput(direct, "echo", args.concurrency, args.calls_each, mode))
        proxied_tp.append(await throughput(proxied, "bench_echo", args.concurrency, args.calls_each, mode))
    return {
        "direct_p50": pct(direct_lat, 0.5),
        "direct_p99": pct(direct_lat, 0.99),
        "vmcp_p50": pct(proxied_lat, 0.5),
        "vmcp_p99": pct(proxied_lat, 0.99),
        "direct_tp": statistics.median(direct_tp),
        "vmcp_tp": statistics.median(proxied_tp),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=400, help="sequential calls per path for latency")
    parser.add_argument("--concurrency", type=int, default=10, help="concurrent clients for throughput")
    parser.add_argument("--calls-each", type=int, default=60, help="calls per concurrent client")
    parser.add_argument(
        "--modes", default="auto,legacy", help="client protocol modes to measure: auto (2026-07-28), legacy"
    )
    args = parser.parse_args()

    backend_port, vmcp_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.yaml"
        config.write_text(
            f"server: {{host: 127.0.0.1, port: {vmcp_port}}}\n"
            "temporal: {address: '127.0.0.1:1'}\n"  # plain forwarding never needs Temporal
            "backends:\n"
            f"  - {{name: bench, transport: streamable-http, url: 'http://127.0.0.1:{backend_port}/mcp'}}\n"
        )
        try:
            procs.append(
                subprocess.Popen([sys.executable, str(ROOT / "bench/echo_server.py"), "--port", str(backend_port)])
            )
            wait_http(f"http://127.0.0.1:{backend_port}/mcp")
            vmcp = subprocess.Popen([str(BIN / "vmcp"), "serve", "--config", str(config)], stdout=subprocess.DEVNULL)
            procs.append(vmcp)
            wait_http(f"http://127.0.0.1:{vmcp_port}/readyz")
            rss_before = rss_mib(vmcp.pid)
            figures = {
                mode: anyio.run(
                    measure,
                    f"http://127.0.0.1:{backend_port}/mcp",
                    f"http://127.0.0.1:{vmcp_port}/mcp",
                    args,
                    mode,
                    backend_options={"use_uvloop": True},
                )
                for mode in args.modes.split(",")
            }
            rss_after = rss_mib(vmcp.pid)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(10)

    print(
        f"forwarding benchmark: {args.calls} sequential calls per path, "
        f"{args.concurrency} clients x {args.calls_each} calls for throughput, {os.cpu_count()} cpus"
    )
    for mode, f in figures.items():
        era = "2026-07-28" if mode == "auto" else "2025-11-25 handshake"
        print(f"\nclient mode {mode} ({era})")
        print(f"{'':18}{'direct':>10}{'via vmcp':>10}{'ratio':>8}")
        for label, key, unit in (
            ("p50 latency", "p50", "ms"),
            ("p99 latency", "p99", "ms"),
            ("throughput", "tp", "/s"),
        ):
            d, v = f[f"direct_{key}"], f[f"vmcp_{key}"]
            print(f"{label + ' ' + unit:18}{d:10.2f}{v:10.2f}{v / d:8.2f}")
    print(f"façade RSS: {rss_before:.1f} MiB after start, {rss_after:.1f} MiB after the run")


if __name__ == "__main__":
    main()
