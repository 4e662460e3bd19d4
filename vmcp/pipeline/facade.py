"""The MCP face of vmcp: the SDK's low-level `Server`, whose every handler hands its request to
the pipeline (`vmcp.pipeline.requests`).

Lists answer from the current `Catalog` snapshot (swapped atomically when a backend's listing
changes), filtered for the caller, so no client request ever re-lists a backend. This module
never imports Temporal: plain forwarding keeps working while Temporal is down.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from vmcp.backends.common import package_version
from vmcp.backends.pool import BackendPool
from vmcp.catalog.aggregate import TASKS_EXTENSION, Catalog, CatalogError, build_catalog
from vmcp.catalog.steps import resolve
from vmcp.clients.relay import Relay, connection_of
from vmcp.config.models import VmcpConfig
from vmcp.ops.audit import AuditLog
from vmcp.ops.metrics import Metrics
from vmcp.pipeline.forward import Inbound
from vmcp.pipeline.identify import bearer_token, caller_of
from vmcp.pipeline.listen import ListenStreams
from vmcp.pipeline.lists import LIST_METHODS, HandshakeSession, HandshakeSessions, PreparedLists, cursor_of
from vmcp.pipeline.requests import Pipeline
from vmcp.runs.calls import CompositeRuns
from vmcp.runs.tasks import TASK_METHODS, TaskParams, declares_tasks, missing_capability

logger = logging.getLogger(__name__)


class Facade:
    """Owns the catalogue and the MCP `Server` whose handlers run the pipeline."""

    def __init__(self, config: VmcpConfig, pool: BackendPool) -> None:
        self.config = config
        self.pool = pool
        self.catalog = Catalog()
        self.catalog_error: CatalogError | None = None
        self._started = False  # listings that arrive before the first full build only wait for it
        self._tools: list[types.Tool] = []
        self._refresh_lock = anyio.Lock()
        self.relay = Relay()
        pool.relay_to(self.relay)
        self.runs = CompositeRuns(config)
        self.audit = AuditLog(config.audit.file, config.base_dir)
        self.metrics = Metrics()
        self.metrics.watch_backends(pool.statuses)
        self.pipeline = Pipeline(config, pool, self.relay, self.runs, lambda: self.catalog, self.metrics, self.audit)
        self._listen_streams = ListenStreams(self.relay.bus)
        self.lists = PreparedLists(
            self._visible,
            self.pipeline.authorization.view,
            config.aggregation.page_size,
            lambda: self.server.server_info_stamp,
        )
        self.sessions = HandshakeSessions()
        self.server: Server[Any] = _AnnouncingServer(
            "vmcp",
            version=package_version(),
            instructions="vmcp aggregates several MCP servers behind one endpoint.",
            get_tool_input_schema=self._input_schema,
            on_list_tools=self._list,
            on_call_tool=self._call_tool,
            on_list_prompts=self._list,
            on_get_prompt=self._get_prompt,
            on_list_resources=self._list,
            on_list_resource_templates=self._list,
            on_read_resource=self._read_resource,
            on_completion=self._complete,
            on_subscribe_resource=self._subscribe,
            on_unsubscribe_resource=self._unsubscribe,
            on_subscriptions_listen=self._listen,
        )
        # Registered directly rather than as on_set_logging_level, which warns that logging is
        # deprecated at 2026-07-28: handshake-era clients still use it, and vmcp relays it.
        self.server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, self._set_level)
        # Composite runs are served as MCP tasks, and backends' tasks relayed, to clients that declare them
        self.server.extensions[TASKS_EXTENSION] = {}
        for method in TASK_METHODS:
            self.server.add_request_handler(method, TaskParams, self._task_handler(method))
        # The SDK's per-message OpenTelemetry middleware costs ~10% of a forwarded call even with
        # no exporter installed; vmcp traces on its own terms. Its own middleware only notes
        # handshake-era sessions, to tell them when the catalogue changes.
        self.server.middleware = [self._note_session]

    @property
    def policy_denials(self) -> Mapping[str, int]:
        return self.pipeline.observer.policy_denials

    async def _note_session(self, ctx: ServerRequestContext[Any], call_next: Any) -> Any:
        self.relay.seen(ctx)
        if ctx.method in LIST_METHODS and connection_of(ctx).initialize_accepted:
            self._note_lister(ctx)
            # a prepared page is already the result the SDK would make of it: skip validating it again
            return self.lists.page(ctx.method, caller_of(ctx), ctx.protocol_version, cursor_of(ctx.params)).result
        return await call_next(ctx)

    def _note_lister(self, ctx: ServerRequestContext[Any]) -> None:
        """A handshake-era session that lists: its next lists are answered on the lean path."""
        session_id = ctx.request.headers.get("mcp-session-id") if ctx.request is not None else None
        if session_id is not None and ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            client = ctx.session.client_params
            named = client.client_info.name if client is not None else None
            self.sessions.note(session_id, HandshakeSession(ctx.protocol_version, named))

    # ------------------------------------------------------------------ the catalogue

    def rebuild(self, *, initial: bool = False) -> Catalog:
        """Rebuild from the backends' current listings. A clash left unresolved (`manual`)
        keeps the previous catalogue and is reported: a backend adding a tool must not take the
        whole endpoint down."""
        self._started = self._started or initial
        try:
            catalog = build_catalog(
                self.config.aggregation,
                [b.name for b in self.config.backends],
                self.pool.listings(),
                reserved=self.pipeline.own_names,
            )
        except CatalogError as exc:
            self.catalog_error = exc
            logger.error("catalogue not updated:\n%s", exc)
            if initial:  # nothing partial may be served: an empty catalogue until the clash is settled
                self.catalog = Catalog()
                self._tools = []
                self.lists.reset()
            return self.catalog
        for warning in catalog.warnings:
            logger.warning("%s", warning)
        self.catalog_error = None
        self.catalog = catalog
        self._tools = self.pipeline.search.advertised([*catalog.tools, *self.runs.advertised()])
        self.lists.reset()
        self._check_composites(catalog)
        return catalog

    def _check_composites(self, catalog: Catalog) -> None:
        """Log composite steps whose tool the catalogue does not know (they fail when called)."""
        backends = [b.name for b in self.config.backends]
        for index, tool in enumerate(self.config.composite_tools):
            for issue in resolve(tool, catalog, backends, index)[1]:
                logger.error("%s", issue)

    async def on_listing_changed(self, backend: str) -> None:
        """A backend (re)connected or re-listed: rebuild, and tell connected clients what changed."""
        if not self._started:
            return
        async with self._refresh_lock:
            before = self.catalog
            after = self.rebuild()
            await self.relay.announce(
                tools=before.tools != after.tools,
                prompts=before.prompts != after.prompts,
                resources=(before.resources, before.resource_templates) != (after.resources, after.resource_templates),
            )

    def _input_schema(self, name: str) -> Mapping[str, Any] | None:
        tool = self.catalog.tool(name)
        if tool is not None:
            return tool.input_schema
        return self.runs.input_schema(name) or self.pipeline.search.input_schema(name)

    # ------------------------------------------------------------------ handlers: each one request through the pipeline

    def _visible(self, method: str, caller: Mapping[str, Any]) -> list[Any]:
        if method == "tools/list":
            return self.pipeline.tools(caller, self._tools)
        if method == "prompts/list":
            return self.pipeline.prompts(caller)
        if method == "resources/list":
            return self.pipeline.resources(caller)
        return self.pipeline.resource_templates(caller)

    async def _list(self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> Any:
        cursor = params.cursor if params is not None else None
        return self.lists.page(ctx.method, caller_of(ctx), ctx.protocol_version, cursor).result

    async def _call_tool(self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> Any:
        forwarded = params.model_dump(by_alias=True, mode="json", exclude_none=True)
        return await self.pipeline.call_tool(caller_of(ctx), forwarded, _inbound(ctx))

    def _task_handler(self, method: str) -> Any:
        async def handle(ctx: ServerRequestContext[Any], params: TaskParams) -> dict[str, Any]:
            return await self.pipeline.tasks.request(caller_of(ctx), method, params, _inbound(ctx))

        return handle

    async def _get_prompt(self, ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams) -> Any:
        return await self.pipeline.get_prompt(ctx, caller_of(ctx), params)

    async def _read_resource(self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams) -> Any:
        return await self.pipeline.read_resource(ctx, caller_of(ctx), params)

    async def _complete(
        self, ctx: ServerRequestContext[Any], params: types.CompleteRequestParams
    ) -> types.CompleteResult:
        return await self.pipeline.complete(ctx, caller_of(ctx), params)

    async def _subscribe(
        self, ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        return await self.pipeline.subscribe(ctx, caller_of(ctx), params)

    async def _unsubscribe(
        self, ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        return await self.pipeline.unsubscribe(ctx, caller_of(ctx), params)

    async def _listen(
        self, ctx: ServerRequestContext[Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        """A 2026-07-28 client's change stream: list changes come from the relay's bus; each
        resource it may follow is followed upstream for as long as the stream lasts. The stream
        is told only of the URIs it may follow, so it never hears of the others' updates."""
        caller, asked = caller_of(ctx), params.notifications
        wanted = list(asked.resource_subscriptions or ())
        targets = self.pipeline.followable(caller, wanted)
        task_ids = (asked.model_extra or {}).get("taskIds")
        if task_ids is not None and (
            not isinstance(task_ids, list) or not all(isinstance(task_id, str) for task_id in task_ids)
        ):
            raise MCPError(code=types.INVALID_PARAMS, message="notifications.taskIds must be a list of task ids")
        if task_ids and not declares_tasks(ctx):
            raise missing_capability()
        honored = types.SubscriptionFilter(
            tools_list_changed=True if asked.tools_list_changed else None,
            prompts_list_changed=True if asked.prompts_list_changed else None,
            resources_list_changed=True if asked.resources_list_changed else None,
            resource_subscriptions=[target.name for target in targets] or None,
        )
        inbound = _inbound(ctx)

        async def read_task(task_id: str) -> dict[str, Any] | None:
            return await self.pipeline.tasks.state(caller, task_id, inbound)

        async with self.pipeline.forward.following(targets):
            return await self._listen_streams.serve(ctx, honored, list(task_ids or ()), read_task)

    async def _set_level(
        self, ctx: ServerRequestContext[Any], params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        """Remember the caller's level (vmcp filters what it relays to this client) and pass it on
        to the handshake-era backends. It names nothing a rule could refuse."""
        self.relay.set_level(ctx, params.level)
        await self.pipeline.forward.set_level(params.level)
        return types.EmptyResult()


def _inbound(ctx: ServerRequestContext[Any]) -> Inbound:
    """A request that came through the SDK's session machinery, with what it says of its caller."""
    capabilities = ctx.session.client_capabilities
    request = ctx.request
    return Inbound(
        ctx,
        headers=request.headers if request is not None else None,
        token=bearer_token(request.scope) if request is not None else None,
        capabilities=capabilities.model_dump(by_alias=True, mode="json", exclude_none=True)
        if capabilities is not None
        else None,
    )


class _AnnouncingServer(Server[Any]):
    """Declares `listChanged` for tools, prompts and resources: vmcp tells handshake-era clients
    when a backend comes, goes or changes what it offers."""

    def create_initialization_options(self, *args: Any, **kwargs: Any) -> Any:
        if not args and "notification_options" not in kwargs:
            kwargs["notification_options"] = NotificationOptions(
                prompts_changed=True, resources_changed=True, tools_changed=True
            )
        return super().create_initialization_options(*args, **kwargs)
