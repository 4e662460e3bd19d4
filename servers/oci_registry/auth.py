"""Registry authentication: answering a `WWW-Authenticate` challenge, and where credentials come from.

Registries (Docker Hub, GHCR, Harbor, …) answer an anonymous request with 401 and a Bearer challenge
naming a token service (`realm`), the `service` and the `scope` to ask for; the token service hands
out a short-lived token, anonymously for public images. A few registries challenge with Basic instead.
Credentials are only ever sent in answer to a challenge, and to a token realm only over HTTPS or on the
registry's own host, so a hostile realm URL cannot harvest them over plain HTTP.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

import httpx

from .errors import BadResponse, Unauthorized, Unreachable
from .refs import normalize_registry

CREDENTIAL_ENV = ("VMCP_OCI_USERNAME", "VMCP_OCI_PASSWORD", "VMCP_OCI_REGISTRY")
_PARAM_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')


def credentials_from_env(environ: Mapping[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """Basic credentials from VMCP_OCI_USERNAME / VMCP_OCI_PASSWORD, for VMCP_OCI_REGISTRY (default docker.io)."""
    env = os.environ if environ is None else environ
    user, password, registry = (env.get(name, "") for name in CREDENTIAL_ENV)
    if not user:
        return {}
    return {normalize_registry(registry or "docker.io"): (user, password)}


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="…",service="…",scope="…"` → ("bearer", {"realm": …, "service": …, "scope": …})."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for key, value in _PARAM_RE.findall(rest):
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[key.lower()] = value
    return scheme.lower(), params


def basic_authorization(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def may_send_credentials(registry_base_url: str, realm: str) -> bool:
    """Credentials go to a token realm over HTTPS, or to the registry's own host."""
    target = urlsplit(realm)
    return target.scheme == "https" or target.netloc == urlsplit(registry_base_url).netloc


async def answer_challenge(
    client: httpx.AsyncClient,
    *,
    registry: str,
    registry_base_url: str,
    repository: str,
    challenge: str,
    credentials: tuple[str, str] | None,
    what: str,
) -> str:
    """The `Authorization` header value that answers `challenge` for a pull of `repository`."""
    scheme, params = parse_challenge(challenge)
    if scheme == "basic":
        if credentials is None:
            names = ", ".join(CREDENTIAL_ENV)
            raise Unauthorized(f"unauthorized: {registry} wants a username and password for {what} (set {names})")
        return basic_authorization(*credentials)
    realm = params.get("realm", "")
    if scheme != "bearer" or not realm:
        raise Unauthorized(f"unauthorized: {registry} refused {what} without a usable challenge")
    query: dict[str, str | list[str]] = {"scope": params.get("scope", f"repository:{repository}:pull").split()}
    if params.get("service"):
        query["service"] = params["service"]
    auth = None
    if credentials is not None and may_send_credentials(registry_base_url, realm):
        auth = httpx.BasicAuth(*credentials)
    token_what = f"token for {what} from {realm}"
    try:
        response = await client.get(realm, params=query, auth=auth)
    except httpx.TransportError as exc:
        cause = f"{type(exc).__name__}: {exc}"
        raise Unreachable(f"token service of {registry} is unreachable at {realm} ({cause})") from None
    except httpx.HTTPError as exc:
        raise BadResponse(f"{token_what}: {type(exc).__name__}: {exc}") from None
    if response.status_code in (401, 403):
        raise Unauthorized(f"unauthorized: the token service refused a {token_what} (HTTP {response.status_code})")
    if not response.is_success:
        raise BadResponse(f"{token_what}: HTTP {response.status_code}")
    try:
        body = response.json()
        token = body.get("token") or body.get("access_token")
    except (ValueError, AttributeError):
        token = None
    if not isinstance(token, str) or not token:
        raise BadResponse(f"{token_what}: the answer holds no token")
    return f"Bearer {token}"
