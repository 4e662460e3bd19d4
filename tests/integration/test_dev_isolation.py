"""In `vmcp dev` the façade and the worker share one backend pool, so a composite step and a
client's own call can be in flight on the same backend at once. What the backend asks during the
step (here an elicitation from a handshake-era stdio server, whose messages carry no request
context) must reach no client: least of all the unrelated one whose call happens to be running."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import mcp_types as types
import pytest
import yaml
from mcp import Client

from tests.support.processes import DevStack

pytestmark = [pytest.mark.integration, pytest.mark.temporal, pytest.mark.anyio]


@pytest.fixture(scope="module")
def dev_url(
    tmp_path_factory: pytest.TempPathFactory,
    free_port: Callable[[], int],
    fault_stdio_backend: Callable[..., dict[str, Any]],
    wait_until: Callable[..., Any],
) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("dev-isolation")
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        "temporal": {
            "address": f"127.0.0.1:{free_port()}",
            "task_queue": f"isolation-{uuid.uuid4().hex[:8]}",
            "dev_server": {"db_file": ".vmcp/temporal.db", "ui_port": 0},
        },
        # handshake era: the server may ask its client mid-call, over stdio, with no request context
        "backends": [fault_stdio_backend("fe", protocol="legacy")],
        "composite_tools": [
            {"name": "asker", "steps": [{"id": "ask", "tool": "fe.ask", "arguments": {"question": "secret?"}}]}
        ],
    }
    config_file = directory / "vmcp.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    dev = DevStack(config_file)
    try:
        yield dev.wait_ready()[0]
    finally:
        dev.shut_down()


async def test_a_composite_steps_question_reaches_no_unrelated_caller(dev_url: str) -> None:
    asked: list[str] = []

    async def bystander(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"answer": "leaked"})

    async def running() -> int:
        async with Client(dev_url, mode="legacy") as probe:
            counted = await probe.call_tool("fe_count", {})
        return int((counted.structured_content or {}).get("running", 0))

    async with (
        Client(dev_url, mode="legacy", elicitation_callback=bystander) as client,
        anyio.create_task_group() as group,
    ):
        group.start_soon(client.call_tool, "fe_slow", {"seconds": 8, "label": "bystander"})
        for _ in range(600):  # until the bystander's call is in flight on the backend (at most 30 s)
            if await running() >= 1:
                break
            await anyio.sleep(0.05)
        assert await running() >= 1
        async with Client(dev_url, mode="legacy") as runner:
            result = await runner.call_tool("asker", {})
        group.cancel_scope.cancel()
    assert asked == []  # the step's question never reached the bystander
    assert "leaked" not in str(result.structured_content), result
