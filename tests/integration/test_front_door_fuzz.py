"""Fuzzing the front door: malformed and hostile JSON-RPC, sent to a real `vmcp serve` over HTTP in
both protocol eras and on the lean path, never gets a 5xx or crashes the server, and a normal call
still works afterwards. Hypothesis draws the requests (seeded: the same examples every run, so CI
is repeatable; bounded in number)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

pytestmark = [pytest.mark.integration]

METHODS = [
    "tools/call",
    "tools/list",
    "prompts/get",
    "prompts/list",
    "resources/read",
    "resources/list",
    "resources/templates/list",
    "resources/subscribe",
    "completion/complete",
    "logging/setLevel",
    "subscriptions/listen",
    "server/discover",
    "initialize",
    "ping",
    "notifications/initialized",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
names = st.one_of(st.sampled_from(["fault_echo", "fault_add", "vmcp_run_status", "fault_greet"]), st.text(max_size=300))
params = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "name": names,
            "arguments": json_values,
            "uri": st.one_of(st.just("fault://static"), st.text(max_size=200)),
            "_meta": st.one_of(
                json_values,
                st.fixed_dictionaries(
                    {},
                    optional={
                        "io.modelcontextprotocol/protocolVersion": st.sampled_from(["2026-07-28", "2025-11-25", "x"]),
                        "io.modelcontextprotocol/clientCapabilities": json_values,
                        "io.modelcontextprotocol/clientInfo": json_values,
                        "progressToken": json_values,
                        "io.vmcp/idempotency-key": json_values,
                    },
                ),
            ),
            "requestState": st.text(max_size=100),
            "inputResponses": json_values,
        },
    ),
)
messages = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "1.0", 2, None]),
        "id": st.one_of(st.integers(min_value=-(2**80), max_value=2**80), st.text(max_size=500), json_values),
        "method": st.one_of(st.sampled_from(METHODS), st.text(max_size=60)),
        "params": params,
    },
)


def _encode(message: Any) -> bytes:
    return json.dumps(message, allow_nan=True).encode()


bodies = st.one_of(
    messages.map(_encode),
    st.lists(messages, min_size=0, max_size=3).map(_encode),  # batches
    st.binary(max_size=300),  # anything, invalid UTF-8 included
    st.integers(min_value=1, max_value=5000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(min_value=1, max_value=5000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
    st.text(max_size=200).map(lambda text: text.encode("utf-8", "surrogatepass")),
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "MCP-Protocol-Version": st.sampled_from(["2026-07-28", "2025-11-25", "garbage", ""]),
        "Accept": st.sampled_from(["application/json, text/event-stream", "application/json", "*/*", "text/html"]),
        "Content-Type": st.sampled_from(["application/json", "text/plain", "application/json; charset=latin-1"]),
        "Mcp-Method": st.one_of(st.sampled_from(METHODS), st.text(alphabet="abc/", max_size=20)),
        "Mcp-Name": st.text(alphabet="abcdefghij_", max_size=30),
        "Mcp-Session-Id": st.text(alphabet="0123456789abcdef", max_size=40),
        "X-Oversized": st.integers(min_value=1, max_value=64).map(lambda kib: "x" * (kib * 1024)),
    },
)


@pytest.fixture(scope="module")
def served(module_procs: Any) -> Iterator[Any]:
    fault = module_procs.fault_http("fuzzed")
    vmcp = module_procs.vmcp(
        {
            "server": {"host": "127.0.0.1", "port": 0},
            "backends": [{"name": "fault", "transport": "streamable-http", "url": fault.url}],
        },
        filename="fuzz.yaml",
    )
    with httpx.Client(timeout=15) as http:
        yield vmcp, http


@settings(
    max_examples=300,
    derandomize=True,  # seeded: the same requests every run
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(body=bodies, sent_headers=headers)
def test_hostile_requests_get_no_5xx_and_break_nothing(served: Any, body: bytes, sent_headers: dict[str, str]) -> None:
    vmcp, http = served
    response = http.post(vmcp.url, content=body, headers={"Host": f"127.0.0.1:{vmcp.port}", **sent_headers})
    assert response.status_code < 500, (response.status_code, body[:200], sent_headers, response.text[:300])
    assert vmcp.proc.poll() is None, "the server died"


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["2026-07-28", "legacy"])
async def test_after_the_fuzz_a_normal_call_still_works(served: Any, mode: str) -> None:
    vmcp, _ = served
    async with Client(vmcp.url, mode=mode) as client:  # type: ignore[arg-type]
        result = await client.call_tool("fault_echo", {"text": "still here"})
    assert not result.is_error and "still here" in str(result.content)
    assert vmcp.proc.poll() is None
