"""Everything that travels between a client and a backend besides the call and its answer:
progress, logs, elicitation, cancellation, resource updates and list changes — through vmcp,
for each combination of client era and backend era.

One vmcp fronts the fault server three times: `modern` (it speaks both eras: vmcp reaches it in
the era of each caller), `legacy` (the server refuses discovery, so vmcp uses the handshake) and
`modernonly` (it refuses the handshake: a handshake-era caller's questions are translated).
Clients connect in `legacy` mode (2025-11-25 sessions) or pinned to 2026-07-28.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client, MCPError

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

CLIENT_MODES = ["legacy", "2026-07-28"]
BACKENDS = ["modern", "legacy", "modernonly"]
DEADLINE = 20.0


@dataclass
class Relayed:
    url: str
    call_count: Callable[[str], Any]
    status: Callable[[], dict[str, Any]]
    dual_era_url: str  # the `modern` backend, directly


@pytest.fixture(scope="module")
def relayed(module_procs: Any) -> Relayed:
    servers = {
        "modern": module_procs.fault_http("modern"),
        "legacy": module_procs.fault_http("legacy", legacy_only=True),
        "modernonly": module_procs.fault_http("modernonly", modern_only=True),
    }
    served = module_procs.vmcp(
        {
            "temporal": {"address": "127.0.0.1:1"},
            "backends": [
                {"name": name, "transport": "streamable-http", "url": server.url} for name, server in servers.items()
            ],
        },
        filename="vmcp-relay.yaml",
    )
    status = {b["name"]: b["protocol_version"] for b in served.status()["backends"]}
    assert status == {"modern": "2026-07-28", "legacy": "2025-11-25", "modernonly": "2026-07-28"}, status

    async def call_count(backend: str) -> dict[str, Any]:
        mode = "legacy" if backend == "legacy" else "2026-07-28"  # no handshake of its own on the others
        async with Client(servers[backend].url, mode=mode) as direct:  # type: ignore[arg-type]
            result = await direct.call_tool("count", {})
        assert result.structured_content is not None
        return result.structured_content

    return Relayed(served.url, call_count, served.status, servers["modern"].url)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", CLIENT_MODES)
async def test_progress_reaches_the_caller(relayed: Relayed, mode: str, backend: str) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with Client(relayed.url, mode=mode) as client:
        result = await client.call_tool(f"{backend}_progress", {"steps": 3}, progress_callback=on_progress)
    assert not result.is_error
    assert [p for p, _, _ in seen] == [1, 2, 3]
    assert seen[-1] == (3, 3, "step 3/3")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_handshake_client_gets_logs_at_its_level(relayed: Relayed, backend: str) -> None:
    logs: list[types.LoggingMessageNotificationParams] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async with Client(relayed.url, mode="legacy", logging_callback=on_log) as client:
        await client.call_tool(f"{backend}_chatty", {"lines": 2})
        assert logs == [], "no level set: nothing is relayed"
        await client.set_logging_level("info")
        await client.call_tool(f"{backend}_chatty", {"lines": 3})
        assert [log.data for log in logs] == ["line 1 of 3", "line 2 of 3", "line 3 of 3"]
        await client.set_logging_level("error")
        await client.call_tool(f"{backend}_chatty", {"lines": 2})
    assert len(logs) == 3, "below the client's level: filtered"


async def test_modern_client_gets_logs_it_opted_into(relayed: Relayed) -> None:
    logs: list[types.LoggingMessageNotificationParams] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async with Client(relayed.url, mode="2026-07-28", logging_callback=on_log, log_level="info") as client:
        result = await client.call_tool("modern_chatty", {"lines": 3})
    assert not result.is_error
    assert [log.data for log in logs] == ["line 1 of 3", "line 2 of 3", "line 3 of 3"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", CLIENT_MODES)
async def test_elicitation_is_answered_by_the_calling_client(relayed: Relayed, mode: str, backend: str) -> None:
    asked: list[str] = []

    async def answer(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"answer": f"blue ({mode})"})

    async with Client(relayed.url, mode=mode, elicitation_callback=answer) as client:
        if mode == "2026-07-28" and backend == "legacy":
            # a handshake-era backend asks mid-call; a 2026-07-28 caller has no channel for that,
            # and is told so (the backend's tool fails with vmcp's explanation)
            with pytest.raises(MCPError) as refused:
                await client.call_tool(f"{backend}_ask", {"question": "Favourite colour?"})
            assert "2025-11-25 session" in str(refused.value)
            assert asked == []
            return
        result = await client.call_tool(f"{backend}_ask", {"question": "Favourite colour?"})
    assert not result.is_error, result
    assert asked == ["Favourite colour?"]
    assert result.structured_content == {"action": "accept", "answer": f"blue ({mode})"}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", CLIENT_MODES)
async def test_cancelling_a_call_cancels_it_on_the_backend(relayed: Relayed, mode: str, backend: str) -> None:
    before = (await relayed.call_count(backend))["cancelled"]
    async with Client(relayed.url, mode=mode) as client:
        with anyio.move_on_after(1.0):
            await client.call_tool(f"{backend}_slow", {"seconds": 30})
            pytest.fail("the slow call should have been cancelled")
    with anyio.fail_after(DEADLINE):
        while (await relayed.call_count(backend))["cancelled"] == before:  # noqa: ASYNC110 - polls another process
            await anyio.sleep(0.1)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_handshake_client_subscription_gets_updates(relayed: Relayed, backend: str) -> None:
    updates: list[str] = []
    got = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updates.append(str(message.params.uri))
            got.set()

    async with Client(relayed.url, mode="legacy", message_handler=on_message) as client:
        uri = "fault://static"
        # both backends offer the URI; the first configured (modern) serves it
        await client.subscribe_resource(uri)
        await client.call_tool("modern_touch", {"uri": uri})
        with anyio.fail_after(DEADLINE):
            await got.wait()
        await client.unsubscribe_resource(uri)
    assert updates[0] == uri


async def test_modern_client_listen_stream_gets_updates(relayed: Relayed) -> None:
    uri = "fault://static"
    async with (
        Client(relayed.url, mode="2026-07-28") as client,
        client.listen(resource_subscriptions=[uri]) as subscription,
    ):
        await client.call_tool("modern_touch", {"uri": uri})
        with anyio.fail_after(DEADLINE):
            event = await subscription.__anext__()
    assert getattr(event, "uri", None) == uri


@pytest.mark.parametrize("backend", BACKENDS)
async def test_list_changes_reach_both_eras_of_client(relayed: Relayed, backend: str) -> None:
    """A backend that grows a tool: vmcp re-lists it, and tells handshake-era sessions with
    notifications/tools/list_changed and 2026-07-28 listen streams with an event."""
    grown = f"grown_{backend}"
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with (
        Client(relayed.url, mode="legacy", message_handler=on_message) as old,
        Client(relayed.url, mode="2026-07-28") as new,
    ):
        await old.list_tools()
        async with new.listen(tools_list_changed=True) as subscription:
            await old.call_tool(f"{backend}_grow", {"tool": grown})
            with anyio.fail_after(DEADLINE):
                await changed.wait()
                event = await subscription.__anext__()
        assert type(event).__name__ == "ToolsListChanged"
        names = {tool.name for tool in (await new.list_tools()).tools}
        assert f"{backend}_{grown}" in names
        echoed = await old.call_tool(f"{backend}_{grown}", {"text": "hi"})
    assert not echoed.is_error


def _handshake_sessions(relayed: Relayed) -> dict[str, str | None]:
    return {b["name"]: b["handshake_session"] for b in relayed.status()["backends"]}


async def _outcome(call: Any) -> tuple[bool, list[str]]:
    """What a caller sees of a tool call: an error flag and the texts (a JSON-RPC error's message)."""
    try:
        result = await call
    except MCPError as exc:
        return True, [exc.error.message]
    return result.is_error, [getattr(c, "text", "") for c in result.content]


async def test_a_tool_asking_the_sdk_way_asks_a_handshake_era_caller_as_it_would_directly(relayed: Relayed) -> None:
    """`ask_sdk_way` asks through its session (`ctx.elicit`), which only the handshake era has.
    Under `protocol: auto`, vmcp reaches the dual-era backend in each caller's era: handshake-era
    callers (several at once) over one shared handshake session, where the question reaches the
    caller whose call asked it; a 2026-07-28 caller sees exactly what it sees directly."""
    before = (await relayed.call_count("modern"))["methods"].get("initialize", 0)

    async def one_caller(index: int) -> None:
        asked: list[str] = []

        async def answer(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
            asked.append(params.message)
            return types.ElicitResult(action="accept", content={"answer": f"colour {index}"})

        async with Client(relayed.url, mode="legacy", elicitation_callback=answer) as client:
            result = await client.call_tool("modern_ask_sdk_way", {"question": f"Colour for {index}?"})
        assert not result.is_error, result
        assert result.structured_content == {"action": "accept", "answer": f"colour {index}"}
        assert asked == [f"Colour for {index}?"]

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as group:
            for index in range(4):
                group.start_soon(one_caller, index)
    handshakes = (await relayed.call_count("modern"))["methods"].get("initialize", 0) - before
    assert handshakes <= 1, f"{handshakes} handshake sessions opened for 4 callers: one is shared"
    sessions = _handshake_sessions(relayed)
    assert sessions["modern"] == "open", sessions
    assert sessions["legacy"] is None, "a handshake-era backend needs no second session"

    async def answer_nothing(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action="decline")

    async with Client(relayed.dual_era_url, mode="2026-07-28", elicitation_callback=answer_nothing) as direct:
        directly = await _outcome(direct.call_tool("ask_sdk_way", {"question": "Colour?"}))
    async with Client(relayed.url, mode="2026-07-28", elicitation_callback=answer_nothing) as client:
        through = await _outcome(client.call_tool("modern_ask_sdk_way", {"question": "Colour?"}))
    assert directly[0], f"the SDK refuses a session request on a 2026-07-28 call: {directly}"
    assert through == directly


async def test_a_backend_that_refuses_the_handshake_still_serves_handshake_era_callers(relayed: Relayed) -> None:
    """`modernonly` refuses `initialize`: the handshake session is refused (and not asked again
    for every call), and its questions reach a handshake-era caller translated, mid-call."""

    async def answer(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"answer": "teal"})

    before = (await relayed.call_count("modernonly"))["methods"].get("initialize", 0)
    async with Client(relayed.url, mode="legacy", elicitation_callback=answer) as client:
        for _ in range(3):
            result = await client.call_tool("modernonly_ask", {"question": "Colour?"})
            assert result.structured_content == {"action": "accept", "answer": "teal"}, result
    assert _handshake_sessions(relayed)["modernonly"] == "refused"
    assert (await relayed.call_count("modernonly"))["methods"].get("initialize", 0) - before <= 1
