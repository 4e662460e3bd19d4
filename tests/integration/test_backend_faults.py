"""A backend's answer goes wrong after it has read the call: what the caller sees, and that the call
ran exactly once. A TCP proxy (tests/support/proxy.py) between vmcp and the fault server lets every
exchange through except the one whose request carries a marker; that request reaches the backend,
which executes it, and the answer is then lost (connection dropped), replaced by garbage, an event
stream cut in the middle, an HTML error page, an answer to another request, or never comes.

In each era (the lean 2026-07-28 path and the handshake era through the SDK's session), for each
fault: the caller gets an `isError` result saying what happened (never a hang past the backend's
timeout, never a JSON-RPC internal error, never the forged answer), the backend's own tally shows
one execution (vmcp resent nothing), and the next call through the same façade works."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from mcp import Client

from tests.support.proxy import FAULTS, TamperingProxy

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ERAS = ["2026-07-28", "legacy"]
BACKEND_TIMEOUT = 4  # seconds: bounds the `hang` fault


@pytest.fixture(scope="module")
def proxied(module_procs: Any) -> Iterator[tuple[Any, TamperingProxy, dict[str, Any]]]:
    fault = module_procs.fault_http("fault")
    proxy = TamperingProxy(int(fault.url.split(":")[2].split("/")[0]))
    facades = {
        era: module_procs.vmcp(
            {
                "server": {"host": "127.0.0.1", "port": 0},
                "backends": [
                    {
                        "name": "fault",
                        "transport": "streamable-http",
                        "url": proxy.url,
                        "protocol": era,
                        "timeout": BACKEND_TIMEOUT,
                    }
                ],
            },
            filename=f"faults-{era}.yaml",
        )
        for era in ERAS
    }
    try:
        yield fault, proxy, facades
    finally:
        proxy.close()


async def _tally(fault: Any, label: str) -> int:
    async with Client(fault.url) as direct:
        counted = await direct.call_tool("count", {})
    return int((counted.structured_content or {})["tallies"].get(label, 0))


# what the caller must be told, per era and fault. The SDK's session (handshake era) discards an
# answer it cannot read or match to a request, so there the caller learns at the call's timeout.
UNKNOWN = "whether it ran is unknown, and it was not sent again"
TOLD = {
    ("2026-07-28", "drop"): UNKNOWN,
    ("2026-07-28", "hang"): f"did not answer within {BACKEND_TIMEOUT}s",
    ("2026-07-28", "garbage"): "(http 200: a body that is not json): " + UNKNOWN,
    ("2026-07-28", "truncated-sse"): UNKNOWN,
    ("2026-07-28", "html-500"): "(http 500 with content type text/html): " + UNKNOWN,
    ("2026-07-28", "wrong-id"): "(http 200: a response to another request): " + UNKNOWN,
    ("legacy", "drop"): UNKNOWN,
    ("legacy", "hang"): f"did not answer within {BACKEND_TIMEOUT}s",
    ("legacy", "garbage"): UNKNOWN,
    ("legacy", "truncated-sse"): UNKNOWN,
    ("legacy", "html-500"): "(an http error): " + UNKNOWN,
    ("legacy", "wrong-id"): f"did not answer within {BACKEND_TIMEOUT}s",
}


@pytest.mark.parametrize("fault_kind", FAULTS)
@pytest.mark.parametrize("era", ERAS)
async def test_a_broken_answer_reaches_the_caller_as_an_error_and_the_call_ran_once(
    proxied: tuple[Any, TamperingProxy, dict[str, Any]], era: str, fault_kind: str
) -> None:
    fault, proxy, facades = proxied
    label = f"tamper-{fault_kind}-{era}-{uuid.uuid4().hex[:6]}"
    before = proxy.tampered.get(fault_kind, 0)
    async with Client(facades[era].url, mode=era) as client:  # type: ignore[arg-type]
        warm = await client.call_tool("fault_echo", {"text": "keep the connection alive"})
        assert not warm.is_error, warm
        broken = await client.call_tool("fault_tally", {"label": label})
        after = await client.call_tool("fault_echo", {"text": "still here"})
    assert proxy.tampered.get(fault_kind, 0) > before, "the proxy never saw the marked request"
    assert broken.is_error, broken
    text = str(broken.content[0].text).lower()  # type: ignore[union-attr]
    assert "forged" not in text, text
    assert TOLD[era, fault_kind] in text, text
    assert await _tally(fault, label) == 1  # executed once, never resent
    assert not after.is_error and after.structured_content == {"text": "still here"}, after
