"""How vmcp connects to Temporal: address, namespace, TLS or API key, decided in one place.

Everything that talks to the Temporal frontend (the worker, `vmcp dev`, and the façade and CLI
when they start, query and signal runs) connects through `connect`, and a Temporal that is not
there is `TemporalUnreachable` with a one-line reason (not the SDK's Rust error chain).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable
from datetime import timedelta

import anyio
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client, Interceptor
from temporalio.converter import DataConverter
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from vmcp.backends.common import BackendUnavailable, expand_env
from vmcp.composite.contracts import COMPOSITE_WORKFLOW
from vmcp.config.models import VmcpConfig
from vmcp.ops import telemetry
from vmcp.runs.errors import TemporalUnreachable
from vmcp.runs.payload_codec import KEY_ID, codec_for

__all__ = [
    "TemporalUnreachable",
    "check_namespace",
    "connect",
    "describe_error",
    "runs_missing_keys",
    "wait_until_reachable",
]

logger = logging.getLogger(__name__)

CONNECT_ATTEMPT_TIMEOUT = 10.0
"""Seconds one connection attempt may take (a black-holed address would otherwise hang)."""
_RPC_TIMEOUT = timedelta(seconds=5)


async def connect(config: VmcpConfig) -> Client:
    """One connection attempt to `temporal.address` / `temporal.namespace`.

    Raises TemporalUnreachable (with a one-line reason, not the transport's error chain) when
    nothing answers there.
    """
    temporal = config.temporal
    codec = codec_for(config)  # KeyRingError (not "unreachable"): a broken key ring is no reason to retry
    converter = dataclasses.replace(DataConverter.default, payload_codec=codec) if codec else DataConverter.default
    try:
        with anyio.fail_after(CONNECT_ATTEMPT_TIMEOUT):
            # with tracing on, runs and their activities join the trace of the call that started them
            interceptors: list[Interceptor] = []
            if telemetry.enabled():
                from temporalio.contrib.opentelemetry import TracingInterceptor  # only with tracing on

                interceptors.append(TracingInterceptor())
            return await Client.connect(
                temporal.address,
                namespace=temporal.namespace,
                interceptors=interceptors,
                tls=_tls(config),
                api_key=_api_key(config),
                data_converter=converter,
            )
    except TimeoutError:
        raise TemporalUnreachable(
            f"Temporal at {temporal.address} did not answer within {CONNECT_ATTEMPT_TIMEOUT:g}s"
        ) from None
    except (RuntimeError, RPCError, OSError) as exc:
        raise TemporalUnreachable(f"Temporal at {temporal.address} is not reachable: {describe_error(exc)}") from None


def _api_key(config: VmcpConfig) -> str | None:
    if config.temporal.api_key is None:
        return None
    try:
        return expand_env({"api_key": config.temporal.api_key})["api_key"]
    except BackendUnavailable as exc:  # an unset ${VARIABLE}
        raise TemporalUnreachable(f"temporal.api_key: {exc}") from None


def _tls(config: VmcpConfig) -> TLSConfig | bool:
    settings = config.temporal.tls
    if settings is None:
        return bool(config.temporal.api_key)  # Temporal Cloud's API keys go over TLS only

    def read(name: str | None) -> bytes | None:
        return config.resolve_path(name).read_bytes() if name else None

    try:
        return TLSConfig(
            server_root_ca_cert=read(settings.server_ca_file),
            client_cert=read(settings.client_cert_file),
            client_private_key=read(settings.client_key_file),
            domain=settings.server_name,
        )
    except OSError as exc:
        raise TemporalUnreachable(f"temporal.tls: cannot read {exc.filename}: {exc.strerror}") from None


async def check_namespace(client: Client, namespace: str) -> None:
    """Raise TemporalUnreachable unless `namespace` exists on the server `client` talks to."""
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace), timeout=_RPC_TIMEOUT
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise TemporalUnreachable(
                f"namespace {namespace!r} does not exist on the Temporal server "
                f"(create it with `temporal operator namespace create --namespace {namespace}`)"
            ) from None
        raise TemporalUnreachable(f"Temporal did not describe namespace {namespace!r}: {exc.message}") from None


async def wait_until_reachable(config: VmcpConfig, timeout: float) -> None:
    """Poll until Temporal answers and the configured namespace exists, or raise TemporalUnreachable
    with the last reason once `timeout` seconds have passed."""
    deadline = anyio.current_time() + timeout
    delay = 0.1
    while True:
        try:
            client = await connect(config)
            await check_namespace(client, config.temporal.namespace)
            return
        except TemporalUnreachable as exc:
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                raise TemporalUnreachable(f"{exc} (waited {timeout:g}s)") from None
            logger.debug("waiting for Temporal: %s", exc)
            await anyio.sleep(min(delay, remaining))
            delay = min(delay * 1.5, 1.0)


_RUST_REASON = re.compile(r'message: "([^"]+)"|ConnectError\("([^"]+)"')


def describe_error(exc: BaseException) -> str:
    """A one-line reason from the SDK's connection errors, which embed a Rust error chain."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, RPCError):
        return exc.message
    found: list[str] = [a or b for a, b in _RUST_REASON.findall(text)]
    if found:
        return found[-1]
    return text.removeprefix("Failed client connect: ")[:200]


async def runs_missing_keys(client: Client, ring_ids: Iterable[str]) -> dict[str, list[str]]:
    """The open composite runs whose start was sealed with a key the ring lacks: key id -> run ids
    (a few per key). Read from each open run's first history event, whose payload metadata names
    its key in clear: one request per open run, made at a worker's start only."""
    known = set(ring_ids)
    missing: dict[str, list[str]] = {}
    query = f"WorkflowType = '{COMPOSITE_WORKFLOW}' AND ExecutionStatus = 'Running'"
    async for execution in client.list_workflows(query):
        events = client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history_events(page_size=1)
        async for event in events:
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            key = payloads[0].metadata.get(KEY_ID) if payloads else None
            if key is not None and key.decode(errors="replace") not in known:
                runs = missing.setdefault(key.decode(errors="replace"), [])
                if len(runs) < 3:
                    runs.append(execution.id)
            break
    return missing
