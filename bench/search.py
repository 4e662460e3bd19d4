"""Search mode at scale: recall@5 on the labelled query set and `find_tools` latency, through
`vmcp serve` fronting real MCP servers and 5,000 other tools.

    .venv/bin/python bench/search.py [--servers 50] [--tools 100] [--rounds 5]

Backends: the real servers the queries are written over (mcp-server-time, -fetch, -git from the
venv; server-everything, -filesystem, -memory from tests/e2e/node_modules, so run the test
command once first; vmcp's OCI registry server on the demo layout), plus `many_servers.py`'s
synthetic catalogue as distractors. vmcp runs `aggregation.search` in `beside` mode, so the full
list can be measured against a search answer in the same run (the token saving: bytes of the
whole `tools/list` against one `find_tools` answer, about four bytes to a token). Every search
is a 2026-07-28 `tools/call find_tools` over raw HTTP, timed from request to the last byte.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import pct, stop, wait_http
from catalog import MODERN, Lister, free_run, rss_mib
from search_queries import QUERIES

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NODE = ROOT / "tests/e2e/node_modules/.bin"
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


def real_backends(workdir: Path) -> list[dict[str, object]]:
    def stdio(name: str, command: str, *args: str) -> dict[str, object]:
        return {"name": name, "transport": "stdio", "command": command, "args": list(args), "cwd": str(ROOT)}

    (workdir / "files").mkdir()
    return [
        stdio("time", str(BIN / "mcp-server-time"), "--local-timezone", "UTC"),
        stdio("fetch", str(BIN / "mcp-server-fetch")),
        stdio("git", str(BIN / "mcp-server-git"), "--repository", str(ROOT)),
        stdio("everything", str(NODE / "node"), str(NODE / "mcp-server-everything"), "stdio"),
        stdio("filesystem", str(NODE / "node"), str(NODE / "mcp-server-filesystem"), str(workdir / "files")),
        stdio("memory", str(NODE / "node"), str(NODE / "mcp-server-memory")),
        stdio("oci", str(BIN / "vmcp-oci-registry"), "--local-layout", "docker.io=deploy/demo/oci"),
    ]


def measure(lister: Lister, rounds: int, limit: int) -> dict[str, object]:
    """Every query `rounds` times, as raw 2026-07-28 `tools/call find_tools` requests (a client
    library would also list the tools to check the answer's schema, and time that too)."""
    hits: list[bool] = []
    latencies: list[float] = []
    answer_bytes: list[int] = []
    misses: list[tuple[str, list[str]]] = []
    lister.headers["Mcp-Method"] = "tools/call"
    lister.headers["Mcp-Name"] = "find_tools"
    for round_number in range(rounds):
        for query, wanted in QUERIES.items():
            lister.ids += 1
            params = {"name": "find_tools", "arguments": {"query": query, "limit": limit}, "_meta": ENVELOPE}
            body = json.dumps({"jsonrpc": "2.0", "id": lister.ids, "method": "tools/call", "params": params})
            start = time.perf_counter()
            answer = lister.http.post(lister.url, content=body.encode(), headers=lister.headers)
            latencies.append(time.perf_counter() - start)
            result = _result(answer.text)
            found = [tool["name"] for tool in result["structuredContent"]["tools"]]
            if round_number == 0:
                hits.append(any(name in found for name in wanted))
                answer_bytes.append(len(result["content"][0]["text"].encode()))
                if not hits[-1]:
                    misses.append((query, found))
    return {"hits": hits, "latencies": latencies, "answer_bytes": answer_bytes, "misses": misses}


def _result(text: str) -> dict[str, Any]:
    """A JSON-RPC result from a JSON or event-stream answer."""
    if text.lstrip().startswith("{"):
        return dict(json.loads(text)["result"])
    line = next(line[5:] for line in text.splitlines() if line.startswith("data:") and '"result"' in line)
    return dict(json.loads(line)["result"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--tools", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5, help="times the query set is searched for latency")
    parser.add_argument("--limit", type=int, default=5)
    args = parser.parse_args()

    base = free_run(args.servers + 1)
    vmcp_port = base + args.servers
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        synthetic = [
            {"name": f"s{i:02d}", "transport": "streamable-http", "url": f"http://127.0.0.1:{base + i}/mcp"}
            for i in range(args.servers)
        ]
        config = {
            "server": {"host": "127.0.0.1", "port": vmcp_port},
            "temporal": {"address": "127.0.0.1:1"},
            "aggregation": {"search": {"mode": "beside"}},
            "backends": [*real_backends(workdir), *synthetic],
        }
        (workdir / "search.yaml").write_text(yaml.safe_dump(config))
        try:
            many = [sys.executable, str(ROOT / "bench/many_servers.py"), "--base-port", str(base)]
            procs.append(subprocess.Popen([*many, "--servers", str(args.servers), "--tools", str(args.tools)]))
            for i in range(args.servers):
                wait_http(f"http://127.0.0.1:{base + i}/mcp")
            env = {**os.environ, "PATH": f"{NODE}:{os.environ.get('PATH', '')}"}
            vmcp = subprocess.Popen(
                [str(BIN / "vmcp"), "serve", "--config", str(workdir / "search.yaml")],
                stdout=subprocess.DEVNULL,
                env=env,
            )
            procs.append(vmcp)
            url = f"http://127.0.0.1:{vmcp_port}/mcp"
            wait_http(f"http://127.0.0.1:{vmcp_port}/readyz", timeout=120)
            full_bytes, listed = 0, 0
            lister = Lister(url, MODERN)
            cursor = None
            while True:  # the whole list, page by page, as a client without search would read it
                lister.ids += 1
                body = {
                    "jsonrpc": "2.0",
                    "id": lister.ids,
                    "method": "tools/list",
                    "params": {
                        "_meta": {
                            "io.modelcontextprotocol/protocolVersion": MODERN,
                            "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
                            "io.modelcontextprotocol/clientCapabilities": {},
                        },
                        **({"cursor": cursor} if cursor else {}),
                    },
                }
                page = json.loads(lister.http.post(url, json=body, headers=lister.headers).text)["result"]
                full_bytes += len(json.dumps(page["tools"], separators=(",", ":")).encode())
                listed += len(page["tools"])
                cursor = page.get("nextCursor")
                if not cursor:
                    break
            figures = measure(lister, args.rounds, args.limit)
            rss = rss_mib(vmcp.pid)
        finally:
            stop(procs)

    hits: list[bool] = figures["hits"]  # type: ignore[assignment]
    latencies: list[float] = figures["latencies"]  # type: ignore[assignment]
    answers: list[int] = figures["answer_bytes"]  # type: ignore[assignment]
    print(f"search benchmark: {listed} tools listed ({len(QUERIES)} labelled queries), {os.cpu_count()} cpus")
    print(f"recall@{args.limit}: {sum(hits)}/{len(hits)} = {sum(hits) / len(hits):.3f}")
    for query, found in figures["misses"]:  # type: ignore[attr-defined]
        print(f"  missed: {query!r} -> {found}")
    print(f"find_tools through vmcp: p50 {pct(latencies, 0.5):.2f} ms, p99 {pct(latencies, 0.99):.2f} ms")
    answer = statistics.mean(answers)
    print(
        f"full tools/list: {full_bytes / 1024:.0f} KiB (~{full_bytes // 4:,} tokens); one find_tools answer: "
        f"{answer / 1024:.1f} KiB (~{int(answer) // 4:,} tokens): {full_bytes / answer:.0f}x smaller"
    )
    print(f"façade RSS: {rss:.1f} MiB")


if __name__ == "__main__":
    main()
