"""Identify: who is calling, the first stage of every request.

With `auth.mode: oauth` the bearer middleware (`vmcp.pipeline.tokens`) has verified the token, and
the caller is its subject, client, issuer, scopes, groups and other claims (never the token);
anonymous, the subject is `anonymous` and `client` the name the MCP client gives itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.context import ServerRequestContext
from mcp_types import CLIENT_INFO_META_KEY

ANONYMOUS = "anonymous"
_PROTOCOL_CLAIMS = frozenset({"iss", "aud", "exp", "nbf", "iat", "jti", "scope", "scp"})


def bearer_token(scope: Any) -> str | None:
    """The verified bearer token of the request (for a `token_exchange` backend), or None."""
    user = scope.get("user") if isinstance(scope, dict) else None
    return user.access_token.token if isinstance(user, AuthenticatedUser) else None


def caller_from_user(user: Any) -> dict[str, Any] | None:
    """An authenticated caller as templates and authorization rules see it: subject, client,
    issuer, scopes, groups and the token's other claims — never the token itself."""
    if not isinstance(user, AuthenticatedUser):
        return None
    token = user.access_token
    claims = token.claims or {}
    groups = claims.get("groups")
    return {
        "subject": token.subject,
        "client": token.client_id,
        "issuer": claims.get("iss"),
        "scopes": list(token.scopes),
        "groups": [str(group) for group in groups] if isinstance(groups, list) else [],
        "claims": {k: v for k, v in claims.items() if k not in _PROTOCOL_CLAIMS},
    }


def caller_of(ctx: ServerRequestContext[Any]) -> dict[str, Any]:
    """Who is calling, as templates and authorization rules see it (`caller`). With `auth.mode:
    oauth`, the token's subject, client, issuer, scopes, groups and claims; anonymous, the subject
    is `anonymous` and `client` the name the MCP client gives itself (its `clientInfo`, from the
    handshake or, at 2026-07-28, the request envelope)."""
    params = ctx.session.client_params
    named = params.client_info.name if params is not None else None
    request = ctx.request
    return caller_in(request.scope if request is not None else {}, ctx.meta, named)


def caller_in(scope: Mapping[str, Any], meta: Any, client_name: str | None = None) -> dict[str, Any]:
    """`caller_of` from an ASGI scope (the bearer middleware's user) and a request's `_meta`."""
    authenticated = caller_from_user(scope.get("user"))
    if authenticated is not None:
        return authenticated
    if (
        client_name is None
        and isinstance(meta, Mapping)
        and isinstance(info := meta.get(CLIENT_INFO_META_KEY), Mapping)
    ):
        client_name = str(info["name"]) if info.get("name") else None
    return {"subject": ANONYMOUS, "client": client_name}
