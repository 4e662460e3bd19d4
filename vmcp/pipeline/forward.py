"""Forward: send a request to the backend that owns it, and bring its answer back.

Every kind of request goes out here, once it is routed, authorized, reshaped and policed: tool
calls (the backend connection picks its transport, the lean wire or the SDK session), prompts,
resource reads, completion and subscriptions. What a backend asks mid-call (sampling,
elicitation, roots, log lines, progress) reaches the client whose request is running. A
handshake-era caller reaches a backend that speaks both eras in its own era (the connection's
handshake session), and a 2026-07-28-only backend's `InputRequiredResult` is asked of it mid-call
and the backend retried with the answers.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import mcp_types as types
from mcp.server.context import ServerRequestContext

from vmcp.backends.pool import BackendConnection, BackendPool
from vmcp.clients.relay import Relay, calling, is_modern, resolve_input_required
from vmcp.pipeline.envelope import (
    backend_meta,
    has_progress_token,
    model_without_backend_identity,
    progress_relay,
    wants_log,
    without_backend_identity,
)
from vmcp.pipeline.route import Target

_ResultT = TypeVar("_ResultT", bound=types.Result)


@dataclass(frozen=True)
class Inbound:
    """Where a request came in: through the SDK's session machinery (`ctx`: everything that may
    stream back or ask the caller something), or on the lean path as a bare HTTP request."""

    ctx: ServerRequestContext[Any] | None
    headers: Mapping[str, str] | None = None
    token: str | None = None  # the caller's verified bearer token, for a `token_exchange` backend
    capabilities: Mapping[str, Any] | None = None  # what the caller declared it can answer

    @property
    def modern(self) -> bool:
        return self.ctx is None or is_modern(self.ctx)


class Forward:
    def __init__(self, pool: BackendPool, relay: Relay) -> None:
        self.pool = pool
        self.relay = relay

    async def tool(self, target: Target, params: Mapping[str, Any], inbound: Inbound) -> dict[str, Any]:
        """A tools/call, `params` in JSON form (the arguments already the backend's)."""
        assert target.backend is not None and target.original is not None
        connection = self.pool.get(target.backend)
        ctx = inbound.ctx
        meta = params.get("_meta")
        forwarded: dict[str, Any] = {**params, "name": target.original}
        outgoing = backend_meta(self.relay, ctx, meta, connection)
        if outgoing:
            forwarded["_meta"] = outgoing
        else:
            forwarded.pop("_meta", None)
        progress = progress_relay(ctx) if ctx is not None and has_progress_token(meta) else None
        streams = wants_log(self.relay, ctx, meta)

        async def call(responses: Any, state: str | None) -> dict[str, Any]:
            sent = {k: v for k, v in forwarded.items() if k not in ("inputResponses", "requestState")}
            if responses:
                sent["inputResponses"] = responses
            if state is not None:
                sent["requestState"] = state
            with _calling(ctx, connection):
                return await connection.requests.call_tool(
                    sent,
                    progress=progress,
                    streams=streams,
                    caller_capabilities=inbound.capabilities,
                    client_headers=inbound.headers if connection.config.pass_headers else None,
                    caller_token=inbound.token if connection.credentials.per_caller else None,
                    handshake_caller=not inbound.modern,
                )

        result = await call(params.get("inputResponses"), params.get("requestState"))
        if ctx is not None and not is_modern(ctx) and result.get("resultType") == "input_required":
            # a handshake-era caller cannot take an InputRequiredResult: ask it mid-call instead
            result = await resolve_input_required(
                ctx, types.InputRequiredResult.model_validate(result), _as_model(call)
            )
        return without_backend_identity(result)

    async def task(
        self, method: str, backend: str, task_id: str, params: Mapping[str, Any], inbound: Inbound
    ) -> dict[str, Any]:
        """A task request (`tasks/get`, `tasks/update`, `tasks/cancel`) to the backend that created
        the task, under its own task id; its answer as it sent it."""
        connection = self.pool.get(backend)
        sent = {key: value for key, value in params.items() if key not in ("taskId", "_meta")}
        with _calling(inbound.ctx, connection):
            return await connection.requests.task(
                method,
                task_id,
                {**sent, "taskId": task_id},
                caller_capabilities=inbound.capabilities,
                client_headers=inbound.headers if connection.config.pass_headers else None,
                caller_token=inbound.token if connection.credentials.per_caller else None,
            )

    async def prompt(self, ctx: ServerRequestContext[Any], target: Target, params: types.GetPromptRequestParams) -> Any:
        assert target.backend is not None and target.original is not None
        connection = self.pool.get(target.backend)
        meta = backend_meta(self.relay, ctx, params.meta, connection)
        original = target.original

        async def get(responses: types.InputResponses | None, state: str | None) -> Any:
            with calling(ctx, connection.name):
                return await connection.requests.get_prompt(
                    original,
                    params.arguments,
                    meta=meta,
                    input_responses=responses,
                    request_state=state,
                    handshake_caller=not is_modern(ctx),
                )

        return await self._answer(ctx, get, params.input_responses, params.request_state)

    async def resource(
        self, ctx: ServerRequestContext[Any], target: Target, params: types.ReadResourceRequestParams
    ) -> Any:
        assert target.backend is not None
        connection = self.pool.get(target.backend)
        meta = backend_meta(self.relay, ctx, params.meta, connection)

        async def read(responses: types.InputResponses | None, state: str | None) -> Any:
            with calling(ctx, connection.name):
                return await connection.requests.read_resource(
                    params.uri,
                    meta=meta,
                    input_responses=responses,
                    request_state=state,
                    handshake_caller=not is_modern(ctx),
                )

        return await self._answer(ctx, read, params.input_responses, params.request_state)

    async def complete(
        self, ctx: ServerRequestContext[Any], target: Target, params: types.CompleteRequestParams
    ) -> types.CompleteResult:
        assert target.backend is not None
        ref = params.ref
        if isinstance(ref, types.PromptReference):
            ref = ref.model_copy(update={"name": target.original})
        context = params.context.arguments if params.context is not None else None
        argument = {"name": params.argument.name, "value": params.argument.value}
        with calling(ctx, target.backend):
            return await self.pool.get(target.backend).requests.complete(ref, argument, context)

    async def subscribe(self, ctx: ServerRequestContext[Any], target: Target) -> None:
        """Follow a URI for this client; upstream once however many clients follow it."""
        assert target.backend is not None
        if self.relay.subscribe(ctx, target.name):
            try:
                with calling(ctx, target.backend):
                    await self.pool.get(target.backend).changes.subscribe(target.name)
            except Exception:
                self.relay.unsubscribe(ctx, target.name)
                raise

    async def unsubscribe(self, ctx: ServerRequestContext[Any], target: Target) -> None:
        assert target.backend is not None
        if self.relay.unsubscribe(ctx, target.name):
            await self.pool.get(target.backend).changes.unsubscribe(target.name)

    @contextlib.asynccontextmanager
    async def following(self, targets: list[Target]) -> AsyncIterator[None]:
        """Follow URIs upstream for as long as a 2026-07-28 listen stream lasts."""
        followed: list[Target] = []
        try:
            for target in targets:
                assert target.backend is not None
                if self.relay.listen(target.name):
                    with contextlib.suppress(Exception):  # not followable now: the stream still serves list changes
                        await self.pool.get(target.backend).changes.subscribe(target.name)
                followed.append(target)
            yield
        finally:
            for target in followed:
                assert target.backend is not None
                if self.relay.unlisten(target.name):
                    with contextlib.suppress(Exception):
                        await self.pool.get(target.backend).changes.unsubscribe(target.name)

    async def set_level(self, level: types.LoggingLevel) -> None:
        """Pass a client's log level to every handshake-era backend that logs. Backend connections
        are shared, so a backend sends at the level the latest client asked for; the relay keeps
        each client at its own."""
        for connection in self.pool.connections.values():
            if connection.state == "ready":
                with contextlib.suppress(Exception):  # a backend without logging must not fail the call
                    await connection.requests.set_logging_level(level)

    async def _answer(
        self,
        ctx: ServerRequestContext[Any],
        call: Callable[[types.InputResponses | None, str | None], Awaitable[Any]],
        responses: types.InputResponses | None,
        state: str | None,
    ) -> Any:
        """A prompts/get or resources/read: a handshake-era caller gets a backend's input requests
        asked mid-call."""
        result = await call(responses, state)
        if isinstance(result, types.InputRequiredResult) and not is_modern(ctx):
            result = await resolve_input_required(ctx, result, call)
        return model_without_backend_identity(result)


def _calling(ctx: ServerRequestContext[Any] | None, connection: BackendConnection) -> Any:
    """Mark the client request on whose behalf the backend is called (the lean path has none:
    nothing there can come back but the answer)."""
    return calling(ctx, connection.name) if ctx is not None else contextlib.nullcontext()


def _as_model(
    call: Callable[[Any, str | None], Awaitable[dict[str, Any]]],
) -> Callable[[types.InputResponses | None, str | None], Awaitable[Any]]:
    """The retry `resolve_input_required` makes: the answers it collected go out in JSON form, and
    a further request for input comes back as the model it looks for."""

    async def retry(responses: types.InputResponses | None, state: str | None) -> Any:
        sent = {k: v.model_dump(by_alias=True, mode="json", exclude_none=True) for k, v in (responses or {}).items()}
        raw = await call(sent or None, state)
        if raw.get("resultType") == "input_required":
            return types.InputRequiredResult.model_validate(raw)
        return raw

    return retry
