"""The Temporal client side of vmcp — the only module in `vmcp/` that imports `temporalio.client`.

Everything that talks to the Temporal frontend (the worker, `vmcp dev`, and the façade and CLI
when they start, query and signal runs) connects through here, so the address, namespace and
connection options are decided in one place.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import anyio
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from vmcp.config import VmcpConfig

logger = logging.getLogger(__name__)

CONNECT_ATTEMPT_TIMEOUT = 10.0
"""Seconds one connection attempt may take (a black-holed address would otherwise hang)."""
_RPC_TIMEOUT = timedelta(seconds=5)


class TemporalUnreachable(Exception):
    """Temporal did not answer; the message names the address and the reason, for an operator."""


async def connect(config: VmcpConfig) -> Client:
    """One connection attempt to `temporal.address` / `temporal.namespace`.

    Raises TemporalUnreachable (with a one-line reason, not the transport's error chain) when
    nothing answers there.
    """
    temporal = config.temporal
    try:
        with anyio.fail_after(CONNECT_ATTEMPT_TIMEOUT):
            return await Client.connect(temporal.address, namespace=temporal.namespace)
    except TimeoutError:
        raise TemporalUnreachable(
            f"Temporal at {temporal.address} did not answer within {CONNECT_ATTEMPT_TIMEOUT:g}s"
        ) from None
    except (RuntimeError, RPCError, OSError) as exc:
        raise TemporalUnreachable(f"Temporal at {temporal.address} is not reachable: {describe_error(exc)}") from None


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
