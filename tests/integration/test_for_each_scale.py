"""A `for_each` at its ceiling: 1,000 items complete on a real dev server and a real worker
process; the run's history stays below a tenth of Temporal's event limit; the worker's memory
returns to within 20 MiB of where it was; and a list longer than `max_items` fails the step with a
clear error instead of growing the history."""

from __future__ import annotations

import gc
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from temporalio.client import Client

from tests.support.processes import Process
from tests.support.temporal import TemporalServer
from vmcp.backends.pool import BackendPool
from vmcp.catalog.aggregate import build_catalog
from vmcp.catalog.steps import resolve
from vmcp.composite.contracts import CompositeRunInput
from vmcp.config.loading import load_config
from vmcp.runs.calls import with_defaults
from vmcp.runs.orchestrator import Orchestrator

ROOT = Path(__file__).resolve().parents[2]
TEMPORAL = str(Path(sys.executable).parent / "temporal")
EVENT_LIMIT = 51_200  # Temporal's default history count limit (limit.historyCount.error)
ITEMS = 1000

pytestmark = [pytest.mark.integration, pytest.mark.temporal, pytest.mark.anyio]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _run(client: Client, config: Any, catalog: Any, tool_name: str, params: dict[str, Any]) -> Any:
    index, tool = next((i, t) for i, t in enumerate(config.composite_tools) if t.name == tool_name)
    resolved, issues = resolve(tool, catalog, ["fault"], index)
    assert not issues, issues
    run_id = f"vmcp-{tool_name}-{uuid.uuid4()}"
    run = CompositeRunInput(tool.name, resolved.model_dump(mode="json"), with_defaults(tool.parameters, params))
    await Orchestrator(config).start(run_id, run, tool.run_timeout)
    with anyio.fail_after(600):
        output = await client.get_workflow_handle(run_id).result()
    return run_id, output


async def test_a_thousand_item_for_each_completes_within_history_and_memory_bounds(
    tmp_path: Path, temporal_server: TemporalServer
) -> None:
    client = await temporal_server.client()
    each = {"id": "each", "type": "for_each", "collection": "params.items", "max_parallel": 16}
    each["step"] = {"tool": "fault.echo", "arguments": {"text": "{{ item }}"}}
    config_file = tmp_path / "vmcp.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "temporal": {
                    "address": temporal_server.address,
                    "task_queue": f"scale-{uuid.uuid4().hex[:8]}",
                },
                "backends": [
                    {
                        "name": "fault",
                        "transport": "stdio",
                        "command": sys.executable,
                        "args": ["-m", "tests.servers.fault_server", "--transport", "stdio", "--name", "fault"],
                        "cwd": str(ROOT),
                    }
                ],
                "composite_tools": [
                    {"name": "many", "steps": [each]},
                    {"name": "too_many", "steps": [{**each, "max_items": 10}]},
                ],
            }
        )
    )
    config = load_config(config_file)
    worker = Process([sys.executable, str(ROOT / "worker.py"), "--config", str(config_file)], ROOT)
    try:
        worker.wait_for("vmcp worker: polling")
        async with BackendPool(config.backends, config.base_dir) as pool:
            await pool.wait_settled(60)
            catalog = build_catalog(config.aggregation, ["fault"], pool.listings())
        await _run(client, config, catalog, "many", {"items": ["warm", "up"]})  # imports, caches
        before = _rss_mib(worker.popen.pid)

        items = [f"item-{index}" for index in range(ITEMS)]
        run_id, output = await _run(client, config, catalog, "many", {"items": items})
        step = output["structured"]["each"]
        assert step["status"] == "completed", step
        assert [entry["text"] for entry in step["output"]] == items
        events = [event async for event in client.get_workflow_handle(run_id).fetch_history_events()]
        assert len(events) < EVENT_LIMIT / 10, len(events)
        print(f"\n{ITEMS} items: {len(events)} history events")

        gc.collect()
        await anyio.sleep(2)  # the worker's caches of the closed run age out
        after = _rss_mib(worker.popen.pid)
        assert after - before < 20, (before, after)
        print(f"worker RSS {before:.1f} -> {after:.1f} MiB")

        _, refused = await _run(client, config, catalog, "too_many", {"items": items[:11]})
        failed = refused["structured"]
        assert "11 items, more than max_items (10)" in str(failed), failed
    finally:
        worker.stop(signal.SIGINT)
