"""What a backend says on its own, and what vmcp follows on it: logs, questions for the client
(sampling, elicitation, roots), resource updates, list changes, resource subscriptions.

The SDK runs the callbacks in the context of the client request they arrived for (see
`vmcp.clients.relay`).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, TypeVar

import anyio
import mcp_types as types
from mcp import Client
from mcp.shared.subscriptions import ResourceUpdated
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from vmcp.backends.awaited_tasks import without_related_task
from vmcp.backends.common import BackendEvents, describe_error
from vmcp.backends.supervised import Supervised

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_LIST_CHANGED = (
    types.ToolListChangedNotification,
    types.PromptListChangedNotification,
    types.ResourceListChangedNotification,
)


class ChangeFollowing:
    """What one backend says on its own, relayed to `events` (the façade's relay), and the resource
    subscriptions vmcp keeps on it across reconnections. Held by its `BackendConnection` as
    `changes`; its callbacks are the SDK client's."""

    def __init__(self, connection: Supervised, events: BackendEvents | None = None) -> None:
        self.connection = connection
        self.name = connection.name
        self.events = events
        self._subscriptions: set[str] = set()  # resource URIs clients follow through this backend
        self._listeners: dict[str, anyio.CancelScope] = {}

    def connection_lost(self) -> None:
        """The change streams ended with their connection; subscriptions are followed again on the next."""
        self._listeners.clear()

    async def on_log(self, params: types.LoggingMessageNotificationParams) -> None:
        if self.events is not None:
            await self.events.log(self.name, params)

    async def _ask(self, request: types.InputRequest) -> Any:
        if self.events is None:
            return types.ErrorData(code=types.INVALID_REQUEST, message="vmcp has no client to ask")
        return await self.events.ask_client(self.name, without_related_task(request))

    async def on_sampling(self, context: Any, params: types.CreateMessageRequestParams) -> Any:
        return await self._ask(types.CreateMessageRequest(params=params))

    async def on_elicitation(self, context: Any, params: types.ElicitRequestParams) -> Any:
        return await self._ask(types.ElicitRequest(params=params))

    async def on_list_roots(self, context: Any) -> Any:
        return await self._ask(types.ListRootsRequest())

    async def on_message(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            if self.events is not None:
                await self.events.resource_updated(self.name, str(message.params.uri))
        elif isinstance(message, _LIST_CHANGED) and self.connection.tasks is not None:
            # re-list outside the receive loop: the listing's answers arrive through it
            self.connection.tasks.start_soon(self._refresh_quietly)

    async def _refresh_quietly(self) -> None:
        try:
            await self.connection.refresh_listing()
        except Exception as exc:
            logger.warning("backend %s: re-listing after list_changed failed: %s", self.name, describe_error(exc))

    async def follow(self, client: Client) -> None:
        """After (re)connecting: follow list changes of a 2026-07-28 backend (handshake-era ones
        send them as notifications) and re-establish every resource subscription."""
        caps = client.server_capabilities
        if client.protocol_version in MODERN_PROTOCOL_VERSIONS and self.connection.tasks is not None:
            wanted = {
                "tools_list_changed": bool(caps.tools and caps.tools.list_changed),
                "prompts_list_changed": bool(caps.prompts and caps.prompts.list_changed),
                "resources_list_changed": bool(caps.resources and caps.resources.list_changed),
            }
            if any(wanted.values()):
                self.connection.tasks.start_soon(self._listen, client, anyio.CancelScope(), wanted)
        for uri in sorted(self._subscriptions):
            try:
                await self._follow(client, uri)
            except Exception as exc:
                logger.warning("backend %s: re-subscribing %s failed: %s", self.name, uri, describe_error(exc))

    async def subscribe(self, uri: str) -> None:
        """Follow a resource. Kept across reconnections; a 2026-07-28 backend is followed through a
        `subscriptions/listen` stream, a handshake-era one with resources/subscribe."""
        client = await self.connection.ready_client()
        self._subscriptions.add(uri)
        try:
            await self.connection.guard(self._follow(client, uri))
        except BaseException:
            self._subscriptions.discard(uri)
            raise

    async def unsubscribe(self, uri: str) -> None:
        self._subscriptions.discard(uri)
        listener = self._listeners.pop(uri, None)
        if listener is not None:
            listener.cancel()
            return
        client = await self.connection.ready_client()
        if not self.connection.is_modern:
            await self.connection.guard(client.session.unsubscribe_resource(uri))

    async def _follow(self, client: Client, uri: str) -> None:
        if client.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            await client.session.subscribe_resource(uri)  # type: ignore[deprecated]
            return
        if uri in self._listeners or self.connection.tasks is None:
            return
        scope = anyio.CancelScope()
        self._listeners[uri] = scope
        await self.connection.tasks.start(self._listen, client, scope, {"resource_subscriptions": [uri]})

    async def _listen(
        self,
        client: Client,
        scope: anyio.CancelScope,
        what: dict[str, Any],
        *,
        task_status: Any = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Relay a 2026-07-28 backend's change events (resource updates, list changes)."""
        with scope:
            try:
                async with client.listen(**what) as subscription:
                    task_status.started()
                    async for event in subscription:
                        if isinstance(event, ResourceUpdated):
                            if self.events is not None:
                                await self.events.resource_updated(self.name, event.uri)
                        elif self.connection.tasks is not None:
                            self.connection.tasks.start_soon(self._refresh_quietly)
            except Exception as exc:
                logger.info("backend %s: change stream %s ended: %s", self.name, what, describe_error(exc))
                with contextlib.suppress(RuntimeError):  # already started: the error is only logged
                    task_status.started()
