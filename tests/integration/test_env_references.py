"""`${NAME}` in a backend's env and headers comes from vmcp's environment at connection time."""

from __future__ import annotations

import os
from typing import Any

import pytest
from mcp import Client

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_env_reference_reaches_the_child_and_a_missing_one_is_named(
    procs: Any, fault_stdio_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VMCP_TEST_BACKEND_TOKEN", "s3cret-value")
    os.environ.pop("VMCP_TEST_NOT_SET", None)
    served = procs.vmcp(
        {
            "temporal": {"address": "127.0.0.1:1"},
            "backends": [
                fault_stdio_backend("good", env={"TOKEN": "Bearer ${VMCP_TEST_BACKEND_TOKEN}"}),
                fault_stdio_backend("bad", env={"TOKEN": "${VMCP_TEST_NOT_SET}"}),
            ],
        }
    )
    async with Client(served.url) as client:
        result = await client.call_tool("good_env", {"name": "TOKEN"})
    assert result.structured_content == {"name": "TOKEN", "value": "Bearer s3cret-value"}
    bad = served.backend_status("bad")
    assert bad["state"] != "ready"
    assert "VMCP_TEST_NOT_SET is not set" in (bad["last_error"] or "")
    assert "s3cret-value" not in served.config_file.read_text()
