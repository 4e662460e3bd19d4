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


@pytest.mark.parametrize(
    ("era", "answers_with"),
    [("2026-07-28", "json"), ("legacy", "json"), ("legacy", "event-stream")],
    ids=["lean-path", "sdk-json", "sdk-event-stream"],
)
async def test_an_answer_over_max_response_size_is_refused_and_the_next_call_works(
    module_procs: Any, era: str, answers_with: str
) -> None:
    """Every way an answer reaches vmcp from an HTTP backend is capped: the lean path, and the
    SDK's client for a JSON body and for an event stream (per event)."""
    fault = module_procs.fault_http(f"big-{answers_with}", json_response=answers_with == "json")
    limit = 64 * 1024
    vmcp = module_procs.vmcp(
        {
            "server": {"host": "127.0.0.1", "port": 0},
            "backends": [
                {
                    "name": "fault",
                    "transport": "streamable-http",
                    "url": fault.url,
                    "protocol": era,
                    "max_response_size": limit,
                }
            ],
        },
        filename=f"size-{era}-{answers_with}.yaml",
    )
    async with Client(vmcp.url, mode=era) as client:  # type: ignore[arg-type]
        big = await client.call_tool("fault_echo", {"text": "x" * (limit + 1)})
        small = await client.call_tool("fault_echo", {"text": "x" * (limit // 4)})
    assert big.is_error, big
    text = str(big.content[0].text)  # type: ignore[union-attr]
    assert "larger than the backend's max_response_size" in text and "whether it ran is unknown" in text, text
    assert not small.is_error and small.structured_content == {"text": "x" * (limit // 4)}, small
