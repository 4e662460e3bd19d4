"""Processes the tests start: a `Child` (its output in a log file, killed with SIGKILL when a
test wants no goodbye), a `Process` whose output lines a test reads as they come, a `DevStack`
(`vmcp dev`), and one way of waiting for each kind of test (`wait_until`, `poll`).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio

T = TypeVar("T")
DEADLINE = 90.0  # generous: two cores shared with other test runs


def _port_slice() -> range:
    """This test process's ports: below the kernel's ephemeral range, so no outgoing connection
    on the machine is given one between our pick and the server's bind, and a slice of their own
    for each pytest-xdist worker, so two workers never pick the same one."""
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    low = 10000
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    size = (ephemeral - low) // max(workers, 1)
    return range(low + worker * size, low + (worker + 1) * size)


_PORTS = _port_slice()
_next_port = _PORTS.start + (os.getpid() * 7919) % len(_PORTS)
_port_lock = threading.Lock()


def free_port() -> int:
    """A port nobody listens on right now, never the same twice in a row from this process (the
    ports a test picks are bound later, all at once)."""
    global _next_port
    with _port_lock:
        for _ in range(len(_PORTS)):
            port, _next_port = _next_port, _next_port + 1
            if _next_port >= _PORTS.stop:
                _next_port = _PORTS.start
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no free port in {_PORTS}")


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Call `condition` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


async def poll(condition: Callable[[], Awaitable[T]], what: str, timeout: float = DEADLINE) -> T:
    """Await `condition` until it returns something truthy; fail naming `what` at the deadline."""
    with anyio.move_on_after(timeout):
        while True:
            value = await condition()
            if value:
                return value
            await anyio.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


@dataclass
class Child:
    """One process, its output in a log file; killed with SIGKILL when asked."""

    args: list[str]
    log: Path
    cwd: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.args,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """kill -9: no shutdown, no goodbye to Temporal or the backend."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=15)
        self.kill()


class Process:
    """A child process whose output lines are collected as they arrive (stdout and stderr apart);
    `kill` takes its whole process group (the stdio backends and Temporal it started, too)."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.popen = subprocess.Popen(
            args,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._pumps = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, self.out), daemon=True),
            threading.Thread(target=self._pump, args=(self.popen.stderr, self.err), daemon=True),
        ]
        for pump in self._pumps:
            pump.start()

    @staticmethod
    def _pump(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def text(self) -> str:
        return "".join(self.out) + "".join(self.err)

    def wait_for(self, needle: str, timeout: float = DEADLINE) -> None:
        def seen() -> bool:
            if self.popen.poll() is not None and needle not in self.text():
                raise AssertionError(f"exited with {self.popen.returncode} before {needle!r}:\n{self.text()}")
            return needle in self.text()

        wait_until(seen, timeout, f"{needle!r} in the output of {self.popen.args!r}")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60) -> int:
        self.popen.send_signal(signum)
        code = self.popen.wait(timeout)
        for pump in self._pumps:
            pump.join(5)
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)


class DevStack(Process):
    """`vmcp dev --config FILE`, as a developer runs it: Temporal, worker and façade in one command."""

    START_DEADLINE = 120.0  # Temporal, the worker, the backends and the façade, on two shared cores

    def __init__(self, config_file: Path) -> None:
        super().__init__(
            [str(Path(sys.executable).parent / "vmcp"), "dev", "--config", str(config_file)], config_file.parent
        )

    def wait_ready(self) -> tuple[str, str | None]:
        """The MCP URL and the Web UI URL (None when headless), once `vmcp dev` says it is ready."""

        def ready() -> bool:
            if self.popen.poll() is not None:
                raise AssertionError(f"vmcp dev exited with {self.popen.returncode}:\n{self.text()}")
            return "Press Ctrl-C" in "".join(self.out)

        wait_until(ready, self.START_DEADLINE, "vmcp dev to print that it is ready")
        out = "".join(self.out)
        mcp = re.search(r"MCP endpoint:\s+(http://\S+)", out)
        ui = re.search(r"Temporal Web UI:\s+(http://\S+)", out)
        assert mcp, out
        return mcp.group(1), ui.group(1) if ui else None

    def temporal_pid(self) -> int:
        """The `temporal server start-dev` child of this process."""
        for task in Path(f"/proc/{self.popen.pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"start-dev" in cmdline:
                    return int(pid)
        raise AssertionError("vmcp dev has no `temporal server start-dev` child")

    def shut_down(self) -> None:
        """Ctrl-C, as a developer stops it; the whole process group killed if it lingers."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        for pump in self._pumps:
            pump.join(5)
