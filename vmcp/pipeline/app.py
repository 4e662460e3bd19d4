"""The HTTP application: MCP over streamable HTTP plus health and status endpoints.

The session manager is built here with DNS-rebinding protection switched on explicitly
(building it directly leaves the Host/Origin checks off): loopback names on any port are
always accepted, plus whatever `server.allowed_hosts` / `allowed_origins` add.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from vmcp.backends.pool import BackendPool
from vmcp.config.models import VmcpConfig
from vmcp.ops import telemetry
from vmcp.pipeline.codec_server import PATHS as CODEC_PATHS
from vmcp.pipeline.codec_server import CodecEndpoints, Cors, ui_origins
from vmcp.pipeline.facade import Facade
from vmcp.pipeline.http_server import uvicorn_config
from vmcp.pipeline.lean import LeanToolCalls
from vmcp.pipeline.tokens import metadata_routes, protect, refuses_anonymous

logger = logging.getLogger(__name__)

_LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"]
_LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
_RUN_COUNTS_TIMEOUT = 3.0  # a scrape waits at most this long for Temporal's run counts


def security_settings(config: VmcpConfig) -> TransportSecuritySettings:
    server = config.server
    hosts = [*_LOOPBACK_HOSTS, *server.allowed_hosts]
    if server.host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::"):
        hosts += [server.host, f"{server.host}:*"]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=[*_LOOPBACK_ORIGINS, *server.allowed_origins],
    )


def create_app(config: VmcpConfig, pool: BackendPool | None = None) -> ASGIApp:
    """The façade as an ASGI app. With `pool`, the caller owns the backend pool (shared with an
    in-process worker by `vmcp dev`); otherwise the app opens and closes its own."""
    telemetry.setup(config.telemetry.otlp_endpoint, config.telemetry.service_name)
    owned_pool = pool is None
    the_pool = pool if pool is not None else BackendPool(config.backends, config.base_dir)
    facade = Facade(config, the_pool)
    the_pool.listen(facade.on_listing_changed)
    security = security_settings(config)
    manager = StreamableHTTPSessionManager(
        app=facade.server, security_settings=security, stateless=config.server.stateless
    )
    lean = LeanToolCalls(manager, facade, security)
    mcp_endpoint = protect(lean, config.auth, config.base_dir)  # bearer tokens first: the lean path serves callers too
    state: dict[str, Any] = {"ready": False, "prepared": False}

    async def prepare() -> None:
        """Wait for every backend's first connection attempt and build the catalogue."""
        if state["prepared"]:
            return
        await the_pool.wait_settled(config.server.startup_wait)
        for name, connection in the_pool.connections.items():
            if not connection.settled.is_set():  # slow to connect or to list: it must not hold up the rest
                logger.warning(
                    "backend %s is still connecting after %gs (server.startup_wait): serving without it; "
                    "its tools join when it is ready",
                    name,
                    config.server.startup_wait,
                )
        facade.rebuild(initial=True)
        state["prepared"] = True
        if facade.catalog_error is not None and config.aggregation.conflict_resolution == "manual":
            # `manual` is the operator's promise that every clash is settled: hold them to it
            raise StartupRefused(str(facade.catalog_error))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if owned_pool:
                await stack.enter_async_context(the_pool)
            await prepare()
            await stack.enter_async_context(manager.run())
            state["ready"] = True
            logger.info(
                "vmcp serving %d tools from %d/%d backends",
                len(facade.catalog.tools),
                len(the_pool.listings()),
                len(the_pool.connections),
            )
            try:
                yield
            finally:
                state["ready"] = False

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ready = state["ready"] and facade.catalog_error is None
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def metrics(request: Request) -> Response:
        if facade.runs.tools and facade.metrics.run_counts_stale:
            with anyio.move_on_after(_RUN_COUNTS_TIMEOUT):
                try:
                    counts, waiting = await facade.runs.orchestrator.run_counts(list(facade.runs.tools))
                    facade.metrics.set_run_counts(counts, waiting)
                except Exception as exc:  # Temporal away: the scrape still answers, without run figures
                    logger.debug("run counts unavailable: %s", exc)
        return Response(facade.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def status(request: Request) -> Response:
        return JSONResponse(
            {
                "ready": state["ready"],
                "tools": len(facade.catalog.tools),
                "prompts": len(facade.catalog.prompts),
                "resources": len(facade.catalog.resources),
                "catalog_error": str(facade.catalog_error) if facade.catalog_error else None,
                "backends": [dataclasses.asdict(s) for s in the_pool.statuses()],
                "catalog_warnings": list(facade.catalog.warnings),
                "policy_denials": dict(facade.policy_denials),
                # tool calls taken on the lean inbound path (plain 2026-07-28 calls) rather than the SDK's
                "lean_calls": lean.served,
            }
        )

    # What vmcp knows of its backends and callers is for operators: the same Host check as /mcp,
    # and under OAuth the same bearer token (a scraper gets one like any client). The probes stay
    # open: they say only "up" or "ready".
    operations = _HostChecked(
        protect(Starlette(routes=[Route("/status", status), Route("/metrics", metrics)]), config.auth, config.base_dir),
        security,
    )
    routed: dict[str, ASGIApp] = dict.fromkeys(("/status", "/metrics"), operations)
    if config.temporal.encryption is not None:
        # the Web UI's remote codec: the same checks, its origins too, and preflights before the token
        ui = security.model_copy(update={"allowed_origins": [*(security.allowed_origins or []), *ui_origins(config)]})
        codec = _HostChecked(Cors(protect(CodecEndpoints(config), config.auth, config.base_dir)), ui)
        routed |= dict.fromkeys(CODEC_PATHS, codec)
    app = Starlette(
        routes=[
            Route(config.server.path, endpoint=mcp_endpoint),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            *metadata_routes(config.auth),
        ],
        lifespan=lifespan,
    )
    app.state.facade = facade
    app.state.lean = lean
    app.state.prepare = prepare
    return _McpFirst(app, config.server.path, mcp_endpoint, routed)


def serve_directory(app: ASGIApp, prefix: str, directory: Path) -> None:
    """Serve static files under `prefix` beside the MCP endpoint (the dev stack's demo data)."""
    starlette = getattr(app, "app", app)
    assert isinstance(starlette, Starlette)
    starlette.routes.append(Mount(prefix, StaticFiles(directory=directory, html=True), name="static"))


class StartupRefused(Exception):
    """The façade would not start (e.g. an unresolved name clash under `manual`)."""


def check_key_ring(config: VmcpConfig) -> None:
    """StartupRefused when `temporal.encryption` names a key ring that cannot be used: a façade
    without the keys would start runs it could not read (checked at start, not at the first run)."""
    if config.temporal.encryption is None:
        return
    from vmcp.runs.payload_codec import KeyRingError, load_ring  # loads the Temporal SDK's types

    try:
        load_ring(config)
    except KeyRingError as exc:
        raise StartupRefused(str(exc)) from None


class _McpFirst:
    """Sends MCP requests straight to their endpoint, everything else (health, lifespan) through
    Starlette: its middleware stack is measurable on a relay's hottest path."""

    def __init__(self, app: Starlette, path: str, mcp: ASGIApp, operations: dict[str, ASGIApp]) -> None:
        self.app = app
        self.state = app.state
        self._path = path
        self._mcp = mcp
        self._operations = operations  # path -> the operator endpoint's app, its checks in front

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self._path:
            await self._mcp(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] in self._operations:
            await self._operations[scope["path"]](scope, receive, send)
        else:
            await self.app(scope, receive, send)


class _HostChecked:
    """DNS-rebinding protection (Host and Origin) for endpoints beside /mcp, as the SDK does for it."""

    def __init__(self, app: ASGIApp, security: TransportSecuritySettings) -> None:
        self._app = app
        self._check = TransportSecurityMiddleware(security)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = await self._check.validate_request(Request(scope), is_post=scope.get("method") == "POST")
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self._app(scope, receive, send)


async def serve(
    config: VmcpConfig, *, host: str | None = None, port: int | None = None, pool: BackendPool | None = None
) -> None:
    """Run the façade until cancelled or interrupted; StartupRefused when it must not start."""
    reason = refuses_anonymous(config.auth, host or config.server.host)
    if reason is not None:
        raise StartupRefused(reason)
    check_key_ring(config)
    refused: StartupRefused | None = None
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(telemetry.shutdown)  # flush the last spans
        if pool is None:
            pool = await stack.enter_async_context(BackendPool(config.backends, config.base_dir))
        app = create_app(config, pool)
        # backends and catalogue first, so a refusal is a clean error rather than a failed lifespan
        try:
            await app.state.prepare()  # type: ignore[attr-defined]
        except StartupRefused as exc:
            refused = exc  # raised once the pool is closed, outside its task group
        if refused is None:
            server = uvicorn.Server(
                uvicorn_config(
                    app,
                    config.server,
                    host=host or config.server.host,
                    port=port if port is not None else config.server.port,
                )
            )
            await server.serve()
            if not server.started and not server.should_exit:
                refused = StartupRefused(f"could not serve on {server.config.host}:{server.config.port}")
    if refused is not None:
        raise refused
