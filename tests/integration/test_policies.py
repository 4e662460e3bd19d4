"""Tool customization and argument policies through a real façade (`vmcp serve`) over the fault
server: the advertised schema is exactly what a caller may send, the backend receives its own names
with defaults and caller-derived fixed values, and every hostile URL of the corpus is refused before
the backend sees a call (its own record of `fetch` calls proves it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import VMCP
from tests.unit.test_url_policy import HOSTILE, LEGITIMATE

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

CLIENT = types.Implementation(name="policy-suite", version="1.0")
FETCH_OVERRIDE = {
    "name": "fetch_docs",
    "description": "Fetch a page of our documentation.",
    "parameters": {
        "url": {"name": "address", "description": "A page under *.example.test or docs.partner.test"},
        "max_length": {"default": 2000},
        "user": {"fixed": "{{ caller.subject }}@{{ caller.client }}"},
    },
    "expose": ["url", "max_length"],
    "policy": {
        "url": {"url": {"schemes": ["https", "http"], "hosts": ["*.example.test", "docs.partner.test"]}},
        "max_length": {"maximum": 10000},
    },
}


class Served:
    def __init__(self, vmcp: Any, fault_url: str) -> None:
        self.vmcp = vmcp
        self.fault_url = fault_url

    async def fetched(self) -> list[dict[str, Any]]:
        async with Client(self.fault_url) as direct:
            result = await direct.call_tool("count", {})
        assert result.structured_content is not None
        return list(result.structured_content["fetched"])


@pytest.fixture(scope="module")
def served(module_procs: Any) -> Iterator[Served]:
    fault = module_procs.fault_http("fault")
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        "backends": [{"name": "fault", "transport": "streamable-http", "url": fault.url}],
        "aggregation": {
            "backends": {
                "fault": {
                    "overrides": {
                        "fetch": FETCH_OVERRIDE,
                        "echo": {"policy": {"txt": {"max_length": 3}}},  # a typo: echo's parameter is `text`
                    }
                }
            }
        },
    }
    yield Served(module_procs.vmcp(config, filename="policies.yaml"), fault.url)


async def _call(served: Served, arguments: dict[str, Any], mode: str = "2026-07-28") -> types.CallToolResult:
    async with Client(served.vmcp.url, mode=mode, client_info=CLIENT) as client:  # type: ignore[arg-type]
        return await client.call_tool("fetch_docs", arguments)


def _text(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


async def test_the_advertised_schema_is_exactly_what_a_caller_may_send(served: Served) -> None:
    async with Client(served.vmcp.url) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert "fault_fetch" not in tools  # renamed, not advertised twice
    schema = tools["fetch_docs"].input_schema
    assert set(schema["properties"]) == {"address", "max_length"}  # user fixed, raw not exposed
    assert schema["properties"]["address"]["description"] == "A page under *.example.test or docs.partner.test"
    assert schema["properties"]["max_length"]["default"] == 2000
    assert schema["required"] == ["address"]
    assert tools["fetch_docs"].description == "Fetch a page of our documentation."


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_the_backend_gets_its_own_names_defaults_and_the_callers_fixed_value(served: Served, mode: str) -> None:
    before = len(await served.fetched())
    result = await _call(served, {"address": f"https://docs.example.test/{mode}"}, mode)
    assert not result.is_error, result
    received = (await served.fetched())[before:]
    assert received == [
        {"url": f"https://docs.example.test/{mode}", "max_length": 2000, "raw": False, "user": "anonymous@policy-suite"}
    ]


async def test_every_legitimate_url_of_the_corpus_is_served(served: Served) -> None:
    before = len(await served.fetched())
    for case, url in LEGITIMATE:
        result = await _call(served, {"address": url})
        assert not result.is_error, (case, _text(result))
    assert len(await served.fetched()) == before + len(LEGITIMATE)


async def test_every_hostile_url_of_the_corpus_is_refused_before_the_backend(served: Served) -> None:
    before = await served.fetched()
    async with Client(served.vmcp.url, client_info=CLIENT) as client:
        for case, url, rule in HOSTILE:
            result = await client.call_tool("fetch_docs", {"address": url})
            text = _text(result)
            assert result.is_error, (case, text)
            assert "argument `address` refused by policy (url)" in text and f"{rule}:" in text, (case, text)
    assert await served.fetched() == before  # the backend never saw one of them


async def test_hidden_renamed_and_out_of_range_arguments_are_refused(served: Served) -> None:
    before = await served.fetched()
    hidden = await _call(served, {"address": "https://a.example.test/", "user": "root"})
    assert hidden.is_error and "`user` is set by the operator" in _text(hidden)
    original = await _call(served, {"url": "https://a.example.test/"})
    assert original.is_error and "advertised as `address`" in _text(original)
    too_long = await _call(served, {"address": "https://a.example.test/", "max_length": 20000})
    assert too_long.is_error and "`max_length` refused by policy (maximum)" in _text(too_long)
    assert await served.fetched() == before


async def test_denials_are_counted_and_vmcp_tools_shows_schema_and_policy(served: Served) -> None:
    async with httpx.AsyncClient() as http:
        status = (await http.get(served.vmcp.base + "/status")).json()
    denials = status["policy_denials"]
    assert denials["fetch_docs: url"] >= len(HOSTILE) and denials["fetch_docs: maximum"] >= 1
    command = [VMCP, "tools", "--config", str(served.vmcp.config_file)]
    shown = await anyio.run_process([*command, "--json"], check=False)
    assert shown.returncode == 0, shown.stderr.decode()
    row = next(row for row in json.loads(shown.stdout) if row["name"] == "fetch_docs")
    assert set(row["input_schema"]["properties"]) == {"address", "max_length"}
    assert row["fixed"] == {"user": "{{ caller.subject }}@{{ caller.client }}"}
    assert row["policy"]["url"]["url"]["hosts"] == ["*.example.test", "docs.partner.test"]
    text = (await anyio.run_process(command, check=False)).stdout.decode()
    assert "policy url:" in text and "fixed  user" in text


async def test_an_override_naming_a_missing_parameter_keeps_the_tool_unadvertised(served: Served) -> None:
    """Fail closed: a guard that cannot apply must not leave the tool open without it."""
    async with Client(served.vmcp.url) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        refused = await client.call_tool("fault_echo", {"text": "hello"})
    assert "fault_echo" not in names and "fault_add" in names
    assert refused.is_error
    async with httpx.AsyncClient() as http:
        warnings = (await http.get(served.vmcp.base + "/status")).json()["catalog_warnings"]
    assert any(
        "aggregation.backends.fault.overrides.echo.policy.txt: 'echo' has no parameter 'txt'" in w for w in warnings
    ), warnings


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_count_a_known_sequence_of_calls(served: Served) -> None:
    async with httpx.AsyncClient() as http:
        before = _samples((await http.get(served.vmcp.base + "/metrics")).text)
        async with Client(served.vmcp.url, client_info=CLIENT) as client:
            for _ in range(3):
                assert not (await client.call_tool("fault_add", {"a": 1, "b": 2})).is_error
            assert (await client.call_tool("fault_fail", {"message": "no"})).is_error
            for _ in range(2):
                assert (await client.call_tool("fetch_docs", {"address": "https://evil.test/"})).is_error
        response = await http.get(served.vmcp.base + "/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    after = _samples(response.text)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("vmcp_tool_calls_total", tool="fault_add", backend="fault", outcome="ok") == 3
    assert delta("vmcp_tool_calls_total", tool="fault_fail", backend="fault", outcome="tool_error") == 1
    assert delta("vmcp_tool_calls_total", tool="fetch_docs", backend="fault", outcome="refused") == 2
    assert delta("vmcp_denials_total", method="tools/call", target="fetch_docs", reason="policy") == 2
    assert delta("vmcp_tool_call_seconds_count", tool="fault_add", backend="fault") == 3
    assert after[("vmcp_backend_up", (("backend", "fault"),))] == 1.0
