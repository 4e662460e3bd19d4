"""`subscriptions/listen` (2026-07-28): one response stream per request, carrying what the client
asked for — list changes, updates of resources it may follow, and, for a client that declared the
tasks extension, `notifications/tasks` for the tasks it names (`notifications.taskIds`).

The acknowledgement is the stream's first frame and says what is honored: the kinds asked for, the
resources the caller may follow, the tasks it may reach (composite runs it may follow, backend
tasks it created). Each honored task is read at its poll interval and a notification sent with
the whole `DetailedTask` whenever its status, message or input requests change, until it ends.
One writer task owns the stream, so frames never interleave.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import anyio
import mcp_types as types
from anyio.streams.memory import MemoryObjectSendStream
from mcp.server.context import ServerRequestContext
from mcp.server.subscriptions import SUBSCRIPTION_ID_META_KEY, ServerEvent, SubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import event_matches, event_to_notification

logger = logging.getLogger(__name__)

MAX_TASKS_PER_STREAM = 100
MAX_BUFFERED = 1024  # frames waiting for a client that stopped reading: then the stream ends
POLL_SECONDS = 1.0
_TERMINAL = ("completed", "failed", "cancelled")

ReadTask = Callable[[str], Awaitable[dict[str, Any] | None]]
"""A task's `DetailedTask` as the caller may see it, None when it is not the caller's to see."""


class TaskStatusParams(types.NotificationParams):
    model_config = types.NotificationParams.model_config | {"extra": "allow"}


class TaskStatusNotification(types.Notification[TaskStatusParams, Literal["notifications/tasks"]]):
    method: Literal["notifications/tasks"] = "notifications/tasks"


class ListenStreams:
    def __init__(self, bus: SubscriptionBus) -> None:
        self._bus = bus

    async def serve(
        self,
        ctx: ServerRequestContext[Any],
        honored: types.SubscriptionFilter,
        task_ids: list[str],
        read_task: ReadTask,
    ) -> types.SubscriptionsListenResult:
        """Serve one stream: `honored` is the filter already narrowed to what the caller may follow,
        `task_ids` the tasks it asked to hear of (each kept only if `read_task` finds it)."""
        subscription_id = ctx.request_id
        if subscription_id is None:
            raise MCPError(types.INVALID_REQUEST, "subscriptions/listen requires a request id")
        meta: dict[str, Any] = {SUBSCRIPTION_ID_META_KEY: subscription_id}
        first: dict[str, dict[str, Any]] = {}
        for task_id in dict.fromkeys(task_ids[:MAX_TASKS_PER_STREAM]):
            try:
                task = await read_task(task_id)
            except Exception as exc:  # Temporal or the backend away: the stream is not honoured for it
                logger.info("listen: task %s not read: %s", task_id[:60], exc)
                continue
            if task is not None:
                first[task_id] = task
        if task_ids:
            honored = honored.model_copy(update={"taskIds": list(first)})
        uris = frozenset(honored.resource_subscriptions or ())
        send, frames = anyio.create_memory_object_stream[types.ServerNotification | TaskStatusNotification](
            MAX_BUFFERED
        )

        def deliver(event: ServerEvent) -> None:
            if event_matches(honored, uris, event):
                _put(send, event_to_notification(event, meta))

        unsubscribe = self._bus.subscribe(deliver)  # before the ack: nothing published meanwhile is lost
        try:
            ack = types.SubscriptionsAcknowledgedNotification(
                params=types.SubscriptionsAcknowledgedNotificationParams(notifications=honored, _meta=meta)
            )
            await ctx.session.send_notification(ack, related_request_id=subscription_id)
            async with anyio.create_task_group() as group:
                for task_id, task in first.items():
                    group.start_soon(self._follow, task_id, task, read_task, send, meta)
                async for frame in frames:
                    await ctx.session.send_notification(frame, related_request_id=subscription_id)  # type: ignore[arg-type]
                group.cancel_scope.cancel()  # the stream was ended (a client that stopped reading)
        finally:
            unsubscribe()
            send.close()
            frames.close()
        return types.SubscriptionsListenResult(_meta=meta)

    @staticmethod
    async def _follow(
        task_id: str,
        task: dict[str, Any],
        read_task: ReadTask,
        send: MemoryObjectSendStream[Any],
        meta: dict[str, Any],
    ) -> None:
        """Notify of `task` now and at every change, until it ends or can no longer be read."""
        seen: tuple[Any, ...] | None = None
        while True:
            said = (task.get("status"), task.get("statusMessage"), sorted(task.get("inputRequests") or {}))
            if said != seen:
                seen = said
                fields = {key: value for key, value in task.items() if key not in ("resultType", "_meta")}
                _put(send, TaskStatusNotification(params=TaskStatusParams.model_validate({**fields, "_meta": meta})))
            if task.get("status") in _TERMINAL:
                return
            await anyio.sleep(max(POLL_SECONDS, (task.get("pollIntervalMs") or 0) / 1000))
            try:
                latest = await read_task(task_id)
            except Exception as exc:  # a backend or Temporal away: try again at the next poll
                logger.info("listen: task %s not read: %s", task_id[:60], exc)
                continue
            if latest is None:
                return
            task = latest


def _put(send: MemoryObjectSendStream[Any], frame: Any) -> None:
    try:
        send.send_nowait(frame)
    except (anyio.WouldBlock, anyio.ClosedResourceError):
        send.close()  # a client that stopped reading: the stream ends (it re-listens and refetches)
