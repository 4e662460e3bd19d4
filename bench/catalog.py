"""A large catalogue: 50 backends × 100 tools behind `vmcp serve`, side by side with one backend.

    .venv/bin/python bench/catalog.py [--servers 50] [--tools 100] [--lists 200]

Starts `many_servers.py` (every backend in one process) and `vmcp serve` in front of them, then
measures: how long after vmcp's start every tool is advertised; `tools/list` latency (p50/p99)
through vmcp against one backend listing its own tools, interleaved so both share the machine's
noise, in both eras (2026-07-28 stateless POSTs; a 2025-11-25 session); and the façade's RSS.
Lists are timed on the wire (raw HTTP, from sending the request to its last byte), so the figure
is the server's cost and the transfer, not a client's parsing of 5,000 tool definitions. "one
request" is the first page (vmcp pages at `aggregation.page_size`, 1,000 by default); "whole
list" follows the cursors to the end.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import pct, stop, wait_http

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODERN = "2026-07-28"
LEGACY = "2025-11-25"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_run(count: int) -> int:
    """A base port with `count` free ports from it."""
    for base in range(20000, 60000, 97):
        try:
            for port in range(base, base + count + 1):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no run of free ports")


class Lister:
    """tools/list over raw HTTP in one era; `list()` returns (seconds, number of tools)."""

    def __init__(self, url: str, era: str) -> None:
        self.url, self.era = url, era
        self.http = httpx.Client(timeout=60)
        self.headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        self.ids = 0
        if era == LEGACY:
            init = {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "b", "version": "1"}},
            }
            answer = self.http.post(url, json=init, headers=self.headers)
            self.headers["Mcp-Session-Id"] = answer.headers["mcp-session-id"]
            self.headers["Mcp-Protocol-Version"] = LEGACY
            note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            self.http.post(url, json=note, headers=self.headers)
        else:
            self.headers |= {"Mcp-Protocol-Version": MODERN, "Mcp-Method": "tools/list"}

    def list(self, cursor: str | None = None) -> tuple[float, int, str | None]:
        self.ids += 1
        params: dict[str, Any] = {"cursor": cursor} if cursor else {}
        if self.era == MODERN:
            params["_meta"] = {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {},
            }
        body = {"jsonrpc": "2.0", "id": self.ids, "method": "tools/list", "params": params}
        encoded = json.dumps(body).encode()
        start = time.perf_counter()
        answer = self.http.post(self.url, content=encoded, headers=self.headers)
        elapsed = time.perf_counter() - start  # to the last byte: the server's work and the transfer
        text = answer.text
        if answer.headers.get("content-type", "").startswith("text/event-stream"):
            text = next(line[5:] for line in text.splitlines() if line.startswith("data:") and '"id"' in line)
        result = json.loads(text)["result"]
        return elapsed, len(result["tools"]), result.get("nextCursor")

    def list_all(self) -> tuple[float, int]:
        """Every page; the time of all of them."""
        total, count, cursor = 0.0, 0, None
        while True:
            elapsed, n, cursor = self.list(cursor)
            total, count = total + elapsed, count + n
            if not cursor:
                return total, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--tools", type=int, default=100)
    parser.add_argument("--lists", type=int, default=200, help="lists per path and era")
    args = parser.parse_args()
    expected = args.servers * args.tools

    base = free_run(args.servers + 1)
    vmcp_port = base + args.servers
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "catalog.yaml"
        backends = "".join(
            f"  - {{name: s{i:02d}, transport: streamable-http, url: 'http://127.0.0.1:{base + i}/mcp'}}\n"
            for i in range(args.servers)
        )
        config.write_text(
            f"server: {{host: 127.0.0.1, port: {vmcp_port}}}\n"
            "temporal: {address: '127.0.0.1:1'}\n"
            "aggregation: {conflict_resolution: prefix}\n"
            f"backends:\n{backends}"
        )
        try:
            many = [sys.executable, str(ROOT / "bench/many_servers.py"), "--base-port", str(base)]
            procs.append(subprocess.Popen([*many, "--servers", str(args.servers), "--tools", str(args.tools)]))
            for i in range(args.servers):  # up, and warm (listed once), as running backends are
                wait_http(f"http://127.0.0.1:{base + i}/mcp")
                Lister(f"http://127.0.0.1:{base + i}/mcp", MODERN).list_all()
            started = time.perf_counter()
            vmcp = subprocess.Popen([str(BIN / "vmcp"), "serve", "--config", str(config)], stdout=subprocess.DEVNULL)
            procs.append(vmcp)
            url = f"http://127.0.0.1:{vmcp_port}/mcp"
            wait_http(f"http://127.0.0.1:{vmcp_port}/readyz", timeout=120)
            ready = time.perf_counter() - started
            while True:
                _, count = Lister(url, MODERN).list_all()
                if count >= expected:
                    break
                time.sleep(0.05)
            advertised = time.perf_counter() - started
            rss_start = rss_mib(vmcp.pid)

            figures: dict[str, dict[str, list[float]]] = {}
            for era in (MODERN, LEGACY):
                direct, proxied = Lister(f"http://127.0.0.1:{base}/mcp", era), Lister(url, era)
                direct.list_all(), proxied.list_all()  # warm
                times: dict[str, list[float]] = {"direct": [], "vmcp": [], "vmcp_all": []}
                for _ in range(args.lists):  # interleaved: both paths see the same noise
                    times["direct"].append(direct.list_all()[0])
                    times["vmcp"].append(proxied.list()[0])
                    elapsed, count = proxied.list_all()
                    assert count == expected, count
                    times["vmcp_all"].append(elapsed)
                figures[era] = times
            rss_end = rss_mib(vmcp.pid)
        finally:
            stop(procs)

    print(f"catalogue benchmark: {args.servers} backends x {args.tools} tools, {os.cpu_count()} cpus")
    print(f"vmcp ready (/readyz) {ready:.2f} s after start; all {expected} tools advertised after {advertised:.2f} s")
    print(f"{'tools/list':40}{'p50 ms':>9}{'p99 ms':>9}")
    for era, times in figures.items():
        paths = (
            ("direct", f"one backend ({args.tools})"),
            ("vmcp", "via vmcp, one request"),
            ("vmcp_all", f"via vmcp, whole ({expected})"),
        )
        for path, label in paths:
            print(f"{era + ' ' + label:40}{pct(times[path], 0.5):9.2f}{pct(times[path], 0.99):9.2f}")
        ratio = pct(times["vmcp"], 0.5) / pct(times["direct"], 0.5)
        print(f"{era + ' ratio, one request (p50)':40}{ratio:9.2f}")
    print(f"façade RSS: {rss_start:.1f} MiB once listed, {rss_end:.1f} MiB after the lists")


if __name__ == "__main__":
    main()
