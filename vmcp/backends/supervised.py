"""What a backend connection's parts may ask of the connection that holds them.

`BackendConnection` supervises one backend (connects, lists, reconnects) and holds two parts:
`requests` (what callers ask of the backend) and `changes` (what the backend says on its own, and
what vmcp follows on it). The parts reach the connection only through this seam: the live client
once it is ready, the lean wire, the guard that turns a broken connection into
`BackendUnavailable` and a reconnection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from anyio.abc import TaskGroup
from mcp import Client

from vmcp.backends.common import State
from vmcp.backends.credentials import Credentials
from vmcp.backends.handshake import HandshakeSession
from vmcp.backends.wire import ModernHttpWire
from vmcp.config.models import BackendConfig

_T = TypeVar("_T")


class Supervised(Protocol):
    name: str
    config: BackendConfig
    credentials: Credentials
    state: State
    wire: ModernHttpWire | None  # the lean tools/call path, when the backend allows it
    header_bound_tools: frozenset[str]  # tools whose arguments mirror into headers: the SDK's to send
    awaited_task_tools: frozenset[str]  # tools called as 2025-11-25 tasks and awaited (`awaited_tasks`)
    tasks: TaskGroup | None  # the live connection's tasks (None while it is down)
    handshake: HandshakeSession | None  # handshake-era callers' session to a dual-era backend

    @property
    def is_modern(self) -> bool: ...

    async def ready_client(self) -> Client: ...

    def mark_broken(self) -> None: ...

    async def guard(
        self,
        call: Awaitable[_T],
        timeout: float | None = None,
        *,
        acts: bool = False,
        broken: Callable[[], None] | None = None,
    ) -> _T: ...

    async def refresh_listing(self) -> None: ...
