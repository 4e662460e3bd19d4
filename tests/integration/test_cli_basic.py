"""`vmcp validate` and `vmcp tools` as an operator runs them: real files, real processes, exit codes.

Every invocation is a fresh `vmcp` process; besides its exit code, none may print a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from mcp import Client

from tests.servers.fault_server import create_server

VMCP = str(Path(sys.executable).parent / "vmcp")
ROOT = Path(__file__).resolve().parents[2]

TIME = {"transport": "stdio", "command": "mcp-server-time", "args": ["--local-timezone", "UTC"]}
GHOST = {"name": "ghost", "transport": "stdio", "command": "/nonexistent/bin/mcp-ghost-server"}
# nothing listens on port 1 of loopback: a backend that is down, in a valid config
UNREACHABLE = {
    "name": "unreachable",
    "transport": "streamable-http",
    "url": "http://127.0.0.1:1/mcp",
    "connect_timeout": "2s",
}


@dataclass
class Run:
    code: int
    out: str
    err: str


def vmcp(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Run:
    done = subprocess.run(
        [VMCP, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    run = Run(done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in run.err, run.err
    assert "Traceback" not in run.out, run.out
    return run


def write(directory: Path, config: Any, name: str = "vmcp.yaml") -> Path:
    path = directory / name
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False))
    return path


def fault_stdio(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "transport": "stdio",
        "command": sys.executable,
        "args": ["-m", "tests.servers.fault_server", "--transport", "stdio", "--name", name],
        "cwd": str(ROOT),
    }


# --------------------------------------------------------------------------- validate


@pytest.mark.integration
def test_validate_valid_file(tmp_path: Path) -> None:
    config = write(tmp_path, {"backends": [{"name": "time", **TIME}]})
    run = vmcp("validate", str(config), cwd=tmp_path)
    assert run.code == 0, run.err
    assert "valid" in run.out
    assert "1 reachable" in run.out


def test_validate_valid_file_offline(tmp_path: Path) -> None:
    config = write(tmp_path, {"backends": [{"name": "time", **TIME}]})
    run = vmcp("validate", "--offline", str(config), cwd=tmp_path)
    assert run.code == 0, run.err
    assert "valid" in run.out


INVALID = {
    "unknown-key": (
        "backends:\n  - name: time\n    transport: stdio\n    command: mcp-server-time\n    tiemout: 5s\n",
        ["backends[0].tiemout", "unknown key", "`timeout`", "line 5"],
    ),
    "nested-unknown-key": (
        "backends:\n  - {name: time, transport: stdio, command: mcp-server-time}\n"
        "aggregation:\n  backends:\n    time:\n      overides: {}\n",
        ["aggregation.backends.time.overides", "unknown key", "line 6"],
    ),
    "bad-transport": (
        "backends:\n  - {name: time, transport: websocket, command: mcp-server-time}\n",
        ["backends[0].transport", "websocket"],
    ),
    "duplicate-backend": (
        "backends:\n"
        "  - {name: time, transport: stdio, command: mcp-server-time}\n"
        "  - {name: time, transport: stdio, command: mcp-server-time}\n",
        ["backends[1].name", "duplicate", "'time'"],
    ),
    "http-without-url": (
        "backends:\n  - {name: docs, transport: streamable-http}\n",
        ["backends[0]", "url"],
    ),
    "bad-duration": (
        "backends:\n  - {name: docs, transport: streamable-http, url: 'http://127.0.0.1:1/mcp', timeout: soon}\n",
        ["backends[0].timeout", "soon"],
    ),
    "unknown-priority-backend": (
        "backends:\n  - {name: time, transport: stdio, command: mcp-server-time}\n"
        "aggregation: {conflict_resolution: priority, priority: [tmie]}\n",
        ["aggregation.priority[0]", "'tmie'", "'time'"],
    ),
    "bad-strategy": (
        "aggregation: {conflict_resolution: first}\n",
        ["aggregation.conflict_resolution", "first"],
    ),
    "not-yaml": ("backends: [\n  - {name: x\n", ["not valid YAML"]),
}


@pytest.mark.parametrize(("text", "expected"), list(INVALID.values()), ids=list(INVALID))
def test_validate_invalid_file_names_the_key(tmp_path: Path, text: str, expected: list[str]) -> None:
    config = write(tmp_path, text)
    run = vmcp("validate", str(config), cwd=tmp_path)
    assert run.code == 1, run
    for fragment in expected:
        assert fragment in run.err, f"{fragment!r} not in:\n{run.err}"


def test_validate_missing_file(tmp_path: Path) -> None:
    run = vmcp("validate", str(tmp_path / "absent.yaml"), cwd=tmp_path)
    assert run.code == 1
    assert "cannot read" in run.err


def _two_time_servers_manual() -> dict[str, Any]:
    return {
        "backends": [{"name": "time_a", **TIME}, {"name": "time_b", **TIME}],
        "aggregation": {"conflict_resolution": "manual"},
    }


@pytest.mark.integration
def test_validate_unresolved_manual_clash(tmp_path: Path) -> None:
    config = write(tmp_path, _two_time_servers_manual())
    run = vmcp("validate", str(config), cwd=tmp_path)
    assert run.code == 1, run
    assert "aggregation.backends.time_b" in run.err
    assert "get_current_time" in run.err and "convert_time" in run.err
    assert "overrides" in run.err  # says how to resolve it


@pytest.mark.integration
def test_validate_manual_clash_resolved_by_overrides(tmp_path: Path) -> None:
    config = _two_time_servers_manual()
    config["aggregation"]["backends"] = {
        "time_b": {"overrides": {"get_current_time": {"name": "b_now"}, "convert_time": {"name": "b_convert"}}}
    }
    run = vmcp("validate", str(write(tmp_path, config)), cwd=tmp_path)
    assert run.code == 0, run.err
    assert "4 backend tools" in run.out


def test_validate_offline_contacts_no_backend(tmp_path: Path) -> None:
    # a clash that only the backends' real listings reveal, and a backend nobody answers for
    config = _two_time_servers_manual()
    config["backends"].append(UNREACHABLE)
    run = vmcp("validate", "--offline", str(write(tmp_path, config)), cwd=tmp_path)
    assert run.code == 0, run.err
    assert "not contacted" in run.out
    assert "unreachable" not in run.err


def test_validate_refuses_a_program_that_does_not_exist(tmp_path: Path) -> None:
    """A stdio backend's program is checked like every file a config names: a config that cannot
    start is invalid, named by its key path (offline too: nothing is contacted to know it)."""
    config = {"backends": [{"name": "time", **TIME}, GHOST]}
    for offline in (["--offline"], []):
        run = vmcp("validate", *offline, str(write(tmp_path, config)), cwd=tmp_path)
        assert run.code == 1, run
        assert "backends[1].command: no such program" in run.err and "Traceback" not in run.err


@pytest.mark.integration
def test_validate_online_warns_about_an_unreachable_backend(tmp_path: Path) -> None:
    config = {"backends": [{"name": "time", **TIME}, UNREACHABLE]}
    run = vmcp("validate", "--timeout", "15", str(write(tmp_path, config)), cwd=tmp_path)
    assert run.code == 0, run.err
    assert "backends.unreachable" in run.err
    assert "1 reachable" in run.out


# --------------------------------------------------------------------------- tools


def _table_rows(out: str) -> list[list[str]]:
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines and lines[0].split()[:3] == ["NAME", "BACKEND", "ORIGINAL"], out
    return [line.split()[:3] for line in lines[1:]]


async def _fault_tool_names() -> list[str]:
    """The fault server's own tools, listed in-process with the SDK client."""
    async with Client(create_server()) as client:
        return [tool.name for tool in (await client.list_tools()).tools]


@pytest.mark.integration
def test_tools_prints_name_backend_and_original(tmp_path: Path) -> None:
    config = write(tmp_path, {"backends": [{"name": "time", **TIME}, fault_stdio("fault")]})
    run = vmcp("tools", "--config", str(config), cwd=tmp_path)
    assert run.code == 0, run.err
    rows = _table_rows(run.out)
    assert ["time_get_current_time", "time", "get_current_time"] in rows
    assert ["time_convert_time", "time", "convert_time"] in rows
    assert ["fault_echo", "fault", "echo"] in rows
    assert ["fault_record_meta", "fault", "record_meta"] in rows
    assert len(rows) == 2 + len(anyio.run(_fault_tool_names)), "every tool of both backends, nothing else"
    assert "Echo the text back" in run.out  # the description column


@pytest.mark.integration
def test_tools_json_with_overrides_and_filters(tmp_path: Path) -> None:
    config = {
        "backends": [{"name": "time", **TIME}, fault_stdio("fault")],
        "aggregation": {
            "conflict_resolution": "manual",
            "backends": {
                "time": {"overrides": {"get_current_time": {"name": "now", "description": "Now, somewhere"}}},
                "fault": {"include": ["echo", "add", "crash"], "exclude": ["crash"]},
            },
        },
    }
    run = vmcp("tools", "--json", "--config", str(write(tmp_path, config)), cwd=tmp_path)
    assert run.code == 0, run.err
    rows = json.loads(run.out)
    by_name = {row["name"]: row for row in rows}
    assert sorted(by_name) == ["add", "convert_time", "echo", "now"]
    assert by_name["now"]["backend"] == "time"
    assert by_name["now"]["original"] == "get_current_time"
    assert by_name["now"]["description"] == "Now, somewhere"
    assert by_name["echo"]["backend"] == "fault" and by_name["echo"]["original"] == "echo"
    assert by_name["add"]["input_schema"]["properties"].keys() == {"a", "b"}


@pytest.mark.integration
def test_tools_reads_vmcp_config_from_the_environment(tmp_path: Path) -> None:
    config = write(tmp_path, {"backends": [{"name": "time", **TIME}]}, name="elsewhere.yaml")
    run = vmcp("tools", cwd=tmp_path, env={"VMCP_CONFIG": str(config)})
    assert run.code == 0, run.err
    assert ["time_get_current_time", "time", "get_current_time"] in _table_rows(run.out)


@pytest.mark.integration
def test_tools_with_an_unreachable_backend_is_partial(tmp_path: Path) -> None:
    config = write(tmp_path, {"backends": [{"name": "time", **TIME}, GHOST]})
    run = vmcp("tools", "--timeout", "15", "--config", str(config), cwd=tmp_path)
    assert run.code == 2, run  # printed, but incomplete: a script can tell
    assert ["time_convert_time", "time", "convert_time"] in _table_rows(run.out)
    assert "ghost" in run.err


def test_tools_with_an_invalid_file(tmp_path: Path) -> None:
    config = write(tmp_path, INVALID["unknown-key"][0])
    run = vmcp("tools", "--config", str(config), cwd=tmp_path)
    assert run.code == 1
    assert "backends[0].tiemout" in run.err


@pytest.mark.integration
def test_tools_into_a_closed_pipe_exits_without_a_traceback(tmp_path: Path) -> None:
    """`vmcp tools | head -1`: the reader is gone before the table is written."""
    config = write(tmp_path, {"backends": [{"name": "time", **TIME}]})
    proc = subprocess.Popen(
        [VMCP, "tools", "--config", str(config)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # nobody will read the output
    err = proc.stderr.read().decode(errors="replace")
    proc.wait(timeout=120)
    assert "Traceback" not in err, err
