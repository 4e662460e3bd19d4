"""The handshake session's own bookkeeping, where no backend is needed to see it go wrong: an
attempt that can never start must not leave callers waiting, and a refusal is remembered."""

from __future__ import annotations

from contextlib import AsyncExitStack

import anyio
from mcp import Client

from vmcp.backends.handshake import HandshakeSession


async def _never_opened(stack: AsyncExitStack) -> Client:
    raise AssertionError("no session may be opened on a connection whose life is over")


async def _refusing(stack: AsyncExitStack) -> Client:
    raise ConnectionError("initialize: method not found")


def test_a_task_group_that_has_ended_opens_nothing_and_keeps_no_caller_waiting() -> None:
    async def main() -> None:
        session = HandshakeSession("dual", _never_opened, connect_timeout=30.0)
        async with anyio.create_task_group() as ended:
            pass  # the connection's life that handed its task group out is over
        with anyio.fail_after(2.0):  # before the fix the second caller waited forever
            assert await session.client(ended) is None
            assert await session.client(ended) is None
        assert session.state == "closed"

    anyio.run(main)


def test_a_refused_handshake_is_not_asked_again_for_every_call() -> None:
    attempts: list[int] = []

    async def refusing(stack: AsyncExitStack) -> Client:
        attempts.append(1)
        return await _refusing(stack)

    async def main() -> None:
        session = HandshakeSession("modernonly", refusing, connect_timeout=5.0)
        async with anyio.create_task_group() as tasks:
            with anyio.fail_after(5.0):
                for _ in range(3):
                    assert await session.client(tasks) is None
        assert session.state == "refused"

    anyio.run(main)
    assert len(attempts) == 1
