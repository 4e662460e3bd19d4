"""The MCP face of vmcp: list from the cached catalogue, forward each call to its backend.

Every handler answers from the current `Catalog` snapshot (swapped atomically when a backend's
listing changes), so no client request ever re-lists a backend. A tool that fails is data: it
comes back as an `isError` result naming the cause; only the backend's own protocol errors
(invalid params, unknown method) travel as JSON-RPC errors, exactly as the backend sent them.
No exception escapes a handler. This module never imports Temporal: plain forwarding keeps
working while Temporal is down.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions
from mcp.shared.exceptions import MCPError
from mcp_types import (
    LOG_LEVEL_META_KEY,
)

from vmcp.backends.common import package_version
from vmcp.backends.pool import BackendConnection, BackendPool, BackendUnavailable
from vmcp.backends.wire import WireError
from vmcp.catalog.aggregate import Catalog, CatalogError, build_catalog
from vmcp.catalog.shaping import ShapeRefusal
from vmcp.catalog.steps import resolve
from vmcp.clients.relay import Relay, calling, is_modern, resolve_input_required
from vmcp.config.models import VmcpConfig
from vmcp.ops import telemetry
from vmcp.ops.audit import AuditLog, audit_outcome, run_id_in
from vmcp.ops.metrics import Metrics
from vmcp.pipeline.forwarding import (
    SERVER_INFO_KEY,
    backend_meta,
    error_result,
    forward_meta,
    has_progress_token,
    progress_relay,
    without_backend_identity,
)
from vmcp.pipeline.identify import bearer_token, caller_of
from vmcp.pipeline.passthrough import PassThrough
from vmcp.runs.calls import CompositeRuns
from vmcp.security.authorization import Authorizer

logger = logging.getLogger(__name__)


class Facade:
    """Owns the catalogue and the MCP `Server` whose handlers route through the backend pool."""

    def __init__(self, config: VmcpConfig, pool: BackendPool) -> None:
        self.config = config
        self.pool = pool
        self.catalog = Catalog()
        self.catalog_error: CatalogError | None = None
        self._started = False  # listings that arrive before the first full build only wait for it
        self._tools_result = types.ListToolsResult(tools=[])
        self._refresh_lock = anyio.Lock()
        self.relay = Relay()
        pool.relay_to(self.relay)
        self.runs = CompositeRuns(config)
        self.policy_denials: Counter[str] = Counter()  # "<tool>: <rule>" -> calls refused (in /status)
        self.authorizer = Authorizer(config.authorization)
        self.audit = AuditLog(config.audit.file, config.base_dir)
        self.metrics = Metrics()
        self.metrics.watch_backends(pool.statuses)
        self.passthrough = PassThrough(pool, self.relay, lambda: self.catalog)
        self.server: Server[Any] = _AnnouncingServer(
            "vmcp",
            version=package_version(),
            instructions="vmcp aggregates several MCP servers behind one endpoint.",
            get_tool_input_schema=self._input_schema,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_prompts=self.passthrough._list_prompts,
            on_get_prompt=self.passthrough._get_prompt,
            on_list_resources=self.passthrough._list_resources,
            on_list_resource_templates=self.passthrough._list_resource_templates,
            on_read_resource=self.passthrough._read_resource,
            on_completion=self.passthrough._complete,
            on_subscribe_resource=self.passthrough._subscribe,
            on_unsubscribe_resource=self.passthrough._unsubscribe,
            on_subscriptions_listen=self.passthrough._listen,
        )
        # Registered directly rather than as on_set_logging_level, which warns that logging is
        # deprecated at 2026-07-28: handshake-era clients still use it, and vmcp relays it.
        self.server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, self.passthrough._set_level)
        # The SDK's per-message OpenTelemetry middleware costs ~10% of a forwarded call even with
        # no exporter installed; vmcp traces on its own terms. Its own middleware only notes
        # handshake-era sessions, to tell them when the catalogue changes.
        self.server.middleware = [self._note_session]

    async def _note_session(self, ctx: ServerRequestContext[Any], call_next: Any) -> Any:
        self.relay.seen(ctx)
        return await call_next(ctx)

    def rebuild(self, *, initial: bool = False) -> Catalog:
        self._started = self._started or initial
        return self._rebuild(initial)

    def _rebuild(self, initial: bool) -> Catalog:
        """Rebuild from the backends' current listings. A clash left unresolved (`manual`)
        keeps the previous catalogue and is reported: a backend adding a tool must not take the
        whole endpoint down."""
        try:
            catalog = build_catalog(
                self.config.aggregation,
                [b.name for b in self.config.backends],
                self.pool.listings(),
                reserved=self.runs.names,
            )
        except CatalogError as exc:
            self.catalog_error = exc
            logger.error("catalogue not updated:\n%s", exc)
            if initial:  # nothing partial may be served: an empty catalogue until the clash is settled
                self.catalog = Catalog()
                self._tools_result = types.ListToolsResult(tools=[])
            return self.catalog
        for warning in catalog.warnings:
            logger.warning("%s", warning)
        self.catalog_error = None
        self.catalog = catalog
        self._tools_result = types.ListToolsResult(tools=[*catalog.tools, *self.runs.advertised()])
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
        return tool.input_schema if tool is not None else self.runs.input_schema(name)

    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        if not self.authorizer.active:
            return self._tools_result
        caller = caller_of(ctx)
        visible = [tool for tool in self._tools_result.tools if self.may_call(caller, tool.name)]
        return types.ListToolsResult(tools=visible)

    def may_call(self, caller: Mapping[str, Any], name: str) -> bool:
        """Whether `caller` may call the advertised tool `name` (for a composite: it and every
        tool its steps call, so a composite is no way around a backend's denial)."""
        route = self.catalog.tool_routes.get(name)
        if route is not None:
            return self.authorizer.allows(caller, name, f"{route.backend}.{route.original}")
        if name in self.runs.tools:
            return all(self.authorizer.allows(caller, *names) for names in self.runs.needs(name, self.catalog))
        return self.authorizer.allows(caller, name)  # the built-in run tools

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> Any:  # CallToolResult | InputRequiredResult, or the backend's raw result dict
        started = time.monotonic()
        caller = caller_of(ctx) if self.authorizer.active or self.audit.enabled else {}
        if self.authorizer.active and not self.may_call(caller, params.name):
            self.observe(caller, params.name, None, started, decision="deny")
            return error_result(f"Tool {params.name!r} is not available to you (authorization).")
        route = self.catalog.tool_routes.get(params.name)
        with telemetry.span(
            f"tools/call {params.name}",
            params.meta,
            **{"mcp.tool": params.name, "vmcp.backend": route.backend if route is not None else None},
        ):
            result = await self._allowed_call(ctx, params)
        self.observe(
            caller,
            params.name,
            route.backend if route is not None else None,
            started,
            result=result,
            decision="policy" if isinstance(result, ArgumentsRefused) else "allow",
        )
        return result

    def observe(
        self,
        caller: Mapping[str, Any],
        tool: str,
        backend: str | None,
        started: float,
        *,
        result: Any = None,
        decision: str = "allow",
    ) -> None:
        """One finished tools/call, in the metrics and the audit trail."""
        outcome, detail = ("refused", None) if decision == "deny" else audit_outcome(result)
        if decision == "policy":
            outcome = "refused"
        self.metrics.observe_call(tool, backend, outcome, time.monotonic() - started)
        if decision != "allow":
            self.metrics.denials.labels(tool, "authorization" if decision == "deny" else "policy").inc()
        self.audit.record(
            caller=dict(caller),
            tool=tool,
            backend=backend,
            decision=decision,
            outcome=outcome,
            started=started,
            run_id=run_id_in(result) if result is not None else None,
            detail=detail,
        )

    async def _allowed_call(self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> Any:
        route = self.catalog.tool_routes.get(params.name)
        if route is None:
            if params.name in self.runs.names:
                with calling(ctx):
                    try:
                        return await self.runs.call(ctx, params, self.catalog, caller_of(ctx))
                    except Exception as exc:  # boundary: nothing escapes a handler
                        logger.exception("tools/call %s failed", params.name)
                        return error_result(f"Tool {params.name!r} failed inside vmcp: {type(exc).__name__}: {exc}")
            return error_result(f"Unknown tool {params.name!r}: no backend offers it (see tools/list).")
        if route.shape is not None:
            try:
                arguments = route.shape.backend_arguments(params.arguments, caller_of(ctx))
            except ShapeRefusal as exc:
                if exc.rule is not None:
                    self.policy_denials[f"{params.name}: {exc.rule}"] += 1
                    logger.info("policy refused %s: %s", params.name, exc)
                message = f"Tool {params.name!r} was not called: {exc}"
                return ArgumentsRefused(content=[types.TextContent(type="text", text=message)], is_error=True)
            params = params.model_copy(update={"arguments": arguments})
        progress = has_progress_token(params.meta)
        try:
            connection = self.pool.get(route.backend)
            meta = backend_meta(self.relay, ctx, params.meta, connection)

            async def call(responses: types.InputResponses | None, state: str | None) -> Any:
                with calling(ctx, connection.name):
                    return await connection.call_tool(
                        route.original,
                        params.arguments,
                        meta=meta,
                        progress=progress_relay(ctx) if progress else None,
                        input_responses=responses,
                        request_state=state,
                    )

            per_caller = connection.credentials.per_caller
            if per_caller and not connection.takes_lean_path(route.original):
                return error_result(
                    f"Tool {params.name!r} failed: backend {route.backend!r} exchanges each caller's token, "
                    "which needs a per-request header: a 2026-07-28 streamable-HTTP backend (it is not one, or is down)"
                )
            lean = per_caller or (not progress and not self._wants_log(ctx, params.meta))
            if lean and connection.takes_lean_path(route.original):
                raw = await self._call_lean(ctx, params, connection, route.original)
                if is_modern(ctx) or raw.get("resultType") != "input_required":
                    return raw
                # a handshake-era caller cannot take an InputRequiredResult: ask it mid-call instead
                result = await resolve_input_required(ctx, types.InputRequiredResult.model_validate(raw), call)
            else:
                result = await call(params.input_responses, params.request_state)
                if isinstance(result, types.InputRequiredResult) and not is_modern(ctx):
                    result = await resolve_input_required(ctx, result, call)
        except BackendUnavailable as exc:
            return error_result(f"Tool {params.name!r} failed: {exc}")
        except MCPError:
            raise  # the backend's own protocol error, passed through as it was sent
        except Exception as exc:  # boundary: nothing escapes a handler
            logger.exception("tools/call %s failed", params.name)
            return error_result(f"Tool {params.name!r} failed inside vmcp: {type(exc).__name__}: {exc}")
        if isinstance(result, types.CallToolResult | types.InputRequiredResult):
            return without_backend_identity(result)
        return error_result(f"Tool {params.name!r} returned a result vmcp cannot relay ({type(result).__name__}).")

    def _wants_log(self, ctx: ServerRequestContext[Any], meta: types.RequestParamsMeta | None) -> bool:
        """Whether the caller wants this call's log notifications (then it needs the SDK client,
        which delivers them; the lean wire drops them)."""
        if is_modern(ctx):
            return bool(meta) and LOG_LEVEL_META_KEY in meta  # type: ignore[operator]
        return self.relay.level_of(ctx) is not None

    async def _call_lean(
        self,
        ctx: ServerRequestContext[Any],
        params: types.CallToolRequestParams,
        connection: BackendConnection,
        original: str,
    ) -> dict[str, Any]:
        """Relay over the backend's raw wire even for a handshake-era caller: the result dict goes
        back as the backend sent it (less its serverInfo), with no model round trip."""
        forwarded = params.model_dump(by_alias=True, mode="json", exclude_none=True)
        forwarded["name"] = original
        meta = forward_meta(params.meta)
        if meta:
            forwarded["_meta"] = meta
        else:
            forwarded.pop("_meta", None)
        capabilities = ctx.session.client_capabilities
        try:
            result = await connection.forward_tool_call(
                forwarded,
                caller_capabilities=capabilities.model_dump(by_alias=True, mode="json", exclude_none=True)
                if capabilities is not None
                else None,
                client_headers=ctx.request.headers if ctx.request is not None else None,
                caller_token=bearer_token(ctx.request.scope) if ctx.request is not None else None,
            )
        except WireError as exc:
            error = exc.error
            raise MCPError(
                code=int(error.get("code", types.INTERNAL_ERROR)),
                message=str(error.get("message", "")),
                data=error.get("data"),
            ) from None
        meta_out = result.get("_meta")
        if isinstance(meta_out, dict) and SERVER_INFO_KEY in meta_out:
            rest = {k: v for k, v in meta_out.items() if k != SERVER_INFO_KEY}
            result = {k: v for k, v in result.items() if k != "_meta"}
            if rest:
                result["_meta"] = rest
        return result


class ArgumentsRefused(types.CallToolResult):
    """The `isError` result of a call whose arguments the tool's shape or policy refused (the
    audit trail records the decision as `policy`); on the wire, an ordinary tool result."""


class _AnnouncingServer(Server[Any]):
    """Declares `listChanged` for tools, prompts and resources: vmcp tells handshake-era clients
    when a backend comes, goes or changes what it offers."""

    def create_initialization_options(self, *args: Any, **kwargs: Any) -> Any:
        if not args and "notification_options" not in kwargs:
            kwargs["notification_options"] = NotificationOptions(
                prompts_changed=True, resources_changed=True, tools_changed=True
            )
        return super().create_initialization_options(*args, **kwargs)
