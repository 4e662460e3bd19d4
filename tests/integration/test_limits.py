"""Limits with clear answers: a backend never has more calls in flight than its
`max_concurrency`, and beyond `max_waiting` waiting calls the rest fail at once, saying so."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_a_busy_backend_takes_its_limit_and_turns_the_rest_away_at_once(module_procs: Any) -> None:
    fault = module_procs.fault_http("limited")
    vmcp = module_procs.vmcp(
        {
            "server": {"host": "127.0.0.1", "port": 0},
            "backends": [
                {
                    "name": "fault",
                    "transport": "streamable-http",
                    "url": fault.url,
                    "max_concurrency": 2,
                    "max_waiting": 1,
                }
            ],
        },
        filename="limits.yaml",
    )
    label = f"limit-{uuid.uuid4().hex[:6]}"
    results: list[types.CallToolResult] = []

    async def call(client: Client) -> None:
        results.append(await client.call_tool("fault_slow", {"seconds": 1.5, "label": label}))

    async with Client(vmcp.url, mode="2026-07-28") as client, anyio.create_task_group() as group:
        for _ in range(6):
            group.start_soon(call, client)
    refused = [r for r in results if r.is_error]
    assert len(refused) == 3, results  # two ran, one waited for a slot, three were turned away
    assert all("busy" in str(r.content[0].text) for r in refused)  # type: ignore[union-attr]
    async with Client(fault.url) as direct:
        counted = (await direct.call_tool("count", {})).structured_content or {}
    assert counted["max_running"] == 2 and counted["tallies"][label] == 3
