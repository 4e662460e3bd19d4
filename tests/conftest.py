"""Shared fixtures: free ports, real backend processes, a real vmcp façade, a local web page.

Every process here is a real one on 127.0.0.1 and a port chosen at run time (other test runs
share the machine), and every wait polls a condition against a deadline instead of sleeping.
Helpers are handed out through fixtures, because the test directories are not packages.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml

from tests.support.processes import free_port, wait_until
from tests.support.temporal import FAST_TASK_RETRY, TemporalServer

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
VMCP = str(BIN / "vmcp")
START_TIMEOUT = 60.0  # generous: two cores shared with other test runs


# The files that take longest (a minute or more on two cores), longest first. The suite runs on
# xdist workers a file at a time, handed out in collection order: started last, one of these
# would keep a worker busy after the others have finished. Measured with `--durations=0`; the
# order need not be exact, only the long files early.
LONG_FILES_FIRST = (
    "tests/integration/test_resilience.py",
    "tests/e2e/test_real_clients.py",
    "tests/integration/test_durability.py",
    "tests/integration/test_composite.py",
    "tests/conformance/test_conformance.py",
    "tests/integration/test_forwarding.py",
    "tests/integration/test_cli_basic.py",
    "tests/integration/test_dev_stack.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long files first; within a file, the order as written (module fixtures are shared)."""
    rank = {name: position for position, name in enumerate(LONG_FILES_FIRST)}

    def place(item: pytest.Item) -> int:
        path = item.path.relative_to(ROOT).as_posix() if item.path.is_relative_to(ROOT) else ""
        return rank.get(path, len(rank))

    items.sort(key=place)  # stable: the rest keep their order


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def temporal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalServer]:
    """The suite's Temporal dev server, started once: modules share it on task queues of their own
    (a test that kills Temporal starts its own `TemporalServer`)."""
    server = TemporalServer(tmp_path_factory.mktemp("temporal"), extra_args=FAST_TASK_RETRY)
    anyio.run(server.start)
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- small helpers


def _answers_http(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2.0).status_code
    except httpx.TransportError:
        return None


def _stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM first (vmcp then closes its stdio children itself), SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    if proc.poll() is None:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


# --------------------------------------------------------------------------- fault server


def fault_stdio_backend(name: str, *, server_name: str | None = None, **extra: Any) -> dict[str, Any]:
    """A vmcp backend entry that runs the fault server as a stdio child."""
    return {
        "name": name,
        "transport": "stdio",
        "command": sys.executable,
        "args": ["-m", "tests.servers.fault_server", "--transport", "stdio", "--name", server_name or name],
        "cwd": str(ROOT),
        **extra,
    }


@dataclass
class FaultHttp:
    """The fault server over streamable HTTP in its own process, on a fixed port so it can be
    killed and started again where its clients expect it."""

    log_dir: Path
    name: str = "fault"
    legacy_only: bool = False
    modern_only: bool = False
    json_response: bool = False
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> FaultHttp:
        if self.proc is not None:  # a restart: the old process is gone (killed or crashed) or must go
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            self.kill()
        fresh_port = self.port == 0
        for _attempt in range(3):
            if fresh_port:
                self.port = free_port()
            self.starts += 1
            log = self.log_dir / f"fault-{self.name}-{self.port}-{self.starts}.log"
            args = [sys.executable, "-m", "tests.servers.fault_server", "--transport", "streamable-http"]
            args += ["--port", str(self.port), "--name", self.name]
            if self.legacy_only:
                args.append("--legacy-only")
            if self.modern_only:
                args.append("--modern-only")
            if self.json_response:
                args.append("--json-response")
            with log.open("wb") as out:
                self.proc = subprocess.Popen(
                    args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            proc = self.proc

            def up(proc: subprocess.Popen[bytes] = proc) -> bool | str:
                if proc.poll() is not None:
                    return "exited"
                return _answers_http(self.url) is not None

            outcome = wait_until(up, START_TIMEOUT, f"fault server on port {self.port}")
            if outcome is True:
                return self
            if not fresh_port:  # the same port is required; a second try after the old socket clears
                continue
        raise RuntimeError(f"fault server did not start on port {self.port}:\n{_tail(log)}")

    def kill(self) -> None:
        """kill -9: no goodbye to anybody."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, grace=3.0)


# --------------------------------------------------------------------------- vmcp façade


@dataclass
class Vmcp:
    """`vmcp serve` in its own process: the façade exactly as an operator runs it."""

    config_file: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    def status(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.base}/status", timeout=5.0).json())

    def backend_status(self, name: str) -> dict[str, Any]:
        return next(b for b in self.status()["backends"] if b["name"] == name)

    def log_tail(self) -> str:
        return _tail(self.log)

    def stop(self) -> None:
        _stop(self.proc)


@dataclass
class Processes:
    """Starts test processes and stops every one of them at teardown."""

    workdir: Path
    _fault: list[FaultHttp] = field(default_factory=list)
    _vmcp: list[Vmcp] = field(default_factory=list)

    def fault_http(
        self,
        name: str = "fault",
        *,
        legacy_only: bool = False,
        modern_only: bool = False,
        json_response: bool = False,
        port: int = 0,
    ) -> FaultHttp:
        """The fault server over streamable HTTP, on `port` or a free one; answering on return."""
        server = FaultHttp(
            self.workdir,
            name=name,
            legacy_only=legacy_only,
            modern_only=modern_only,
            json_response=json_response,
            port=port,
        )
        self._fault.append(server)
        return server.start()

    def vmcp(self, config: dict[str, Any], *, wait_ready: bool = True, filename: str = "vmcp.yaml") -> Vmcp:
        """Write `config` as YAML and serve it; by default wait for `/readyz` = 200."""
        config_file = self.workdir / filename
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        last_log = ""
        for attempt in range(3):
            port = free_port()
            log = self.workdir / f"{config_file.stem}-{port}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [VMCP, "serve", "--config", str(config_file), "--port", str(port)],
                    cwd=self.workdir,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            served = Vmcp(config_file, port, proc, log)
            self._vmcp.append(served)
            probe = "/readyz" if wait_ready else "/healthz"

            def up(proc: subprocess.Popen[bytes] = proc, url: str = served.base + probe) -> bool | str:
                if proc.poll() is not None:
                    return "exited"
                return _answers_http(url) == 200

            try:
                outcome = wait_until(up, START_TIMEOUT, f"vmcp {probe} on port {port}", interval=0.1)
            except TimeoutError as exc:
                raise RuntimeError(f"{exc}\n{_tail(log)}") from None
            if outcome is True:
                return served
            last_log = _tail(log)
            if "address already in use" not in last_log.lower() or attempt == 2:
                break
        raise RuntimeError(f"vmcp serve exited early:\n{last_log}")

    def close(self) -> None:
        for served in reversed(self._vmcp):
            served.stop()
        for server in self._fault:
            server.stop()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """Processes that live for one test."""
    processes = Processes(tmp_path)
    try:
        yield processes
    finally:
        processes.close()


@pytest.fixture(scope="module")
def module_procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    """Processes shared by the tests of one module (a façade is slow to start, fast to reuse)."""
    processes = Processes(tmp_path_factory.mktemp("procs"))
    try:
        yield processes
    finally:
        processes.close()


@pytest.fixture
def fault_http(procs: Processes) -> FaultHttp:
    """The fault server over streamable HTTP on a free port, already answering; stopped after the test."""
    return procs.fault_http("fault")


@pytest.fixture
def start_vmcp(procs: Processes) -> Callable[..., Vmcp]:
    """`start_vmcp(config_dict)` → a ready `vmcp serve` (`.url` is the MCP URL); stopped after the test."""
    return procs.vmcp


@pytest.fixture(name="free_port", scope="session")
def free_port_fixture() -> Callable[[], int]:
    return free_port


@pytest.fixture(name="fault_stdio_backend", scope="session")
def fault_stdio_backend_fixture() -> Callable[..., dict[str, Any]]:
    return fault_stdio_backend


@pytest.fixture(name="wait_until", scope="session")
def wait_until_fixture() -> Callable[..., Any]:
    return wait_until


# --------------------------------------------------------------------------- local web page


PAGE_MARKER = "vmcp-fetch-marker-7d1f"
PAGE_HTML = f"""<!doctype html>
<html><head><title>vmcp test page</title></head>
<body><h1>vmcp test page</h1>
<p>This page is served on 127.0.0.1 by the test suite. Marker: {PAGE_MARKER}.</p>
<ul><li>first item</li><li>second item</li></ul>
</body></html>
"""


@dataclass(frozen=True)
class WebPage:
    url: str
    marker: str


@pytest.fixture(scope="session")
def web_page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebPage]:
    """A static HTML page on a loopback port (mcp-server-fetch reaches it with --allow-private-ips)."""
    root = tmp_path_factory.mktemp("www")
    (root / "page.html").write_text(PAGE_HTML)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="web-page", daemon=True)
    thread.start()
    try:
        yield WebPage(f"http://127.0.0.1:{server.server_address[1]}/page.html", PAGE_MARKER)
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- git repository


@pytest.fixture(scope="session")
def git_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository with one commit, for mcp-server-git."""
    repo = tmp_path_factory.mktemp("repo")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Test Author",
        "GIT_AUTHOR_EMAIL": "author@example.com",
        "GIT_COMMITTER_NAME": "Test Author",
        "GIT_COMMITTER_EMAIL": "author@example.com",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(repo),
    }
    (repo / "README.md").write_text("hello from the test repository\n")
    for args in (["init", "-q", "-b", "main"], ["add", "README.md"], ["commit", "-q", "-m", "Initial commit"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
    return repo
