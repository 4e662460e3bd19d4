"""Every door guarded: a caller whom `authorization:` grants one tool sees no prompt, resource or
template, and each of `prompts/get`, `resources/read` (a listed resource and a template's
expansion), `completion/complete` and `resources/subscribe` is refused, in both protocol eras,
through a real façade (`vmcp serve`) in front of the fault server. The backend's own count of the
requests it handled proves none got through, and the audit trail has a `deny` line for each. An
operator allowed everything makes the same requests and reaches the backend: the control that
shows the count would have moved.

Then the README's URL-policy example, in front of the published `mcp-server-fetch`: the page it
must not fetch stays unfetched through the `fetch` prompt too, and a resource template's expansion
is policed as the URI it reads."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

LIMITED = types.Implementation(name="limited", version="1.0")
OPERATOR = types.Implementation(name="operator", version="1.0")
BACKEND_METHODS = ("prompts/get", "resources/read", "completion/complete", "resources/subscribe")


class Served:
    def __init__(self, vmcp: Any, fault_url: str, audit: Path) -> None:
        self.vmcp = vmcp
        self.fault_url = fault_url
        self.audit = audit

    async def handled(self) -> dict[str, int]:
        """How many requests of each method the backend itself has handled."""
        async with Client(self.fault_url) as direct:
            result = await direct.call_tool("count", {})
        assert result.structured_content is not None
        return {method: int(result.structured_content["methods"].get(method, 0)) for method in BACKEND_METHODS}

    def audit_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit.read_text().splitlines()] if self.audit.exists() else []


@pytest.fixture(scope="module")
def served(module_procs: Any) -> Iterator[Served]:
    fault = module_procs.fault_http("fault")
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        "backends": [{"name": "fault", "transport": "streamable-http", "url": fault.url}],
        "authorization": {
            "default": "deny",
            "rules": [
                {"tools": ["*"], "prompts": ["*"], "resources": ["*"], "when": {"clients": ["operator"]}},
                {"tools": ["fault_echo"]},  # everybody else: this one tool, nothing more
            ],
        },
        "audit": {"file": "audit.jsonl"},
    }
    vmcp = module_procs.vmcp(config, filename="doors.yaml")
    yield Served(vmcp, fault.url, vmcp.config_file.parent / "audit.jsonl")


async def _every_door(client: Client, *, modern: bool) -> list[str]:
    """Knock on every door that names a backend's prompt or resource; the methods refused."""
    attempts: list[tuple[str, Any]] = [
        ("prompts/get", client.get_prompt("fault_greet", {"who": "ada"})),
        ("resources/read", client.read_resource("fault://static")),
        ("resources/read", client.read_resource("fault://item/7")),
        (
            "completion/complete",
            client.complete(types.PromptReference(name="fault_greet"), {"name": "who", "value": "a"}),
        ),
        (
            "completion/complete",
            client.complete(types.ResourceTemplateReference(uri="fault://item/{id}"), {"name": "id", "value": "1"}),
        ),
    ]
    if not modern:  # a handshake-era session subscribes; 2026-07-28 clients listen
        attempts.append(("resources/subscribe", client.subscribe_resource("fault://static")))
    refused = []
    for method, attempt in attempts:
        try:
            await attempt
        except MCPError as exc:
            assert "not available to you" in exc.error.message, (method, exc.error.message)
            refused.append(method)
    if modern:
        async with client.listen(resource_subscriptions=["fault://static"], tools_list_changed=True) as stream:
            if "fault://static" not in str(stream.honored):  # the stream will not hear of it
                refused.append("subscriptions/listen")
    return refused


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_caller_granted_one_tool_sees_and_reaches_nothing_else(served: Served, mode: str) -> None:
    before = await served.handled()
    audited = len(served.audit_lines())
    async with Client(served.vmcp.url, mode=mode, client_info=LIMITED) as client:  # type: ignore[arg-type]
        assert [tool.name for tool in (await client.list_tools()).tools] == ["fault_echo"]
        assert (await client.list_prompts()).prompts == []
        assert (await client.list_resources()).resources == []
        assert (await client.list_resource_templates()).resource_templates == []
        refused = await _every_door(client, modern=mode != "legacy")
        denied_tool = await client.call_tool("fault_add", {"a": 1, "b": 2})
        assert denied_tool.is_error
        assert not (await client.call_tool("fault_echo", {"text": "hi"})).is_error
    expected = ["prompts/get", "resources/read", "resources/read", "completion/complete", "completion/complete"]
    assert refused == expected + (["resources/subscribe"] if mode == "legacy" else ["subscriptions/listen"])
    assert await served.handled() == before  # not one of them reached the backend
    denials = [line for line in served.audit_lines()[audited:] if line["decision"] == "deny"]
    assert [(line["method"], line.get("target") or line.get("tool")) for line in denials] == [
        ("prompts/get", "fault_greet"),
        ("resources/read", "fault://static"),
        ("resources/read", "fault://item/7"),
        ("completion/complete", "fault_greet"),
        ("completion/complete", "fault://item/{id}"),
        ("resources/subscribe", "fault://static") if mode == "legacy" else ("subscriptions/listen", "fault://static"),
        ("tools/call", "fault_add"),
    ]
    assert all(line["subject"] == "anonymous" and line["client"] == "limited" for line in denials)


@pytest.mark.parametrize(("mode", "code"), [("legacy", -32002), ("2026-07-28", types.INVALID_PARAMS)])
async def test_a_uri_no_backend_serves_is_not_found_in_each_eras_own_words(
    served: Served, mode: str, code: int
) -> None:
    """2025-11-25 has its own resource-not-found code; 2026-07-28 (SEP-2164) says Invalid Params.
    Either way the error names the URI in `data`, and nothing reaches a backend."""
    before = await served.handled()
    uri = f"fault://nothing-here/{uuid.uuid4().hex[:6]}"
    async with Client(served.vmcp.url, mode=mode, client_info=OPERATOR) as client:  # type: ignore[arg-type]
        with pytest.raises(MCPError) as raised:
            await client.read_resource(uri)
    assert raised.value.error.code == code, raised.value.error
    assert raised.value.error.data == {"uri": uri}, raised.value.error
    assert await served.handled() == before


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_the_operator_reaches_every_door_the_limited_caller_could_not(served: Served, mode: str) -> None:
    before = await served.handled()
    async with Client(served.vmcp.url, mode=mode, client_info=OPERATOR) as client:  # type: ignore[arg-type]
        assert [p.name for p in (await client.list_prompts()).prompts] == ["fault_greet"]
        assert {str(r.uri) for r in (await client.list_resources()).resources} == {"fault://static"}
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["fault://item/{id}"]
        prompt = await client.get_prompt("fault_greet", {"who": "ada"})
        assert "ada" in json.dumps(prompt.model_dump(mode="json"))
        item = await client.read_resource("fault://item/7")
        assert "7" in json.dumps(item.model_dump(mode="json"))
        if mode != "legacy":
            async with client.listen(resource_subscriptions=["fault://static"]) as stream:
                assert "fault://static" in str(stream.honored)
    after = await served.handled()
    assert after["prompts/get"] == before["prompts/get"] + 1
    assert after["resources/read"] == before["resources/read"] + 1


# --------------------------------------------------------------------------- the README's URL policy


class _CountingSite:
    """A page on loopback that counts the requests it served (what a fetch would have reached)."""

    def __init__(self) -> None:
        site = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.requests += 1
                body = b"<html><body>internal page</body></html>"
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/internal"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


FetchServed = tuple[Any, _CountingSite]
DOCS_ONLY = {"url": {"schemes": ["https"], "hosts": ["*.example.test"]}}


@pytest.fixture(scope="module")
def fetch_served(module_procs: Any) -> Iterator[FetchServed]:
    site = _CountingSite()
    fault = module_procs.fault_http("items")
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        "backends": [
            {"name": "fetch", "transport": "stdio", "command": "mcp-server-fetch", "args": ["--allow-private-ips"]},
            {"name": "items", "transport": "streamable-http", "url": fault.url},
        ],
        "aggregation": {
            "backends": {
                "fetch": {
                    "overrides": {"fetch": {"name": "fetch_docs", "policy": {"url": DOCS_ONLY}}},
                    "prompts": {"overrides": {"fetch": {"policy": {"url": DOCS_ONLY}}}},
                },
                "items": {"resources": {"policy": {"pattern": "fault://(static|item/[0-9]+)"}}},
            }
        },
    }
    try:
        yield module_procs.vmcp(config, filename="fetch-policy.yaml"), site
    finally:
        site.close()


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_the_url_policy_holds_through_the_fetch_prompt(
    fetch_served: tuple[Any, _CountingSite], mode: str
) -> None:
    vmcp, site = fetch_served
    async with Client(vmcp.url, mode=mode) as client:  # type: ignore[arg-type]
        refused_tool = await client.call_tool("fetch_docs", {"url": site.url})
        assert refused_tool.is_error
        with pytest.raises(MCPError, match=r"argument `url` refused by policy \(url\)"):
            await client.get_prompt("fetch_fetch", {"url": site.url})
    assert site.requests == 0  # the internal page was never fetched, by the tool or the prompt


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_template_expansion_is_policed_as_the_uri_it_reads(
    fetch_served: tuple[Any, _CountingSite], mode: str
) -> None:
    vmcp, _ = fetch_served
    async with Client(vmcp.url, mode=mode) as client:  # type: ignore[arg-type]
        allowed = await client.read_resource("fault://item/42")
        assert "42" in json.dumps(allowed.model_dump(mode="json"))
        for hostile in ("fault://item/..%2F..%2Fsecret", "fault://item/42%00", "fault://item/"):
            with pytest.raises(MCPError, match=r"argument `uri` refused by policy \(pattern\)"):
                await client.read_resource(hostile)


async def test_a_plain_modern_call_takes_the_lean_path_and_others_do_not(served: Served) -> None:
    """The lean inbound path is really taken for the call it exists for (so disabling it would fail
    here), and not for a handshake-era call or one that streams progress."""

    def lean() -> int:
        return int(served.vmcp.status()["lean_calls"])

    start = lean()
    async with Client(served.vmcp.url, mode="2026-07-28", client_info=OPERATOR) as client:
        assert not (await client.call_tool("fault_echo", {"text": "lean"})).is_error
        assert lean() == start + 1
        denied = await client.call_tool("fault_nonexistent", {})
        assert denied.is_error and "Unknown tool" in str(denied.content)
        assert lean() == start + 2  # refusals are answered there too, by the same pipeline
        steps: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            steps.append(progress)

        await client.call_tool("fault_progress", {"steps": 2}, progress_callback=on_progress)
        assert steps and lean() == start + 2  # progress streams back: the SDK's session served it
    async with Client(served.vmcp.url, mode="legacy", client_info=OPERATOR) as client:  # type: ignore[arg-type]
        assert not (await client.call_tool("fault_echo", {"text": "session"})).is_error
    assert lean() == start + 2


def test_status_and_metrics_check_the_host_like_the_mcp_endpoint(served: Served) -> None:
    for path in ("/status", "/metrics"):
        assert httpx.get(served.vmcp.base + path, timeout=10).status_code == 200
        rebound = httpx.get(served.vmcp.base + path, headers={"Host": "attacker.example"}, timeout=10)
        assert rebound.status_code in (400, 403, 421), path


def _series(exposition: str) -> int:
    return sum(1 for line in exposition.splitlines() if line.startswith("vmcp_") and "vmcp_backend" not in line)


async def test_random_names_do_not_grow_the_metrics(served: Served) -> None:
    """Metrics labels take only names the catalogue offers: a caller sending a thousand made-up
    tool names (and made-up prompts and URIs) leaves the number of series where it was."""
    names = [f"tool-{uuid.uuid4().hex}" for _ in range(1000)]
    async with Client(served.vmcp.url, mode="2026-07-28", client_info=LIMITED) as client:
        for warm_up in ("x", "y"):  # the first unknown and denied names create their series
            await client.call_tool(warm_up, {})
            await client.call_tool("fault_add", {"a": 1, "b": 1})
            with contextlib.suppress(MCPError):
                await client.get_prompt(f"p-{warm_up}", {})
            with contextlib.suppress(MCPError):
                await client.read_resource(f"fault://item/{warm_up}")
        async with httpx.AsyncClient() as http:
            before = _series((await http.get(served.vmcp.base + "/metrics")).text)
            for name in names:
                assert (await client.call_tool(name, {})).is_error
            for name in names[:100]:
                with contextlib.suppress(MCPError):
                    await client.get_prompt(name, {})
                with contextlib.suppress(MCPError):
                    await client.read_resource(f"fault://item/{name}")
            after = (await http.get(served.vmcp.base + "/metrics")).text
    assert _series(after) == before
    assert not any(name in after for name in names)


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_caller_cannot_forge_vmcps_own_meta_keys(served: Served, mode: str) -> None:
    """`io.vmcp/idempotency-key` marks a composite step's call (a backend may deduplicate on it):
    only vmcp sets it. A caller's own `_meta` otherwise travels on."""
    forged = {"io.vmcp/idempotency-key": "vmcp-other-run/step", "io.vmcp/run_id": "vmcp-other-run", "note": "mine"}
    async with Client(served.vmcp.url, mode=mode, client_info=OPERATOR) as client:  # type: ignore[arg-type]
        result = await client.call_tool("fault_record_meta", {}, meta=forged)
    received = (result.structured_content or {})["meta"]
    assert received.get("note") == "mine", received
    assert not [key for key in received if key.startswith("io.vmcp/")], received
