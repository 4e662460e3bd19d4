"""Backends that crash, restart, start late, stall or get hammered, behind a real vmcp.

The contract under test: a backend restart costs at most the one call that was in flight (or
the first one after), no call hangs, a backend that is down never takes the others with it, a
stalled call ends at the backend's `timeout` while other calls carry on, and concurrent callers
share the backend's one connection.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

CALL_GUARD = 30.0  # far above every configured timeout: reaching it means the call hung
ERAS = pytest.mark.parametrize("legacy_only", [False, True], ids=["backend-2026-07-28", "backend-2025-11-25"])


@dataclass
class Outcome:
    ok: bool
    detail: str
    result: types.CallToolResult | None = None


async def _call(client: Client, name: str, arguments: dict[str, Any] | None = None) -> Outcome:
    """One call, classified; a call that does not finish within CALL_GUARD fails the test."""
    try:
        with anyio.fail_after(CALL_GUARD):
            result = await client.call_tool(name, arguments or {})
    except TimeoutError:
        pytest.fail(f"{name} hung for {CALL_GUARD:g}s")
    except Exception as exc:  # a JSON-RPC error also counts as the one permitted failure
        return Outcome(False, f"{type(exc).__name__}: {exc}")
    text = " ".join(b.text for b in result.content if isinstance(b, types.TextContent))
    return Outcome(not result.is_error, text, result)


def _assert_at_most_first_fails(outcomes: list[Outcome]) -> None:
    failed = [index for index, outcome in enumerate(outcomes) if not outcome.ok]
    assert failed in ([], [0]), "more than one call failed after the restart:\n" + "\n".join(
        f"  call {i}: {'ok' if o.ok else 'FAILED'} {o.detail}" for i, o in enumerate(outcomes)
    )


def _pid(outcome: Outcome) -> int:
    assert outcome.result is not None and outcome.result.structured_content is not None, outcome.detail
    return int(outcome.result.structured_content["pid"])


KINDS = pytest.mark.parametrize("kind", ["http-2026-07-28", "http-2025-11-25", "stdio"])


def _backend_of_kind(procs: Any, fault_stdio_backend: Any, kind: str, name: str, **extra: Any) -> dict[str, Any]:
    """One fault backend: over HTTP in either era (the 2026 one takes vmcp's lean path), or stdio."""
    if kind == "stdio":
        return dict(fault_stdio_backend(name, **extra))
    backend = procs.fault_http(name, legacy_only=kind == "http-2025-11-25")
    return {"name": name, "transport": "streamable-http", "url": backend.url, **extra}


def _http_backend(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "transport": "streamable-http",
        "url": url,
        "timeout": "10s",
        "connect_timeout": "10s",
        **extra,
    }


# --------------------------------------------------------------------------- crash and restart


@ERAS
async def test_http_backend_killed_and_restarted(procs: Any, legacy_only: bool) -> None:
    backend = procs.fault_http("crashy", legacy_only=legacy_only)
    served = procs.vmcp({"backends": [_http_backend("crashy", backend.url)]})
    async with Client(served.url, mode="auto") as client:
        before = await _call(client, "crashy_count")
        assert before.ok, before.detail
        backend.kill()
        backend.start()  # same port: where vmcp expects it
        outcomes = [await _call(client, "crashy_count") for _ in range(4)]
    _assert_at_most_first_fails(outcomes)
    assert _pid(outcomes[-1]) != _pid(before), "the answer must come from the restarted process"


@ERAS
async def test_http_backend_crashing_mid_call_then_restarted(procs: Any, legacy_only: bool) -> None:
    backend = procs.fault_http("crashy", legacy_only=legacy_only)
    served = procs.vmcp({"backends": [_http_backend("crashy", backend.url)]})
    async with Client(served.url, mode="auto") as client:
        before = await _call(client, "crashy_count")
        crashed = await _call(client, "crashy_crash")  # the process exits without answering
        backend.start()
        outcomes = [await _call(client, "crashy_count") for _ in range(3)]
    assert not crashed.ok
    assert "crashy" in crashed.detail
    assert all(outcome.ok for outcome in outcomes), [o.detail for o in outcomes]
    assert _pid(outcomes[0]) != _pid(before)


@ERAS
async def test_http_backend_down_calls_fail_fast_then_recover(procs: Any, legacy_only: bool) -> None:
    backend = procs.fault_http("flaky", legacy_only=legacy_only)
    served = procs.vmcp({"backends": [_http_backend("flaky", backend.url, connect_timeout="3s")]})
    async with Client(served.url, mode="auto") as client:
        assert (await _call(client, "flaky_echo", {"text": "before"})).ok
        backend.kill()
        while_down = await _call(client, "flaky_echo", {"text": "down"})  # answered, not hung
        assert not while_down.ok
        assert "flaky" in while_down.detail
        backend.start()
        outcomes = [await _call(client, "flaky_echo", {"text": f"after {i}"}) for i in range(3)]
    _assert_at_most_first_fails(outcomes)


async def test_stdio_backend_crashing_mid_call(procs: Any, fault_stdio_backend: Any) -> None:
    served = procs.vmcp({"backends": [fault_stdio_backend("local")]})
    async with Client(served.url, mode="auto") as client:
        before = await _call(client, "local_count")
        crashed = await _call(client, "local_crash")  # the one call in flight when it died
        outcomes = [await _call(client, "local_count") for _ in range(3)]
    assert not crashed.ok
    assert all(outcome.ok for outcome in outcomes), [o.detail for o in outcomes]
    assert _pid(outcomes[0]) != _pid(before)
    status = served.backend_status("local")
    assert status["state"] == "ready" and status["reconnects"] >= 1


async def test_stdio_child_killed_while_idle(procs: Any, fault_stdio_backend: Any) -> None:
    served = procs.vmcp({"backends": [fault_stdio_backend("local")]})
    async with Client(served.url, mode="auto") as client:
        before = await _call(client, "local_count")
        os.kill(_pid(before), signal.SIGKILL)
        outcomes = [await _call(client, "local_count") for _ in range(3)]
    _assert_at_most_first_fails(outcomes)
    assert _pid(outcomes[-1]) != _pid(before)


# --------------------------------------------------------------------------- late start


async def test_backend_down_at_startup_joins_when_it_comes_up(
    procs: Any, fault_stdio_backend: Any, free_port: Any
) -> None:
    late_port = free_port()
    late_url = f"http://127.0.0.1:{late_port}/mcp"
    config = {"backends": [_http_backend("late", late_url), fault_stdio_backend("early")]}
    served = procs.vmcp(config)  # becomes ready without the late backend

    status = served.backend_status("late")
    assert status["state"] != "ready"
    assert status["last_error"]
    async with Client(served.url, mode="auto") as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "early_echo" in names
        assert not any(name.startswith("late_") for name in names)
        early = await _call(client, "early_echo", {"text": "still here"})
        assert early.ok and early.detail == "still here"
        missing = await _call(client, "late_echo", {"text": "x"})
        assert not missing.ok and "late_echo" in missing.detail

        late = procs.fault_http("late", port=late_port)
        assert late.url == late_url
        with anyio.fail_after(45):  # vmcp retries with back-off capped at 10 s
            while True:
                listed = await client.list_tools(cache_mode="refresh")
                if any(tool.name == "late_echo" for tool in listed.tools):
                    break
                await anyio.sleep(0.2)  # polling interval of a deadline-bounded wait
        joined = await _call(client, "late_echo", {"text": "joined"})
    assert joined.ok and joined.detail == "joined"
    assert served.backend_status("late")["state"] == "ready"
    async with httpx.AsyncClient(timeout=5.0) as http:
        assert (await http.get(f"{served.base}/readyz")).status_code == 200


async def test_slow_booting_backend_is_bounded_by_connect_timeout_not_call_timeout(
    procs: Any, fault_stdio_backend: Any
) -> None:
    """Booting (seconds, for npx-launched servers) is governed by `connect_timeout`; `timeout`
    bounds each call once connected."""
    booting = fault_stdio_backend("booting", timeout="1s", connect_timeout="20s")
    booting["args"] = [*booting["args"], "--startup-delay", "2"]
    served = procs.vmcp({"backends": [booting]})
    assert served.backend_status("booting")["state"] == "ready", served.backend_status("booting")
    async with Client(served.url, mode="auto") as client:
        answer = await _call(client, "booting_echo", {"text": "booted"})
    assert answer.ok and answer.detail == "booted"


async def test_health_checks_leave_healthy_backends_of_both_eras_alone(procs: Any, fault_stdio_backend: Any) -> None:
    """Health checks run every `health_interval`; a backend that answers must keep its connection
    (and a stdio backend its process) whichever protocol era it speaks."""
    modern = procs.fault_http("modern")
    legacy = procs.fault_http("legacy", legacy_only=True)
    checked = {"health_interval": "0.3s"}
    config = {
        "backends": [
            {"name": "modern", "transport": "streamable-http", "url": modern.url, **checked},
            {"name": "legacy", "transport": "streamable-http", "url": legacy.url, **checked},
            fault_stdio_backend("local", **checked),
        ]
    }
    served = procs.vmcp(config)
    async with Client(served.url, mode="auto") as client:
        first = {name: await _call(client, f"{name}_count") for name in ("modern", "local")}
        # Each backend counts the checks it gets (pings; 2026-07-28: discovers): wait for several
        # check periods, every backend checked again since `first`.
        with anyio.fail_after(30):
            while True:
                pings = await _call(client, "legacy_count")
                later = {name: await _call(client, f"{name}_count") for name in ("modern", "local")}
                assert pings.ok, pings.detail
                assert pings.result is not None and pings.result.structured_content is not None
                if pings.result.structured_content["methods"].get("ping", 0) >= 5 and all(
                    _discovers(later[name]) > _discovers(first[name]) for name in later
                ):
                    break
                await anyio.sleep(0.2)  # polling interval of a deadline-bounded wait

    statuses = {b["name"]: b for b in served.status()["backends"]}
    assert {name: (s["state"], s["reconnects"]) for name, s in statuses.items()} == {
        "modern": ("ready", 0),
        "legacy": ("ready", 0),
        "local": ("ready", 0),
    }, {name: s["last_error"] for name, s in statuses.items()}
    for name in ("modern", "local"):
        assert later[name].ok, later[name].detail
        assert _pid(later[name]) == _pid(first[name])
        # a 2026-07-28 health check is a `server/discover` (the backend counts each as a connection):
        # they went through (the wait above), and none of them led to a reconnection (the statuses)


def _discovers(outcome: Outcome) -> int:
    assert outcome.ok and outcome.result is not None and outcome.result.structured_content is not None
    return int(outcome.result.structured_content["methods"].get("server/discover", 0))


# --------------------------------------------------------------------------- timeouts


@KINDS
async def test_slow_call_times_out_while_other_calls_work(procs: Any, fault_stdio_backend: Any, kind: str) -> None:
    config = {
        "backends": [
            _backend_of_kind(procs, fault_stdio_backend, kind, "sluggish", timeout="1s"),
            fault_stdio_backend("other"),
        ]
    }
    served = procs.vmcp(config)
    slow: list[Outcome] = []
    quick: list[Outcome] = []
    async with Client(served.url, mode="auto") as client:

        async def stall() -> None:
            # 30 s of work against a 1 s timeout: only vmcp's timeout ends this before CALL_GUARD
            slow.append(await _call(client, "sluggish_slow", {"seconds": 30}))

        async with anyio.create_task_group() as group:
            group.start_soon(stall)
            for index in range(5):
                quick.append(await _call(client, "sluggish_echo", {"text": f"quick {index}"}))
                quick.append(await _call(client, "other_echo", {"text": f"other {index}"}))
        after = await _call(client, "sluggish_echo", {"text": "after"})

    assert len(slow) == 1 and not slow[0].ok
    assert "1s" in slow[0].detail and ("within" in slow[0].detail or "timeout" in slow[0].detail.lower())
    assert all(outcome.ok for outcome in quick), [o.detail for o in quick if not o.ok]
    assert after.ok and after.detail == "after"
    assert served.backend_status("sluggish")["state"] == "ready"


# --------------------------------------------------------------------------- concurrency


@KINDS
async def test_concurrent_calls_share_one_backend_connection(procs: Any, fault_stdio_backend: Any, kind: str) -> None:
    # no health checks: a 2026-07-28 one is a `server/discover`, which the backend counts as a connection
    busy = _backend_of_kind(procs, fault_stdio_backend, kind, "busy", health_interval="0s")
    served = procs.vmcp({"backends": [busy]})
    results: list[Outcome] = []

    async def caller(client: Client, index: int) -> None:
        results.append(await _call(client, "busy_slow", {"seconds": 0.2 + index / 100}))

    async with Client(served.url, mode="auto") as first, Client(served.url, mode="legacy") as second:
        before = await _call(first, "busy_count")
        async with anyio.create_task_group() as group:
            for index in range(20):
                group.start_soon(caller, first if index % 2 else second, index)
        after = await _call(first, "busy_count")

    assert len(results) == 20
    assert all(outcome.ok for outcome in results), [o.detail for o in results if not o.ok]
    assert before.result is not None and after.result is not None
    counts_before, counts_after = before.result.structured_content, after.result.structured_content
    assert counts_before is not None and counts_after is not None
    assert counts_after["calls"] - counts_before["calls"] == 21  # the 20, plus the second count
    assert counts_before["connections"] == 1
    # a dual-era backend also gets one handshake session, shared by all ten handshake-era calls
    assert counts_after["connections"] == (2 if kind == "http-2026-07-28" else 1)
    assert counts_after["pid"] == counts_before["pid"]
    assert served.backend_status("busy")["reconnects"] == 0


# --------------------------------------------------------------------------- health


@ERAS
async def test_stopped_backend_shows_unhealthy_within_the_check_interval_and_recovers(
    procs: Any, fault_stdio_backend: Any, wait_until: Any, legacy_only: bool
) -> None:
    """No call needed to notice: the periodic check marks it down; its tools fail fast and say
    which backend is down, the other backend keeps working, and a restart restores it."""
    watched = procs.fault_http("watched", legacy_only=legacy_only)
    served = procs.vmcp(
        {
            "backends": [
                _http_backend("watched", watched.url, health_interval="1s", connect_timeout="2s"),
                fault_stdio_backend("other"),
            ]
        }
    )
    assert served.backend_status("watched")["state"] == "ready"
    watched.kill()
    wait_until(
        lambda: served.backend_status("watched")["state"] != "ready",
        15.0,
        "the health check to mark the stopped backend down",
    )
    status = served.backend_status("watched")
    assert status["last_error"], status
    async with Client(served.url, mode="auto") as client:
        down = await _call(client, "watched_echo", {"text": "x"})
        assert not down.ok and "watched" in down.detail and "unavailable" in down.detail, down.detail
        assert (await _call(client, "other_echo", {"text": "still here"})).ok
        watched.start()
        wait_until(lambda: served.backend_status("watched")["state"] == "ready", 30.0, "the backend to be reconnected")
        assert (await _call(client, "watched_echo", {"text": "back"})).ok
