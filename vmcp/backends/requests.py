"""What callers ask of a backend: tool calls (over the SDK session or the lean wire, the
connection's choice), prompts, resources, completion, log level and ping.

An object `BackendConnection` holds (as `requests`; it supervises the connection and provides the
live client through `vmcp.backends.supervised`): each request waits for a ready client, and a
failure of the connection itself becomes `BackendUnavailable` and a reconnection, while the
backend's own MCP errors pass through.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar, cast

import anyio
import mcp_types as types
from mcp import Client
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types import LOG_LEVEL_META_KEY
from pydantic import TypeAdapter

from vmcp.backends.awaited_tasks import call_as_task
from vmcp.backends.common import Admission, BackendUnavailable, RateLimited, describe_error
from vmcp.backends.credentials import passed_headers
from vmcp.backends.handshake import HandshakeSession
from vmcp.backends.http1 import Http1Error, OutcomeUnknown
from vmcp.backends.supervised import Supervised
from vmcp.backends.wire import WireError, WireProtocolError

_T = TypeVar("_T")
_INPUT_RESPONSES: TypeAdapter[types.InputResponses] = TypeAdapter(types.InputResponses)


class BackendRequests:
    """What callers ask of one backend, over the connection that holds this object."""

    def __init__(self, connection: Supervised) -> None:
        self.connection = connection
        self._slots = anyio.CapacityLimiter(connection.config.max_concurrency)
        self.admission: Admission | None = None  # `limits.per_backend`, when configured

    def takes_lean_path(self, tool: str) -> bool:
        """Whether a plain tools/call of `tool` can go out as one raw POST (`x-mcp-header`
        tools need the SDK's Mcp-Param header mirroring)."""
        connection = self.connection
        return connection.wire is not None and connection.state == "ready" and tool not in connection.header_bound_tools

    async def call_tool(
        self,
        params: Mapping[str, Any],
        *,
        progress: ProgressFnT | None = None,
        streams: bool = False,
        caller_capabilities: Mapping[str, Any] | None = None,
        client_headers: Mapping[str, str] | None = None,
        caller_token: str | None = None,
        timeout: float | None = None,
        handshake_caller: bool = False,
    ) -> dict[str, Any]:
        """One tools/call. `params` are the backend's (its own tool name, the `_meta` it may see),
        in their JSON form.

        The transport is this connection's choice: one raw POST over the lean wire when the backend
        speaks 2026-07-28 over HTTP and nothing must stream back to the caller (no progress
        callback, no log lines wanted: `streams`), else the SDK session. Either way the answer is
        the result as the backend sent it, `MCPError` is the backend's own JSON-RPC error, and
        `BackendUnavailable` a failed connection. `client_headers` pass on as `pass_headers`
        allows; `caller_token` is what a `token_exchange` backend exchanges (it needs the wire: a
        per-request header). `handshake_caller`: the caller speaks the handshake era, so a backend
        that speaks both is reached in it (`vmcp.backends.handshake`)."""
        if self.admission is not None and (refusal := await self.admission(self.connection.name)) is not None:
            raise RateLimited(*refusal)
        config = self.connection.config
        if self._slots.available_tokens == 0 and self._slots.statistics().tasks_waiting >= config.max_waiting:
            raise BackendUnavailable(
                f"backend {self.connection.name!r} is at capacity: {config.max_concurrency} calls in flight and "
                f"{config.max_waiting} waiting (backends[].max_concurrency, max_waiting)",
                f"backend {self.connection.name!r} is busy: too many calls are waiting for it; try again later",
            )
        async with self._slots:
            return await self._call_tool(
                params, progress, streams, caller_capabilities, client_headers, caller_token, timeout, handshake_caller
            )

    async def _call_tool(
        self,
        params: Mapping[str, Any],
        progress: ProgressFnT | None,
        streams: bool,
        caller_capabilities: Mapping[str, Any] | None,
        client_headers: Mapping[str, str] | None,
        caller_token: str | None,
        timeout: float | None,
        handshake_caller: bool,
    ) -> dict[str, Any]:
        name = str(params["name"])
        in_handshake_era = handshake_caller and self.connection.handshake is not None
        if self.connection.credentials.per_caller:
            if not self.takes_lean_path(name):
                raise BackendUnavailable(
                    f"backend {self.connection.name!r} exchanges each caller's token, which needs a per-request "
                    "header: a 2026-07-28 streamable-HTTP backend (it is not one, or is down)"
                )
        elif name in self.connection.awaited_task_tools:
            client = await self.connection.ready_client()
            limit = timeout or self.connection.config.timeout
            return await self.connection.guard(call_as_task(client, params, limit, progress), timeout, acts=True)
        elif in_handshake_era or progress is not None or streams or not self.takes_lean_path(name):
            return await self._call_over_session(name, params, progress, timeout, handshake_caller)
        return await self._over_wire(
            "tools/call", name, params, caller_capabilities, client_headers, caller_token, timeout
        )

    async def task(
        self,
        method: str,
        task_id: str,
        params: Mapping[str, Any],
        *,
        caller_capabilities: Mapping[str, Any] | None,
        client_headers: Mapping[str, str] | None = None,
        caller_token: str | None = None,
    ) -> dict[str, Any]:
        """`tasks/get`, `tasks/update` or `tasks/cancel` on a task this backend created (the
        extension is 2026-07-28's, so only the lean wire carries it). `params` are the backend's
        (its own task id); `Mcp-Name` carries the id, as the extension wants."""
        if self.connection.wire is None:
            raise BackendUnavailable(
                f"backend {self.connection.name!r} is unavailable ({self.connection.state}) or does not speak "
                "2026-07-28 over HTTP, which its tasks need"
            )
        async with self._slots:
            return await self._over_wire(
                method, task_id, params, caller_capabilities, client_headers, caller_token, None
            )

    async def _over_wire(
        self,
        method: str,
        name: str,
        params: Mapping[str, Any],
        caller_capabilities: Mapping[str, Any] | None,
        client_headers: Mapping[str, str] | None,
        caller_token: str | None,
        timeout: float | None,
    ) -> dict[str, Any]:
        wire = self.connection.wire
        if wire is None:
            raise BackendUnavailable(f"backend {self.connection.name!r} is unavailable ({self.connection.state})")
        headers = passed_headers(self.connection.config.pass_headers, client_headers)
        headers.update(await self.connection.credentials.headers(caller_token))
        try:
            return await wire.request(
                method,
                name,
                params,
                caller_capabilities=dict(caller_capabilities) if caller_capabilities is not None else None,
                timeout=timeout or self.connection.config.timeout,
                headers=headers,
            )
        except WireError as exc:  # the backend's answer, raised as the SDK path raises it
            error = exc.error
            raise MCPError(
                code=int(error.get("code", types.INTERNAL_ERROR)),
                message=str(error.get("message", "")),
                data=error.get("data"),
            ) from None
        except TimeoutError as exc:
            limit = timeout or self.connection.config.timeout
            raise BackendUnavailable(f"backend {self.connection.name!r} did not answer within {limit:g}s") from exc
        except OutcomeUnknown as exc:  # sent, then lost: never resent, and the caller is told so
            self.connection.mark_broken()
            raise BackendUnavailable.outcome_unknown(self.connection.name, exc.public, str(exc)) from exc
        except WireProtocolError as exc:  # the backend read the call; its answer is unusable
            raise BackendUnavailable.outcome_unknown(self.connection.name, str(exc), str(exc)) from exc
        except (Http1Error, OSError) as exc:
            self.connection.mark_broken()
            raise BackendUnavailable(
                f"backend {self.connection.name!r} connection failed: {describe_error(exc)}",
                f"backend {self.connection.name!r} connection failed",
            ) from exc

    async def _session_for(self, handshake_caller: bool) -> tuple[Client, HandshakeSession | None]:
        """The client a request goes out on: the handshake session for a handshake-era caller when
        the backend keeps one (and speaks the handshake), else the main connection."""
        client = await self.connection.ready_client()
        session = self.connection.handshake if handshake_caller else None
        if session is not None:
            handshake = await session.client(self.connection.tasks)
            if handshake is not None:
                return handshake, session
        return client, None

    @contextmanager
    def _over(self, session: HandshakeSession | None) -> Iterator[dict[str, Any]]:
        """Around a request on `session`: the guard's arguments (a failure closes that session,
        not the main connection), and the session held open meanwhile."""
        with session.using() if session is not None else nullcontext():
            yield {"broken": session.mark_broken} if session is not None else {}

    async def _call_over_session(
        self,
        name: str,
        params: Mapping[str, Any],
        progress: ProgressFnT | None,
        timeout: float | None,
        handshake_caller: bool = False,
    ) -> dict[str, Any]:
        client, session = await self._session_for(handshake_caller)
        responses = params.get("inputResponses")
        with self._over(session) as guarded:
            result = await self.connection.guard(
                client.session.call_tool(  # type: ignore[misc]
                    name,
                    params.get("arguments"),
                    read_timeout_seconds=timeout or self.connection.config.timeout,
                    progress_callback=progress,
                    meta=_in_era(params.get("_meta"), session),
                    input_responses=_INPUT_RESPONSES.validate_python(responses) if responses else None,
                    request_state=params.get("requestState"),
                    allow_input_required=True,
                    allow_claimed=True,
                ),
                timeout,
                acts=True,
                **guarded,
            )
        return result.model_dump(by_alias=True, mode="json", exclude_none=True)

    async def get_prompt(
        self,
        name: str,
        arguments: dict[str, str] | None,
        *,
        meta: dict[str, Any] | None = None,
        input_responses: types.InputResponses | None = None,
        request_state: str | None = None,
        handshake_caller: bool = False,
    ) -> types.GetPromptResult | types.InputRequiredResult:
        client, session = await self._session_for(handshake_caller)
        with self._over(session) as guarded:
            return await self.connection.guard(
                client.session.get_prompt(  # type: ignore[call-overload]
                    name,
                    arguments,
                    meta=cast(types.RequestParamsMeta | None, _in_era(meta, session)),
                    input_responses=input_responses,
                    request_state=request_state,
                    allow_input_required=True,
                ),
                **guarded,
            )

    async def read_resource(
        self,
        uri: str,
        *,
        meta: dict[str, Any] | None = None,
        input_responses: types.InputResponses | None = None,
        request_state: str | None = None,
        handshake_caller: bool = False,
    ) -> types.ReadResourceResult | types.InputRequiredResult:
        client, session = await self._session_for(handshake_caller)
        with self._over(session) as guarded:
            return await self.connection.guard(
                client.session.read_resource(  # type: ignore[call-overload]
                    uri,
                    meta=cast(types.RequestParamsMeta | None, _in_era(meta, session)),
                    input_responses=input_responses,
                    request_state=request_state,
                    allow_input_required=True,
                ),
                **guarded,
            )

    async def complete(
        self,
        ref: types.PromptReference | types.ResourceTemplateReference,
        argument: dict[str, str],
        context_arguments: dict[str, str] | None = None,
    ) -> types.CompleteResult:
        client = await self.connection.ready_client()
        return await self.connection.guard(client.session.complete(ref, argument, context_arguments))

    async def set_logging_level(self, level: types.LoggingLevel) -> None:
        """Handshake-era backends take the level per connection; 2026-07-28 ones per request."""
        client = await self.connection.ready_client()
        if not self.connection.is_modern and client.server_capabilities.logging is not None:
            await self.connection.guard(client.session.set_logging_level(level))
        session = self.connection.handshake
        if session is not None:  # kept for the session's next opening, sent now if it is open
            with self._over(session) as guarded:
                await self.connection.guard(session.set_level(level), **guarded)

    async def ping(self) -> None:
        client = await self.connection.ready_client()
        await self.connection.guard(client.session.send_ping())


def _in_era(meta: Mapping[str, Any] | None, session: HandshakeSession | None) -> Any:
    """The `_meta` as the era of the request wants it: over the handshake session the caller's log
    level is the session's (`logging/setLevel`), not a per-request key a handshake-era server refuses."""
    if session is None or not meta:
        return meta or None
    return {k: v for k, v in meta.items() if k != LOG_LEVEL_META_KEY} or None
