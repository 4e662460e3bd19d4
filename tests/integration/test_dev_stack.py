"""`vmcp dev` as an operator runs it: one real process that starts Temporal, a worker and the façade.

Each test writes its own configuration with ports chosen at run time, runs `vmcp dev` as a
subprocess, waits for what it prints (polling with a deadline), talks to it with the MCP SDK's
real client, the `temporal` CLI and plain HTTP, and stops it with a signal.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml
from mcp import Client

from tests.support.processes import DevStack, free_port, wait_until

BIN = Path(sys.executable).parent
VMCP = str(BIN / "vmcp")
TEMPORAL = str(BIN / "temporal")
START_DEADLINE = 120.0  # Temporal, a stdio backend and the façade, on two shared cores
STOP_DEADLINE = 60.0
SEARCH_ATTRIBUTES = {"VmcpTool": "Keyword", "VmcpStatus": "Keyword", "VmcpPendingApproval": "Bool"}

pytestmark = [pytest.mark.integration, pytest.mark.temporal]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class DevConfig:
    def __init__(self, directory: Path, temporal_host: str = "127.0.0.1", **extra: Any) -> None:
        self.server_port = free_port()
        self.temporal_port = free_port()
        self.ui_port = free_port()
        self.temporal_address = f"{temporal_host}:{self.temporal_port}"
        self.path = directory / "vmcp-dev.yaml"
        self.path.write_text(
            yaml.safe_dump(
                {
                    "server": {"host": "127.0.0.1", "port": self.server_port, "path": "/mcp"},
                    "temporal": {
                        "address": self.temporal_address,
                        "namespace": "default",
                        "task_queue": "vmcp-dev-test",
                        "dev_server": {"db_file": ".vmcp/temporal.db", "ui_port": self.ui_port},
                    },
                    "backends": [
                        {
                            "name": "time",
                            "transport": "stdio",
                            "command": "mcp-server-time",
                            "args": ["--local-timezone", "UTC"],
                        }
                    ],
                    **extra,
                },
                sort_keys=False,
            )
        )

    @property
    def temporal_cli_address(self) -> str:
        return f"127.0.0.1:{self.temporal_port}"


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def servers_using(directory: Path) -> list[int]:
    """Running `temporal server start-dev` processes whose database lies under `directory`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ours = any(str(directory).encode() in part for part in cmdline)
        if b"start-dev" in cmdline and ours and running(int(entry.name)):
            found.append(int(entry.name))
    return found


@pytest.fixture
def dev_processes() -> Iterator[list[DevStack]]:
    """Every `vmcp dev` a test starts; teardown kills any left running, and its Temporal."""
    started: list[DevStack] = []
    yield started
    for dev in started:
        if dev.popen.poll() is None:
            temporal = None
            with contextlib.suppress(AssertionError, OSError):
                temporal = dev.temporal_pid()
            os.killpg(dev.popen.pid, signal.SIGKILL)
            dev.popen.wait(10)
            if temporal is not None and running(temporal):
                os.kill(temporal, signal.SIGKILL)


def start_dev(config: DevConfig, started: list[DevStack]) -> DevStack:
    dev = DevStack(config.path)
    started.append(dev)
    return dev


def temporal_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TEMPORAL, *args], capture_output=True, text=True, timeout=60)


def assert_search_attributes_registered(address: str) -> None:
    listed = temporal_cli("operator", "search-attribute", "list", "--address", address)
    assert listed.returncode == 0, listed.stderr
    for name, kind in SEARCH_ATTRIBUTES.items():
        assert re.search(rf"^\s*{name}\s+{kind}\b", listed.stdout, re.MULTILINE), listed.stdout


async def list_and_call(url: str) -> tuple[list[str], Any]:
    async with Client(url) as client:
        tools = await client.list_tools()
        result = await client.call_tool("time_get_current_time", {"timezone": "UTC"})
    return [tool.name for tool in tools.tools], result


# --------------------------------------------------------------------------- tests


def test_dev_runs_the_whole_stack_and_stops_cleanly_on_sigint(tmp_path: Path, dev_processes: list[DevStack]) -> None:
    config = DevConfig(tmp_path, temporal_host="localhost")  # the default config's spelling
    dev = start_dev(config, dev_processes)
    mcp_url, ui_url = dev.wait_ready()
    assert ui_url is not None, dev.text()
    assert mcp_url == f"http://127.0.0.1:{config.server_port}/mcp"
    assert ui_url == f"http://127.0.0.1:{config.ui_port}"
    temporal = dev.temporal_pid()

    names, result = anyio.run(list_and_call, mcp_url)
    assert {"time_get_current_time", "time_convert_time"} <= set(names)
    assert result.is_error is not True
    assert result.structured_content["timezone"] == "UTC"

    def ui_answers() -> bool:
        try:
            return httpx.get(ui_url, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ui_answers, START_DEADLINE, f"the Web UI at {ui_url}")
    assert_search_attributes_registered(config.temporal_cli_address)
    assert (tmp_path / ".vmcp" / "temporal.db").is_file()

    # the same data cannot be served twice: a second `vmcp dev` says so and leaves at once
    second = subprocess.run([VMCP, "dev", "--config", str(config.path)], capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert "already using" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr

    assert dev.stop(signal.SIGINT) == 0, dev.text()
    assert "Traceback" not in dev.text()
    assert "vmcp dev: stopped" in dev.text()
    wait_until(lambda: not running(temporal), 10, "the Temporal child to be gone")


def test_a_second_start_finds_the_first_runs_data(tmp_path: Path, dev_processes: list[DevStack]) -> None:
    config = DevConfig(tmp_path)
    first = start_dev(config, dev_processes)
    first.wait_ready()
    started = temporal_cli(
        "workflow", "start", "--type", "SomeType", "--task-queue", "q", "--workflow-id", "kept-across-restarts",
        "--address", config.temporal_cli_address,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert first.stop(signal.SIGTERM) == 0, first.text()

    second = start_dev(config, dev_processes)
    second.wait_ready()
    described = temporal_cli(
        "workflow", "describe", "--workflow-id", "kept-across-restarts", "--address", config.temporal_cli_address
    )  # fmt: skip
    assert described.returncode == 0, described.stderr
    assert "SomeType" in described.stdout
    # registered again on the second start, over the ones the database already holds
    assert_search_attributes_registered(config.temporal_cli_address)
    assert second.stop(signal.SIGINT) == 0, second.text()
    assert "Traceback" not in first.text() + second.text()


def test_dev_names_a_busy_temporal_port(tmp_path: Path) -> None:
    config = DevConfig(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", config.temporal_port))
        squatter.listen()
        done = subprocess.run([VMCP, "dev", "--config", str(config.path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"port {config.temporal_port}" in done.stderr and "in use" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_dev_explains_why_the_facade_will_not_start_and_stops_temporal(tmp_path: Path) -> None:
    time_server = {"transport": "stdio", "command": "mcp-server-time"}
    config = DevConfig(
        tmp_path,
        backends=[{"name": "a", **time_server}, {"name": "b", **time_server}],
        aggregation={"conflict_resolution": "manual"},  # both offer get_current_time: a clash
    )
    done = subprocess.run(
        [VMCP, "dev", "--config", str(config.path)], capture_output=True, text=True, timeout=START_DEADLINE
    )
    assert done.returncode == 1
    assert "the façade will not start" in done.stderr, done.stderr
    assert "get_current_time" in done.stderr
    assert "Traceback" not in done.stderr
    assert servers_using(tmp_path) == []


@pytest.mark.anyio
async def test_a_web_ui_port_taken_after_it_was_picked_costs_one_restart_not_the_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ui_port: 0` lets vmcp dev pick the Web UI's port; another program can bind it before
    Temporal does (any outgoing connection may get it). The dev server then exits, and vmcp dev
    starts it again on a fresh port instead of failing. The race is made certain here: the
    port is held from the start, and the check before spawning is told it is free."""
    from vmcp.config.loading import load_config
    from vmcp.dev import stack, temporal

    config_file = DevConfig(tmp_path).path
    raw = yaml.safe_load(config_file.read_text())
    raw["temporal"]["dev_server"]["ui_port"] = 0
    config_file.write_text(yaml.safe_dump(raw))
    config = load_config(config_file)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        picks = iter([taken])
        monkeypatch.setattr(temporal, "free_port", lambda host="127.0.0.1": next(picks, None) or free_port())
        monkeypatch.setattr(temporal, "port_free", lambda host, port: True)
        plan = stack.plan_dev(config)
        assert plan.temporal is not None and plan.temporal.ui_port == taken
        run = stack._Run()
        async with stack._temporal(config, plan, run) as started:
            assert started is not None and started.temporal is not None
            assert started.temporal.ui_port != taken
            async with httpx.AsyncClient() as client:
                ui = await client.get(started.temporal.ui_url, timeout=30)
            assert ui.status_code == 200
    assert servers_using(tmp_path) == []
