"""Scale-out on one machine: two stateless façades and two workers against one Temporal server, a
load of plain and composite calls spread over both façades, and kill -9 of one façade and one
worker in the middle of it.

The client side plays a load balancer with health checks: calls go round-robin to both façades
until the kill, then to the survivor only. What must hold:
- plain calls fail only if they were in flight on the killed façade;
- no composite run is lost: every run Temporal started completes;
- none is duplicated: each composite call (its unique tag) started at most one run, and every
  backend call of a run carried that run's idempotency key (a step in flight on the killed worker
  is delivered again under the same key, which an idempotent backend runs once).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from mcp import Client
from temporalio.client import Client as TemporalClient

from tests.support.processes import Child, poll, tail
from tests.support.temporal import TemporalServer

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.temporal, pytest.mark.anyio]

TOOL = "pipeline"
USERS = 8
CALLS_PER_USER = 12
KILL_AFTER = 30  # calls finished before the kill


@dataclass
class Call:
    kind: str  # plain | composite
    tag: str
    replica: int
    started: float
    ended: float = 0.0
    ok: bool = False
    run_id: str | None = None
    error: str = ""


@pytest.fixture(scope="module")
def temporal(temporal_server: TemporalServer) -> TemporalServer:
    return temporal_server  # the suite's: nothing here kills Temporal


@pytest.fixture
async def cluster(temporal: TemporalServer, procs: Any, tmp_path: Path) -> Any:
    fault = procs.fault_http("fault")
    config = {
        "server": {"host": "127.0.0.1", "port": 0, "stateless": True},
        "temporal": {"address": temporal.address, "task_queue": f"scale-{uuid.uuid4().hex[:8]}"},
        "backends": [{"name": "fault", "transport": "streamable-http", "url": fault.url}],
        "composite_tools": [
            {
                "name": TOOL,
                "parameters": {"type": "object", "properties": {"tag": {"type": "string"}}, "required": ["tag"]},
                "wait": "60s",
                "steps": [
                    {"id": "a", "tool": "fault.tally", "arguments": {"label": "{{ params.tag }}-a"}},
                    {
                        "id": "b",
                        "tool": "fault.slow",
                        "arguments": {"seconds": 0.3, "label": "{{ params.tag }}-b"},
                        "depends_on": ["a"],
                    },
                    {
                        "id": "c",
                        "tool": "fault.tally",
                        "arguments": {"label": "{{ params.tag }}-c"},
                        "depends_on": ["b"],
                    },
                ],
            }
        ],
    }
    facades = [procs.vmcp(config, filename=f"facade-{i}.yaml") for i in (1, 2)]
    config_file = tmp_path / "worker.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    workers = []
    for index in (1, 2):
        args = [sys.executable, str(ROOT / "worker.py"), "--config", str(config_file)]
        worker = Child(args, tmp_path / f"worker-{index}.log", tmp_path).start()
        workers.append(worker)

        async def polling(worker: Child = worker) -> bool:
            if not worker.running:
                raise AssertionError(f"a worker exited:\n{tail(worker.log)}")
            return "vmcp worker: polling" in worker.output()

        await poll(polling, f"worker {index} to poll")
    try:
        yield facades, workers, fault
    finally:
        for worker in workers:
            worker.stop()


async def _counters(fault: Any) -> dict[str, Any]:
    async with Client(fault.url) as client:
        result = await client.call_tool("count", {})
    return dict(result.structured_content or {})


async def test_losing_a_facade_and_a_worker_under_load_loses_and_duplicates_no_run(
    cluster: Any, temporal: TemporalServer
) -> None:
    facades, workers, fault = cluster
    calls: list[Call] = []
    killed: dict[str, float | None] = {"at": None}

    def replica(index: int) -> int:
        return 1 if killed["at"] is not None else index % 2  # the balancer stops sending to a dead replica

    async def one(kind: str, index: int) -> None:
        call = Call(kind, uuid.uuid4().hex[:10], replica(index), time.monotonic())
        calls.append(call)
        try:
            async with Client(facades[call.replica].url, read_timeout_seconds=90) as client:
                if kind == "plain":
                    result = await client.call_tool("fault_tally", {"label": call.tag})
                else:
                    result = await client.call_tool(TOOL, {"tag": call.tag})
                    call.run_id = (result.meta or {}).get("io.vmcp/run_id")
            call.ok = not result.is_error
            call.error = "" if call.ok else str(result.content)
        except Exception as exc:  # a façade killed under the call
            call.error = f"{type(exc).__name__}: {exc}"
        call.ended = time.monotonic()

    async def user(number: int) -> None:
        for index in range(CALLS_PER_USER):
            await one("composite" if (number + index) % 3 == 0 else "plain", number + index)

    async def killer() -> None:
        await poll(lambda: _finished(calls, KILL_AFTER), "the first calls to finish", timeout=120)
        facades[0].proc.kill()
        facades[0].proc.wait(10)
        workers[0].kill()
        killed["at"] = time.monotonic()

    async def _finished(calls: list[Call], count: int) -> bool:
        return sum(1 for call in calls if call.ended) >= count

    started = time.monotonic()
    async with anyio.create_task_group() as group:
        group.start_soon(killer)
        async with anyio.create_task_group() as users:
            for number in range(USERS):
                users.start_soon(user, number)
    elapsed = time.monotonic() - started
    kill_at = killed["at"]
    assert kill_at is not None

    # plain calls: only those in flight on the killed façade failed
    failed = [call for call in calls if not call.ok]
    for call in failed:
        assert call.replica == 0 and call.started < kill_at <= call.ended, call
    assert all(call.ok for call in calls if call.replica == 1)

    # composite runs: every run Temporal has completes, and each call started at most one
    client = await TemporalClient.connect(temporal.address)
    query = f"WorkflowType = 'vmcp.CompositeTool' AND VmcpTool = '{TOOL}'"
    runs = [execution.id async for execution in client.list_workflows(query)]
    tags: dict[str, str] = {}
    for run_id in runs:
        async with Client(facades[1].url, read_timeout_seconds=120) as survivor:
            result = await survivor.call_tool("vmcp_run_result", {"run_id": run_id, "wait_seconds": 90})
        assert not result.is_error and "completed" in json.dumps(result.structured_content), (run_id, result)
        history = await client.get_workflow_handle(run_id).fetch_history()
        started_with = history.events[0].workflow_execution_started_event_attributes.input.payloads[0]
        tag = json.loads(started_with.data)["params"]["tag"]
        assert tag not in tags, f"tag {tag} started two runs: {tags[tag]} and {run_id}"
        tags[tag] = run_id
    answered = {call.run_id for call in calls if call.run_id}
    assert answered <= set(runs)  # every run a caller was told about exists (and completed above)
    counted = await _counters(fault)
    for tag, run_id in tags.items():
        for step in ("a", "c"):
            assert counted["keys"].get(f"{run_id}/{step}") == counted["tallies"][f"{tag}-{step}"] >= 1
    plain_ok = sum(1 for call in calls if call.kind == "plain" and call.ok)
    print(
        f"\nscale-out: {len(calls)} calls in {elapsed:.1f}s ({len(calls) / elapsed:.1f}/s) over 2 façades, "
        f"2 workers; killed façade 1 and worker 1 after {KILL_AFTER} calls; failed (in flight on the "
        f"killed façade): {len(failed)}; plain ok {plain_ok}; composite runs {len(runs)}, all completed, "
        f"none duplicated"
    )
