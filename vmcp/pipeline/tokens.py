"""Incoming authentication: vmcp as an OAuth 2.1 resource server, and who the caller is.

Tokens are JWTs verified against the issuer's JWKS (`KeySet`: cached for `auth.jwks_cache`; a token
signed with a key id not in it refetches the set, at most once per `auth.jwks_cooldown` and one
fetch at a time, so the issuer rotates keys without a vmcp restart and cannot be flooded). The MCP SDK's bearer
middleware does the HTTP side: `401` with `WWW-Authenticate` naming the RFC 9728 metadata (served
beside `/mcp`) when the token is missing or invalid, `403 insufficient_scope` when a required scope
is missing.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend, RequireAuthMiddleware
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from pydantic import AnyHttpUrl
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import Route
from starlette.types import ASGIApp

from vmcp.backends.common import BackendUnavailable
from vmcp.backends.credentials import Credentials
from vmcp.config.auth import AuthConfig, BackendAuth

logger = logging.getLogger(__name__)

_INTROSPECTION_CACHE_SIZE = 10_000  # answers kept (by token digest)


class KeySet:
    """The issuer's signing keys (its JWKS), fetched when first needed, again after `jwks_cache`,
    and again for a key id not in it — at most once per `jwks_cooldown`, whether that fetch worked
    or not, and by one caller at a time (single flight): a flood of made-up key ids, or an issuer
    that is down, costs the issuer one request per cooldown and the callers no waiting in line."""

    def __init__(self, url: str, lifespan: float, cooldown: float, timeout: float = 10.0) -> None:
        self._url = url
        self._lifespan = lifespan
        self._cooldown = cooldown
        self._timeout = timeout
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at = -math.inf  # the last fetch that worked
        self._tried_at = -math.inf  # the last attempt, worked or not
        self._fetching = threading.Lock()

    def key_for(self, kid: str | None) -> jwt.PyJWK:
        """The key to verify a token signed with `kid` (a token without one: the set's only key)."""
        if time.monotonic() - self._fetched_at > self._lifespan or (kid is not None and kid not in self._keys):
            self._refresh()
        if kid is None:
            keys = list(self._keys.values())
            if len(keys) != 1:
                raise jwt.PyJWKClientError("the token names no key id and the issuer's set has several keys")
            return keys[0]
        key = self._keys.get(kid)
        if key is None:
            raise jwt.PyJWKClientError(f"the issuer's key set has no key {kid!r}")
        return key

    def _refresh(self) -> None:
        if not self._fetching.acquire(blocking=False):
            return  # another request is fetching: this one goes on with the keys there are
        try:
            if time.monotonic() - self._tried_at < self._cooldown:
                return  # asked recently enough, whatever the answer was
            self._tried_at = time.monotonic()
            try:
                response = httpx.get(self._url, timeout=self._timeout, follow_redirects=False)
                response.raise_for_status()
                keys = jwt.PyJWKSet.from_dict(response.json()).keys
            except (httpx.HTTPError, ValueError, jwt.PyJWKSetError) as exc:
                logger.warning("JWKS %s could not be fetched: %s", self._url, exc)
                return  # keep the keys we had: an outage must not log everybody out
            self._keys = {key.key_id: key for key in keys}
            self._fetched_at = time.monotonic()
        finally:
            self._fetching.release()


class JwtVerifier:
    """The SDK's `TokenVerifier` for JWT access tokens signed by keys in a JWKS."""

    def __init__(self, settings: AuthConfig) -> None:
        assert settings.jwks_url and settings.issuer and settings.audience
        self.settings = settings
        self._keys = KeySet(settings.jwks_url, settings.jwks_cache, settings.jwks_cooldown)

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            claims = await anyio.to_thread.run_sync(self._decode, token)
        except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:
            logger.info("bearer token refused: %s", exc)
            return None
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id") or claims.get("azp") or claims.get("sub") or ""),
            scopes=token_scopes(claims),
            expires_at=int(claims["exp"]),
            resource=self.settings.audience,
            subject=str(claims["sub"]) if "sub" in claims else None,
            claims=claims,
        )

    def _decode(self, token: str) -> dict[str, Any]:
        kid = jwt.get_unverified_header(token).get("kid")
        key = self._keys.key_for(kid if isinstance(kid, str) else None)
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=self.settings.algorithms,
            audience=self.settings.audience,
            issuer=self.settings.issuer,
            leeway=self.settings.leeway,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip():
            # who the caller is decides ownership and approvals: no token may leave it blank
            raise jwt.InvalidTokenError("the token's sub is empty or not a string")
        return claims


class IntrospectingVerifier:
    """The SDK's `TokenVerifier` for opaque tokens: RFC 7662 introspection at the issuer. A token
    is accepted when the issuer says it is active, for this audience, from this issuer, unexpired.
    Answers are cached briefly by the token's digest (never the token itself)."""

    def __init__(self, settings: AuthConfig, base_dir: Path) -> None:
        assert settings.introspection_url and settings.introspection_client_id
        self.settings = settings
        # the client secret is read like a backend's: from ${ENV} or a file, when it is used
        own = BackendAuth(
            type="client_credentials",
            token_url=settings.introspection_url,
            client_id=settings.introspection_client_id,
            client_secret=settings.introspection_client_secret,
            client_secret_file=settings.introspection_client_secret_file,
        )
        self._credentials = Credentials("introspection", own, base_dir)
        # digest -> (expires, answer), least recently used first: a flood of new tokens evicts the
        # oldest answers one by one, never everybody's at once
        self._cache: OrderedDict[str, tuple[float, AccessToken | None]] = OrderedDict()

    async def verify_token(self, token: str) -> AccessToken | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() < cached[0]:
            self._cache.move_to_end(key)
            return cached[1]
        verified = await self._introspect(token)
        self._cache[key] = (time.monotonic() + self.settings.introspection_cache, verified)
        self._cache.move_to_end(key)
        while len(self._cache) > _INTROSPECTION_CACHE_SIZE:
            self._cache.popitem(last=False)
        return verified

    async def _introspect(self, token: str) -> AccessToken | None:
        settings = self.settings
        assert settings.introspection_url is not None
        try:
            basic = self._credentials.basic_authorization()
            async with httpx.AsyncClient(timeout=10.0) as http:
                response = await http.post(
                    settings.introspection_url,
                    data={"token": token, "token_type_hint": "access_token"},
                    headers={"Authorization": basic},
                )
            claims = response.json() if response.status_code == 200 else {}
        except (httpx.HTTPError, ValueError, BackendUnavailable) as exc:
            logger.warning("token introspection failed: %s", exc)
            return None
        audiences = claims.get("aud") if isinstance(claims, dict) else None
        audiences = audiences if isinstance(audiences, list) else [audiences]
        problem = (
            "not active"
            if not isinstance(claims, dict) or claims.get("active") is not True
            else "wrong issuer"
            if claims.get("iss") != settings.issuer
            else "wrong audience"
            if settings.audience not in audiences
            else "expired"
            if not isinstance(claims.get("exp"), int) or claims["exp"] + settings.leeway < time.time()
            else "no subject"
            if not isinstance(claims.get("sub"), str) or not claims["sub"].strip()
            else None
        )
        if problem is not None:
            logger.info("bearer token refused by introspection: %s", problem)
            return None
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id") or claims["sub"]),
            scopes=token_scopes(claims),
            expires_at=int(claims["exp"]),
            resource=settings.audience,
            subject=str(claims["sub"]),
            claims={k: v for k, v in claims.items() if k != "active"},
        )


def token_scopes(claims: dict[str, Any]) -> list[str]:
    """`scope` (RFC 8693/9068: space-separated) or `scp` (a list, as some issuers send it)."""
    scope = claims.get("scope")
    if isinstance(scope, str):
        return scope.split()
    scp = claims.get("scp")
    if isinstance(scp, list):
        return [str(item) for item in scp]
    return []


def protect(endpoint: ASGIApp, settings: AuthConfig, base_dir: Path) -> ASGIApp:
    """`endpoint` behind bearer authentication (a no-op in anonymous mode)."""
    if settings.anonymous:
        return endpoint
    assert settings.audience is not None
    metadata = build_resource_metadata_url(AnyHttpUrl(settings.audience))
    required = RequireAuthMiddleware(AuthContextMiddleware(endpoint), settings.required_scopes, metadata)
    verifier = IntrospectingVerifier(settings, base_dir) if settings.introspection_url else JwtVerifier(settings)
    return AuthenticationMiddleware(required, backend=BearerAuthBackend(verifier))


def metadata_routes(settings: AuthConfig) -> list[Route]:
    """RFC 9728 protected-resource metadata: where clients learn which issuer to ask."""
    if settings.anonymous:
        return []
    assert settings.audience is not None and settings.issuer is not None
    return create_protected_resource_routes(
        AnyHttpUrl(settings.audience),
        [AnyHttpUrl(settings.issuer)],
        scopes_supported=settings.required_scopes or None,
        resource_name="vmcp",
    )


def refuses_anonymous(settings: AuthConfig, host: str) -> str | None:
    """Why vmcp must not serve `host` without authentication (None: it may)."""
    if not settings.anonymous or settings.force_anonymous or _is_loopback(host):
        return None
    return (
        f"auth.mode is anonymous, and {host} is not a loopback address: anyone who reaches it could call "
        "every tool. Set auth.mode: oauth, or auth.force_anonymous: true if that is really meant."
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
