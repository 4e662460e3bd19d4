"""The backend pool: one long-lived MCP connection per backend (`vmcp.connection`), shared by
every caller, opened together when the pool is entered and closed together when it is left; it
hands each backend's traffic to the façade's relay and tells the façade when a listing changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup

from vmcp.backends.common import (
    CLIENT_INFO,
    Admission,
    BackendEvents,
    BackendStatus,
    BackendUnavailable,
    ListingChanged,
    expand_env,
)
from vmcp.backends.connection import BackendConnection
from vmcp.catalog.aggregate import BackendListing
from vmcp.config.models import BackendConfig

__all__ = [
    "CLIENT_INFO",
    "BackendConnection",
    "BackendEvents",
    "BackendPool",
    "BackendStatus",
    "BackendUnavailable",
    "expand_env",
]


class BackendPool(AbstractAsyncContextManager["BackendPool"]):
    """All backends of one configuration, connected concurrently and supervised for their lifetime."""

    def __init__(
        self, backends: Sequence[BackendConfig], base_dir: Path, on_listing: ListingChanged | None = None
    ) -> None:
        self.connections = {b.name: BackendConnection(b, base_dir, on_listing) for b in backends}
        self._group: TaskGroup | None = None

    def relay_to(self, events: BackendEvents) -> None:
        """Send backend-initiated traffic (logs, sampling, elicitation, updates) to `events`."""
        for connection in self.connections.values():
            connection.changes.events = events

    def limit_with(self, admission: Admission) -> None:
        """Ask `admission` before every tool call reaches a backend (`limits.per_backend`)."""
        for connection in self.connections.values():
            connection.requests.admission = admission

    async def __aenter__(self) -> BackendPool:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        for connection in self.connections.values():
            self._group.start_soon(connection.run, name=f"backend:{connection.name}")
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        for connection in self.connections.values():
            connection.close()
        assert self._group is not None
        return await self._group.__aexit__(*exc_info)

    def listen(self, on_listing: ListingChanged) -> None:
        """Call `on_listing(backend)` whenever a backend (re)connects or is re-listed."""
        for connection in self.connections.values():
            connection._on_listing = on_listing

    def get(self, name: str) -> BackendConnection:
        connection = self.connections.get(name)
        if connection is None:
            raise BackendUnavailable(f"no backend named {name!r}")
        return connection

    async def wait_settled(self, timeout: float) -> None:
        """Wait until every backend has either connected or failed its first attempt."""
        with anyio.move_on_after(timeout):
            for connection in self.connections.values():
                await connection.settled.wait()

    def listings(self) -> list[BackendListing]:
        return [c.listing for c in self.connections.values() if c.listing is not None and c.state == "ready"]

    def statuses(self) -> list[BackendStatus]:
        return [c.status() for c in self.connections.values()]
