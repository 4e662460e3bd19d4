"""A Temporal worker for vmcp: the composite-tool workflows and the backend-call activity.

    python worker.py --config temporal-dev.yaml      (also: vmcp worker --config F)

The worker owns a backend pool (or shares the one `vmcp dev` passes in), so each backend's
connection is opened once and serves every activity. It waits for Temporal instead of failing
when Temporal is not up yet, and leaves cleanly on SIGINT/SIGTERM: in-flight activities get
`GRACEFUL_SHUTDOWN` to finish before they are cancelled (and then retried elsewhere).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any

import anyio
from temporalio.client import Client
from temporalio.worker import PollerBehaviorAutoscaling, UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.backend_tools import BackendToolActivities, step_policies
from activities.notify import ApproverNotifications
from vmcp.backends.pool import BackendPool
from vmcp.config.files import load_runnable
from vmcp.config.loading import ConfigError
from vmcp.config.models import VmcpConfig
from vmcp.ops import logs, telemetry
from vmcp.ops.audit import AuditLog
from vmcp.ops.event_loop import event_loop_options
from vmcp.ops.rate_limits import RateLimits
from vmcp.runs.payload_codec import KeyRingError, load_ring
from vmcp.runs.temporal_client import TemporalUnreachable, check_namespace, connect, runs_missing_keys

logger = logging.getLogger("vmcp.worker")

DEFAULT_CONFIG = "temporal-dev.yaml"
GRACEFUL_SHUTDOWN = timedelta(seconds=5)
"""How long in-flight activities may run on after a stop request before they are cancelled."""
_SHUTDOWN_GRACE = GRACEFUL_SHUTDOWN.total_seconds() + 15.0
_MAX_CONNECT_BACKOFF = 30.0
_PURE_MODULES = ("vmcp", "jinja2", "markupsafe", "jsonschema", "mcp_types", "yaml")


class WorkerFailed(Exception):
    """The Temporal worker stopped on a fatal error; the message says which."""


def workflow_classes() -> list[type]:
    """The workflows this worker runs: `workflows.WORKFLOWS`, the package's explicit list.

    The package may not define any yet; the worker then runs activities only (and does not poll
    for workflow tasks).
    """
    import workflows

    return list(getattr(workflows, "WORKFLOWS", []))


def workflow_runner(*, strict: bool = False) -> WorkflowRunner:
    """How the composite interpreter runs: in Temporal's sandbox (`strict`), or as workers run it.

    Strict: the interpreter is re-imported inside the sandbox for every run, so a read of the
    clock, randomness or I/O from workflow code fails at once. The replay test runs every recorded
    history that way (and as workers run it), so a non-deterministic change fails CI.
    Workers: the interpreter imported once, unsandboxed. The sandbox protects only code it
    re-imports, and that re-import cost about 5 ms of every run's first workflow task (12 → 6.6 ms
    measured on the dev stack); passing the interpreter through left the sandbox guarding nothing
    of ours while still costing ~3 ms a run. Either way the pure vmcp modules (contracts, composite
    model, templating) are imported once per worker.
    """
    if not strict:
        return UnsandboxedWorkflowRunner()
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*_PURE_MODULES)
    return SandboxedWorkflowRunner(restrictions=restrictions)


def build_worker(client: Client, config: VmcpConfig, pool: BackendPool) -> Worker:
    activities = BackendToolActivities(
        pool, step_policies(config.aggregation), AuditLog(config.audit.file, config.base_dir)
    )
    return Worker(
        client,
        task_queue=config.temporal.task_queue,
        workflows=workflow_classes(),
        activities=[activities.call_backend_tool, ApproverNotifications(config).notify_approvers],
        workflow_runner=workflow_runner(),
        workflow_task_poller_behavior=PollerBehaviorAutoscaling(),
        activity_task_poller_behavior=PollerBehaviorAutoscaling(),
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        # a run whose worker died waits this long (not the default 10 s) before its next
        # workflow task goes to any other worker
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=5),
    )


async def run_worker(
    config: VmcpConfig,
    *,
    pool: BackendPool | None = None,
    stop: anyio.Event | None = None,
    ready: anyio.Event | None = None,
    on_client: Callable[[Client], None] | None = None,
) -> None:
    """Run until `stop` is set (or the caller cancels), then shut the worker down gracefully.

    `on_client` receives the worker's Temporal client once connected: a façade in the same
    process that starts runs with it gets eager workflow start (the run's first task goes
    straight to this worker instead of through the server's matching).

    With `pool`, the caller owns the backend pool (`vmcp dev` shares one with the façade);
    otherwise the worker opens its own. `ready` is set once the worker polls its task queue.
    Raises WorkerFailed when the Temporal worker dies on its own.
    """
    stop = stop if stop is not None else anyio.Event()
    telemetry.setup(config.telemetry.otlp_endpoint, config.telemetry.service_name)
    async with AsyncExitStack() as stack:
        stack.callback(telemetry.shutdown)  # flush the last spans
        if pool is None:
            pool = await stack.enter_async_context(BackendPool(config.backends, config.base_dir))
            limits = RateLimits.from_config(config.limits)
            if limits is not None and limits.limits_backends:
                pool.limit_with(limits.backend_refusal)  # steps count against their backend's limit
        client = await _connect_with_backoff(config, stop)
        if client is None:
            return
        ring = load_ring(config)
        if ring is not None and (missing := await runs_missing_keys(client, ring.keys)):
            # replaying those runs would fail task after task: refuse now, saying which key and runs
            named = "; ".join(f"key {key!r}: runs {', '.join(runs)}" for key, runs in missing.items())
            raise WorkerFailed(
                f"open runs were encrypted with keys missing from temporal.encryption's ring ({named}); "
                "put those keys back in the ring"
            )
        if on_client is not None:
            on_client(client)
        worker = build_worker(client, config, pool)
        await _run_until_stopped(worker, stop, ready)
        logger.info("worker stopped")


async def _connect_with_backoff(config: VmcpConfig, stop: anyio.Event) -> Client | None:
    """Connect, waiting out a Temporal that is down or still starting; None if stopped meanwhile."""
    delay = 1.0
    while not stop.is_set():
        try:
            client = await connect(config)
            await check_namespace(client, config.temporal.namespace)
            return client
        except TemporalUnreachable as exc:
            logger.warning("%s; retrying in %gs", exc, delay)
        with anyio.move_on_after(delay):
            await stop.wait()
        delay = min(delay * 2, _MAX_CONNECT_BACKOFF)
    return None


async def _run_until_stopped(worker: Worker, stop: anyio.Event, ready: anyio.Event | None) -> None:
    failure: list[BaseException] = []

    async with anyio.create_task_group() as group:

        async def run() -> None:
            # Shielded: the SDK's own shutdown sequence must not be interrupted by the
            # cancellation that ends the host task; `worker.shutdown()` below ends it instead.
            with anyio.CancelScope(shield=True):
                try:
                    await worker.run()
                except Exception as exc:
                    failure.append(exc)
            group.cancel_scope.cancel()

        group.start_soon(run, name="temporal-worker")
        if ready is not None:
            ready.set()
        try:
            await stop.wait()
        finally:
            with anyio.move_on_after(_SHUTDOWN_GRACE, shield=True):
                await worker.shutdown()
    if failure:
        raise WorkerFailed(f"the Temporal worker stopped: {failure[0]}") from failure[0]


def describe(config: VmcpConfig) -> str:
    temporal = config.temporal
    return f"task queue {temporal.task_queue!r} on {temporal.address} (namespace {temporal.namespace})"


def run_worker_until_interrupted(config: VmcpConfig) -> int:
    """Run a worker in this process until SIGINT/SIGTERM; 0 on a clean stop, 1 on failure.

    A second signal while shutting down gives up on in-flight activities and exits at once.
    """
    try:
        load_ring(config)  # before anything starts: without its keys a worker cannot read runs
    except KeyRingError as exc:
        print(f"vmcp worker: {exc}", file=sys.stderr)
        return 1

    async def main() -> None:
        stop = anyio.Event()
        ready = anyio.Event()
        async with anyio.create_task_group() as group:

            async def on_signals() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        if stop.is_set():
                            print("vmcp worker: forced stop", file=sys.stderr, flush=True)
                            _flush_and_exit(130)
                        print(
                            f"vmcp worker: {signal.Signals(signum).name}, stopping (again to force)",
                            file=sys.stderr,
                            flush=True,
                        )
                        stop.set()

            async def announce() -> None:
                await ready.wait()
                print(f"vmcp worker: polling {describe(config)}", flush=True)

            group.start_soon(on_signals)
            group.start_soon(announce)
            await run_worker(config, stop=stop, ready=ready)
            group.cancel_scope.cancel()

    try:
        anyio.run(main, backend_options=event_loop_options())
    except WorkerFailed as exc:
        print(f"vmcp worker: {exc}", file=sys.stderr)
        return 1
    return 0


def _flush_and_exit(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="worker.py", description="Run a vmcp Temporal worker (composite-tool workflows and activities)."
    )
    parser.add_argument("--config", help=f"configuration file (default: $VMCP_CONFIG or {DEFAULT_CONFIG})")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    parser.add_argument("--log-format", choices=["text", "json"], help="default: $VMCP_LOG_FORMAT, else text")
    args = parser.parse_args(argv)
    logs.configure(logging.DEBUG if args.verbose else logging.WARNING, args.log_format)
    if not args.verbose:
        logging.getLogger("vmcp").setLevel(logging.INFO)
    path = args.config or os.environ.get("VMCP_CONFIG") or DEFAULT_CONFIG
    try:
        config = load_runnable(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    return run_worker_until_interrupted(config)


if __name__ == "__main__":
    # SIGTERM before the event loop's handler is installed still means "stop cleanly"
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = main()
    except KeyboardInterrupt:
        code = 0
    # os._exit: the Temporal client's native runtime can crash at interpreter teardown
    _flush_and_exit(code)
