"""`vmcp dev`: the Temporal dev server, a worker and the façade, supervised as one command.

Temporal runs as a child process (`vmcp.temporal_dev`); the worker and the façade run in this
process and share one backend pool, so each stdio backend is spawned once. vmcp owns SIGINT and
SIGTERM and stops the parts in order: the façade first (no new requests), then the worker
(in-flight activities get their grace period), then Temporal. A second signal stops at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import anyio
import httpx
import uvicorn
from starlette.types import ASGIApp

from vmcp.backends.pool import BackendPool
from vmcp.config.models import VmcpConfig
from vmcp.dev.temporal import (
    START_TIMEOUT,
    DevServerPlan,
    DevStackError,
    TemporalDevServer,
    find_temporal_binary,
    free_port,
    plan_dev_server,
    port_free,
    url_host,
)
from vmcp.ops.event_loop import event_loop_options
from vmcp.pipeline.app import StartupRefused, create_app, serve_directory
from vmcp.pipeline.http_server import uvicorn_config
from vmcp.pipeline.tokens import refuses_anonymous
from vmcp.runs.temporal_client import TemporalUnreachable, wait_until_reachable

__all__ = ["DevPlan", "DevStackError", "find_temporal_binary", "plan_dev", "run_dev"]

FACADE_START_TIMEOUT = 60.0  # the façade first waits (up to 30 s) for the backends to connect
FACADE_STOP_TIMEOUT = 10.0
_FACADE_GRACEFUL_SECONDS = 3  # open MCP streams may hold the façade's shutdown this long, no longer
_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


@dataclass(frozen=True)
class DevPlan:
    """What `vmcp dev` will run, decided from the configuration before anything starts."""

    temporal: DevServerPlan | None  # None: use the Temporal at `address`, started by someone else
    address: str
    facade_host: str
    facade_port: int
    facade_path: str = "/mcp"

    @property
    def mcp_url(self) -> str:
        return f"http://{url_host(self.client_host)}:{self.facade_port}{self.facade_path}"

    @property
    def client_host(self) -> str:
        """Where a local client reaches the façade (a wildcard listen address is not one)."""
        return _WILDCARDS.get(self.facade_host, self.facade_host)

    @property
    def ui_url(self) -> str | None:
        return self.temporal.ui_url if self.temporal is not None else None


def plan_dev(config: VmcpConfig, *, binary: str | None = None) -> DevPlan:
    server = config.server
    port = server.port or free_port(_WILDCARDS.get(server.host, server.host))
    codec = (
        f"http://{url_host(_WILDCARDS.get(server.host, server.host))}:{port}/codec"
        if config.temporal.encryption
        else None
    )
    temporal = plan_dev_server(config, binary=binary, codec_endpoint=codec)
    return DevPlan(temporal, config.temporal.address, server.host, port, server.path)


def run_dev(config: VmcpConfig) -> int:
    """Run the whole stack until SIGINT/SIGTERM: 0 after a clean stop, 1 when it cannot run."""
    try:
        _ensure_key_ring(config)
        return anyio.run(_run_dev, config, backend_options=event_loop_options())
    except DevStackError as exc:
        print(f"vmcp dev: {exc}", file=sys.stderr, flush=True)
        return 1


def _ensure_key_ring(config: VmcpConfig) -> None:
    """`vmcp dev` encrypts run data out of the box: a key file that `temporal.encryption` names
    and that does not exist yet is made (the façade, the worker and the CLI only ever read it)."""
    from vmcp.runs.payload_codec import KeyRing, KeyRingError, load_ring, write_key_file

    settings = config.temporal.encryption
    if settings is not None and settings.key_file is not None:
        path = config.resolve_path(settings.key_file)
        if not path.exists():
            write_key_file(path, KeyRing.new())
            print(f"vmcp dev: made a key ring for run data at {path} (keep it: runs need it to be read)", flush=True)
    try:
        load_ring(config)
    except KeyRingError as exc:
        raise DevStackError(str(exc)) from None


# --------------------------------------------------------------------------- supervision


@dataclass
class _Run:
    stop: anyio.Event = field(default_factory=anyio.Event)
    error: str | None = None
    temporal: TemporalDevServer | None = None

    def fail(self, message: str) -> None:
        """Stop everything, because of `message` (ignored once a stop is under way)."""
        if self.error is None and not self.stop.is_set():
            self.error = message
        self.stop.set()


async def _run_dev(config: VmcpConfig) -> int:
    run = _Run()
    async with anyio.create_task_group() as root:
        root.start_soon(_relay_signals, run)  # first: no child may start before we own the signals
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


# A port vmcp dev or Temporal picked itself can be taken between the pick and the bind (by any
# outgoing connection on the machine): then the dev server is started again, on fresh ports.
_PORT_RACE_ATTEMPTS = 3


@contextlib.asynccontextmanager
async def _temporal(config: VmcpConfig, plan: DevPlan, run: _Run) -> AsyncIterator[DevPlan | None]:
    """Temporal up and answering for the body (started here when the address is a loopback
    one, and stopped on the way out); yields the plan it runs on, or None when a stop request
    came first."""
    if plan.temporal is None:
        _check_facade_port(plan, config)
        print(f"vmcp dev: using the Temporal server at {plan.address} (not started by vmcp dev)", flush=True)

        async def reachable() -> None:
            try:
                await wait_until_reachable(config, START_TIMEOUT)
            except TemporalUnreachable as exc:
                raise DevStackError(str(exc)) from None

        yield plan if await _until_stopped(run, reachable) else None
        return
    for attempt in range(1, _PORT_RACE_ATTEMPTS + 1):
        server = TemporalDevServer(plan.temporal, config)
        run.temporal = server
        lost_a_race = False
        try:
            try:
                await server.prepare()
                _check_facade_port(plan, config)
                await server.spawn()
                print(f"vmcp dev: starting Temporal on {plan.address} (data: {plan.temporal.db_file})", flush=True)
                up = await _until_stopped(run, server.wait_ready)
            except* DevStackError:
                if attempt == _PORT_RACE_ATTEMPTS or not server.lost_a_port_race():
                    raise
                lost_a_race = True
        except BaseException:
            with anyio.CancelScope(shield=True):
                await server.stop()
            raise
        if lost_a_race:
            with anyio.CancelScope(shield=True):
                await server.stop()
            print("vmcp dev: a port Temporal was given was taken meanwhile; starting it again", flush=True)
            again = plan_dev_server(
                config, binary=plan.temporal.command[0], codec_endpoint=plan.temporal.codec_endpoint
            )
            plan = replace(plan, temporal=again)
            assert plan.temporal is not None
            continue
        try:
            yield plan if up else None
        finally:
            with anyio.CancelScope(shield=True):
                await server.stop()
        return


async def _run_stack(config: VmcpConfig, plan: DevPlan, run: _Run) -> None:
    from worker import WorkerFailed, describe, run_worker

    async with _temporal(config, plan, run) as started:
        if started is None:
            return
        plan = started
        async with BackendPool(config.backends, config.base_dir) as pool, anyio.create_task_group() as group:
            app = create_app(config, pool)
            if config.temporal.dev_server.demo_site:
                serve_directory(app, "/demo", config.resolve_path(config.temporal.dev_server.demo_site))
            if not await _until_stopped(run, partial(_prepare, app)):
                return
            facade = _facade(app, plan, config)
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
                    await run_worker(
                        with_web_ui(config, plan.ui_url),
                        pool=pool,
                        stop=worker_stop,
                        ready=worker_ready,
                        on_client=app.state.facade.runs.orchestrator.use_client,  # type: ignore[attr-defined]
                    )
                except WorkerFailed as exc:
                    run.fail(str(exc))
                finally:
                    worker_done.set()

            async def watch_temporal() -> None:
                if run.temporal is not None:
                    await run.temporal.wait_exit()
                    run.fail(run.temporal.exit_message())

            async def announce() -> None:
                health = f"http://{url_host(plan.client_host)}:{plan.facade_port}/healthz"
                if not await _wait_http_ok(health, FACADE_START_TIMEOUT, run.stop):
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

            # In order: no new requests, then no new tasks; Temporal stops on the way out.
            facade.should_exit = True
            with anyio.move_on_after(FACADE_STOP_TIMEOUT):
                await facade_done.wait()
            facade_scope.cancel()
            worker_stop.set()
            await worker_done.wait()
            group.cancel_scope.cancel()


# --------------------------------------------------------------------------- the façade


class _FacadeServer(uvicorn.Server):
    """Uvicorn without its own signal handlers: `vmcp dev` owns SIGINT/SIGTERM and stops the
    façade by setting `should_exit`, before the worker and Temporal. (`vmcp.app.serve` lets
    uvicorn take the signals, which suits `vmcp serve` but would stop the façade behind our back
    and raise each signal a second time when it is done.)"""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


async def _prepare(app: ASGIApp) -> None:
    """Backends connected and the catalogue built before serving, as `vmcp serve` does: a
    refusal (an unresolved clash under `manual`) is then a clear error, not a failed lifespan."""
    try:
        await app.state.prepare()  # type: ignore[attr-defined]
    except StartupRefused as exc:
        raise DevStackError(f"the façade will not start:\n{exc}") from None


def _facade(app: ASGIApp, plan: DevPlan, config: VmcpConfig) -> _FacadeServer:
    return _FacadeServer(
        uvicorn_config(
            app,
            config.server,
            host=plan.facade_host,
            port=plan.facade_port,
            timeout_graceful_shutdown=_FACADE_GRACEFUL_SECONDS,
        )
    )


def _check_facade_port(plan: DevPlan, config: VmcpConfig) -> None:
    reason = refuses_anonymous(config.auth, plan.facade_host or "0.0.0.0")
    if reason is not None:
        raise DevStackError(reason)
    if not port_free(plan.facade_host or "0.0.0.0", plan.facade_port):
        raise DevStackError(
            f"the façade's port {plan.facade_port} (server.port) is already in use on {plan.facade_host} "
            "(another `vmcp dev` or `vmcp serve`?); choose another one"
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


def with_web_ui(config: VmcpConfig, url: str | None) -> VmcpConfig:
    """`config` with `temporal.web_ui_url` defaulted to the Web UI `vmcp dev` started."""
    if url is None or config.temporal.web_ui_url:
        return config
    return config.model_copy(update={"temporal": config.temporal.model_copy(update={"web_ui_url": url})})
