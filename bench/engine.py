"""The Temporal engine under composite runs, measured side by side: how the façade learns a run's
result, the dev server's dynamic config, the worker's pollers. Not a test: figures go into
DESIGN.md ("Runs at the engine's floor").

    .venv/bin/python bench/engine.py paths  [--runs 200]
    .venv/bin/python bench/engine.py server [--runs 40]
    .venv/bin/python bench/engine.py worker [--callers 50]
    .venv/bin/python bench/engine.py idle   [--runs 40]

Each uses a minimal workflow on a real dev server (SQLite file, as `vmcp dev` runs it) and a
worker in this process, so what is measured is the engine and the SDK, not vmcp's interpreter:

- paths: one local-activity run started and awaited three ways, round after round in turn.
  eager+poll: `start_workflow(request_eager_start=True)` then the result's history long-poll
  (`handle.result()`, which is all `execute_workflow` does) — vmcp's way; start+poll: the same
  without eager start; update-with-start: one request that starts the run with an Update whose
  handler returns the output (Temporal offers no eager start with it). Eager start followed by an
  Update is no way at all: a short run has often finished before the Update arrives, and the
  server refuses it ("workflow update was aborted by closing workflow"). Every way survives a
  façade restart alike: the run id is the façade's, and any replica awaits the run by it.
- server: dev servers started in turn with Temporal's defaults, with `vmcp dev`'s dynamic config,
  and with it less one setting at a time; on each, a one-local-activity run, a run with one
  regular activity, and a run that sleeps on a 1 ms timer.
- worker: 50 concurrent callers of a one-local-activity run, with autoscaling pollers (vmcp's
  worker) and with the SDK's fixed default pollers; p50, p99, runs/s.
- idle: one-local-activity runs whose activity sleeps 0, 50 or 200 ms, and what the run costs
  beyond that sleep: every hop after a quiet spell is slower (the processes and the machine
  wake up), so a run of long steps pays more than a run of instant ones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import PollerBehaviorAutoscaling, Worker

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import pct

from vmcp.dev.temporal import DEFAULT_DYNAMIC_CONFIG, find_temporal_binary

QUEUE = "engine-bench"
SHORT = timedelta(seconds=5)


@activity.defn
async def echo(text: str) -> str:
    if text.startswith("nap:"):
        await asyncio.sleep(float(text.removeprefix("nap:")))
    return text


@workflow.defn(sandboxed=False)
class Run:
    """`kind`: "local" (one local activity), "activity" (one regular activity), "timer" (a 1 ms
    timer, then a local activity), "nap:<seconds>" (one local activity that sleeps so long)."""

    def __init__(self) -> None:
        self.output: str | None = None

    @workflow.run
    async def run(self, kind: str) -> str:
        if kind == "activity":
            self.output = await workflow.execute_activity(echo, kind, start_to_close_timeout=SHORT)
            return self.output
        if kind == "timer":
            await workflow.sleep(0.001)
        self.output = await workflow.execute_local_activity(echo, kind, start_to_close_timeout=SHORT)
        return self.output

    @workflow.update
    async def output_when_done(self) -> str:
        await workflow.wait_condition(lambda: self.output is not None)
        assert self.output is not None
        return self.output


def _id() -> str:
    return f"engine-{uuid.uuid4()}"


async def eager_poll(client: Client, kind: str = "local") -> str:
    handle = await client.start_workflow(Run.run, kind, id=_id(), task_queue=QUEUE, request_eager_start=True)
    return await handle.result()


async def start_poll(client: Client, kind: str = "local") -> str:
    handle = await client.start_workflow(Run.run, kind, id=_id(), task_queue=QUEUE)
    return await handle.result()


async def update_with_start(client: Client, kind: str = "local") -> str:
    start = WithStartWorkflowOperation(
        Run.run, kind, id=_id(), task_queue=QUEUE, id_conflict_policy=WorkflowIDConflictPolicy.FAIL
    )
    return await client.execute_update_with_start_workflow(Run.output_when_done, start_workflow_operation=start)


@asynccontextmanager
async def engine(dynamic_config: dict[str, Any], *, autoscaling: bool = True) -> AsyncIterator[Client]:
    """A dev server as `vmcp dev` starts it (SQLite in WAL mode) with `dynamic_config`, and a worker."""
    extra = [a for k, v in dynamic_config.items() for a in ("--dynamic-config-value", f"{k}={json.dumps(v)}")]
    extra += ["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]
    pollers: dict[str, Any] = {}
    if autoscaling:
        pollers = {
            "workflow_task_poller_behavior": PollerBehaviorAutoscaling(),
            "activity_task_poller_behavior": PollerBehaviorAutoscaling(),
        }
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            await WorkflowEnvironment.start_local(
                dev_server_existing_path=find_temporal_binary(),
                dev_server_extra_args=extra,
                dev_server_database_filename=str(Path(tmp) / "temporal.db"),
            ) as env,
            Worker(env.client, task_queue=QUEUE, workflows=[Run], activities=[echo], **pollers),
        ):
            yield env.client


async def timed(call: Awaitable[str]) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await call
    return loop.time() - start


async def paths(runs: int) -> None:
    ways: dict[str, Callable[[Client], Awaitable[str]]] = {
        "eager+poll (vmcp)": eager_poll,
        "start+poll": start_poll,
        "update-with-start": update_with_start,
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    async with engine(DEFAULT_DYNAMIC_CONFIG) as client:
        for round_ in range(runs + 10):  # the first 10 rounds warm up
            for name, way in ways.items():
                elapsed = await timed(way(client))
                if round_ >= 10:
                    times[name].append(elapsed)
    print(f"result paths: {runs} runs each, in turn, {os.cpu_count()} cpus; a one-local-activity run")
    print(f"{'':24}{'p50 ms':>9}{'p99 ms':>9}")
    for name, values in times.items():
        print(f"{name:24}{pct(values, 0.5):9.2f}{pct(values, 0.99):9.2f}")


def _without(*keys: str) -> dict[str, Any]:
    return {k: v for k, v in DEFAULT_DYNAMIC_CONFIG.items() if k not in keys}


async def server(runs: int) -> None:
    variants: dict[str, dict[str, Any]] = {
        "Temporal's defaults": {},
        "vmcp dev": DEFAULT_DYNAMIC_CONFIG,
        "  less transfer poll rate": _without("history.transferProcessorMaxPollRPS"),
        "  less timer settings": _without("history.timerProcessorMaxPollRPS", "history.timerProcessorMaxTimeShift"),
        "  less one partition": _without("matching.numTaskqueueReadPartitions", "matching.numTaskqueueWritePartitions"),
        "  less eager execution": _without("system.enableActivityEagerExecution", "system.enableEagerWorkflowStart"),
    }
    kinds = ("local", "activity", "timer")
    print(f"dev server dynamic config: {runs} runs of each kind, {os.cpu_count()} cpus; p50 ms")
    print(f"{'':28}" + "".join(f"{k:>10}" for k in kinds))
    for name, dynamic_config in variants.items():
        times: dict[str, list[float]] = {k: [] for k in kinds}
        async with engine(dynamic_config) as client:
            for round_ in range(runs + 5):
                for kind in kinds:
                    elapsed = await timed(eager_poll(client, kind))
                    if round_ >= 5:
                        times[kind].append(elapsed)
        print(f"{name:28}" + "".join(f"{pct(times[k], 0.5):10.1f}" for k in kinds), flush=True)


async def worker(callers: int) -> None:
    print(f"worker pollers: {callers} concurrent callers x 4 one-local-activity runs, {os.cpu_count()} cpus")
    print(f"{'':22}{'runs/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for name, autoscaling in (("autoscaling (vmcp)", True), ("SDK default", False)):
        async with engine(DEFAULT_DYNAMIC_CONFIG, autoscaling=autoscaling) as client:
            for _ in range(10):
                await eager_poll(client)
            latencies: list[float] = []

            async def caller(latencies: list[float] = latencies) -> None:
                for _ in range(4):
                    latencies.append(await timed(eager_poll(client)))

            loop = asyncio.get_running_loop()
            start = loop.time()
            await asyncio.gather(*(caller() for _ in range(callers)))
            rate = len(latencies) / (loop.time() - start)
        print(f"{name:22}{rate:9.1f}{pct(latencies, 0.5):9.1f}{pct(latencies, 0.99):9.1f}", flush=True)


async def idle(runs: int) -> None:
    naps = (0.0, 0.05, 0.2)
    beyond: dict[float, list[float]] = {nap: [] for nap in naps}
    async with engine(DEFAULT_DYNAMIC_CONFIG) as client:
        for nap in naps:  # a block each: a run after a long one is slower too, which would blur them
            for round_ in range(runs + 5):
                elapsed = await timed(eager_poll(client, f"nap:{nap}"))
                if round_ >= 5:
                    beyond[nap].append(elapsed - nap)
    print(f"a run beyond its step's own time: {runs} runs each, a block each, {os.cpu_count()} cpus")
    for nap, values in beyond.items():
        p50, p99 = pct(values, 0.5), pct(values, 0.99)
        print(f"step sleeping {nap * 1000:5.0f} ms: p50 {p50:6.1f} ms beyond it, p99 {p99:6.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("paths", "server", "worker", "idle"))
    parser.add_argument("--runs", type=int, default=0, help="runs per figure (paths: 200, server and idle: 40)")
    parser.add_argument("--callers", type=int, default=50)
    args = parser.parse_args()
    if args.what == "paths":
        asyncio.run(paths(args.runs or 200))
    elif args.what == "server":
        asyncio.run(server(args.runs or 40))
    elif args.what == "idle":
        asyncio.run(idle(args.runs or 40))
    else:
        asyncio.run(worker(args.callers))
