"""Outgoing credentials: what vmcp presents to each backend, resolved where the call is made.

The façade and the workers each hold a `Credentials` per backend connection and ask it for headers
at request time: a static bearer or header value (an `${ENV}` reference or a file, re-read when it
changes), an OAuth 2.0 client-credentials token for vmcp itself (cached, renewed a minute before it
expires), or an RFC 8693 exchange of the caller's token (cached per caller token, keyed by its
digest). Nothing here is logged or returned except as a header value on the backend request.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2

from vmcp.backends.common import BackendUnavailable, expand_env
from vmcp.config.auth import BackendAuth

logger = logging.getLogger(__name__)

_RENEW_BEFORE = 60.0  # seconds before expiry a cached token is replaced
_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
_MAX_EXCHANGED = 1000  # exchanged tokens cached at most


class CredentialError(BackendUnavailable):
    """The backend's credential could not be had (unset variable, unreadable file, token endpoint
    refusing): the message, which never contains a secret, is for the operator; the caller learns
    only that the credential is missing."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "this backend's credential could not be obtained (the operator's logs say why)")


@dataclass
class _Token:
    value: str
    renew_at: float


class Credentials:
    def __init__(self, backend: str, auth: BackendAuth | None, base_dir: Path) -> None:
        self.backend = backend
        self.auth = auth
        self._base_dir = base_dir
        self._file_cache: dict[Path, tuple[float, str]] = {}
        self._own: _Token | None = None
        self._exchanged: dict[str, _Token] = {}
        self._lock = anyio.Lock()

    @property
    def per_caller(self) -> bool:
        """Whether a plain call presents the caller's own (exchanged) token."""
        return self.auth is not None and self.auth.type == "token_exchange"

    async def headers(self, caller_token: str | None = None) -> dict[str, str]:
        """The headers for one request; `caller_token` (a plain call's bearer token) is used by
        `token_exchange` backends only, and without it they get vmcp's own token."""
        auth = self.auth
        if auth is None:
            return {}
        if auth.type in ("bearer", "header"):
            value = self._secret(auth.token, auth.token_file, "token")
            return {auth.header: f"Bearer {value}" if auth.type == "bearer" else value}
        if auth.type == "token_exchange" and caller_token is not None:
            return {"Authorization": f"Bearer {await self._exchanged_for(caller_token)}"}
        async with self._lock:  # one token request at a time, however many calls need it
            if self._own is None or time.monotonic() >= self._own.renew_at:
                self._own = await self._token_request({"grant_type": "client_credentials"})
            return {"Authorization": f"Bearer {self._own.value}"}

    async def _exchanged_for(self, caller_token: str) -> str:
        key = hashlib.sha256(caller_token.encode()).hexdigest()  # the cache never holds the caller's token
        cached = self._exchanged.get(key)
        if cached is None or time.monotonic() >= cached.renew_at:
            cached = await self._token_request(
                {"grant_type": _EXCHANGE, "subject_token": caller_token, "subject_token_type": _ACCESS_TOKEN}
            )
            if len(self._exchanged) >= _MAX_EXCHANGED:
                self._exchanged.clear()  # a cache, not a store: callers simply exchange again
            self._exchanged[key] = cached
        return cached.value

    def basic_authorization(self) -> str:
        """`Basic <client_id:secret>`: how vmcp authenticates itself to a token endpoint."""
        auth = self.auth
        assert auth is not None and auth.client_id is not None
        secret = self._secret(auth.client_secret, auth.client_secret_file, "client_secret")
        return "Basic " + base64.b64encode(f"{auth.client_id}:{secret}".encode()).decode()

    async def _token_request(self, form: dict[str, str]) -> _Token:
        auth = self.auth
        assert auth is not None and auth.token_url is not None
        for key in ("scope", "audience", "resource"):
            if getattr(auth, key):
                form[key] = getattr(auth, key)
        basic = self.basic_authorization()
        try:
            async with httpx.AsyncClient(timeout=10.0) as http:
                response = await http.post(auth.token_url, data=form, headers={"Authorization": basic})
        except httpx.HTTPError as exc:
            raise CredentialError(
                f"backend {self.backend!r}: token endpoint unreachable ({type(exc).__name__})"
            ) from None
        body: Any = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        if response.status_code != 200 or not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            error = body.get("error") if isinstance(body, dict) else None
            raise CredentialError(
                f"backend {self.backend!r}: token endpoint refused {form['grant_type']} "
                f"(HTTP {response.status_code}{f', {error}' if error else ''})"
            )
        lifetime = float(body.get("expires_in") or 300)
        return _Token(body["access_token"], time.monotonic() + max(lifetime - _RENEW_BEFORE, lifetime / 2))

    def _secret(self, value: str | None, file: str | None, what: str) -> str:
        if value is not None:
            return expand_env({what: value})[what]
        assert file is not None
        path = Path(file).expanduser()
        path = path if path.is_absolute() else self._base_dir / path
        try:
            mtime = path.stat().st_mtime
            cached = self._file_cache.get(path)
            if cached is None or cached[0] != mtime:  # a mounted secret that was rotated is read again
                cached = (mtime, path.read_text(encoding="utf-8").strip())
                self._file_cache[path] = cached
        except OSError as exc:
            raise CredentialError(f"backend {self.backend!r}: cannot read {what} file {path}: {exc.strerror}") from None
        return cached[1]


class CredentialsAuth(httpx2.Auth):
    """The SDK client's HTTP auth for one backend: vmcp's own credential on every request (the
    session is shared by every caller, so never a caller's)."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        request.headers.update(await self.credentials.headers())
        yield request


def passed_headers(allowed: list[str], incoming: Mapping[str, str] | None) -> dict[str, str]:
    """The client request headers a backend's `pass_headers` lets through (case-insensitive)."""
    if not allowed or not incoming:
        return {}
    wanted = {name.lower() for name in allowed}
    return {
        name: value
        for name, value in incoming.items()
        if name.lower() in wanted and not any(c in value for c in "\r\n\0")  # never a second header line
    }
