"""Outgoing credentials through a real façade (`vmcp serve`): each fault backend reports a digest of
the credential it received (`whoami`), a local token endpoint on 127.0.0.1 issues client-credentials
tokens, and client headers pass only where `pass_headers` allows."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.http_endpoint import JsonEndpoint, Received

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

BEARER = f"bearer-{uuid.uuid4().hex}"
API_KEY = f"key-{uuid.uuid4().hex}"
CLIENT_SECRET = f"secret-{uuid.uuid4().hex}"
ENV_NAME = "VMCP_TEST_BACKEND_TOKEN"


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


class TokenEndpoint(JsonEndpoint):
    """An OAuth token endpoint for client `vmcp`: client credentials, and RFC 8693 token exchange
    (it remembers which subject token each exchanged token was issued for)."""

    def __init__(self) -> None:
        self.issued: list[str] = []
        self.exchanged: dict[str, str] = {}  # exchanged token -> the subject token it replaced
        super().__init__(self._answer)
        self.url += "/token"

    @property
    def forms(self) -> list[dict[str, list[str]]]:
        return [received.form() for received in self.requests]

    def _answer(self, received: Received) -> tuple[int, Any]:
        form = received.form()
        grant = form.get("grant_type", [""])[0]
        if received.headers.get("Authorization") != basic("vmcp", CLIENT_SECRET):
            return 401, {"error": "invalid_client"}
        if grant == "client_credentials":
            token = f"cc-{len(self.issued) + 1}-{uuid.uuid4().hex[:8]}"
            self.issued.append(token)
            return 200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600}
        if grant == "urn:ietf:params:oauth:grant-type:token-exchange" and "subject_token" in form:
            token = f"ex-{uuid.uuid4().hex[:12]}"
            self.exchanged[token] = form["subject_token"][0]
            return 200, {"access_token": token, "issued_token_type": form["subject_token_type"][0]}
        return 400, {"error": "unsupported_grant_type"}


def basic(client: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client}:{secret}".encode()).decode()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[TokenEndpoint]:
    served = TokenEndpoint()
    yield served
    served.close()


@pytest.fixture(scope="module")
def served(module_procs: Any, endpoint: TokenEndpoint) -> Iterator[Any]:
    key_file = module_procs.workdir / "api-key"
    key_file.write_text(API_KEY + "\n")
    secret_file = module_procs.workdir / "client-secret"
    secret_file.write_text(CLIENT_SECRET)
    backends = [
        {"name": "a", "auth": {"type": "bearer", "token": "${" + ENV_NAME + "}"}},
        {"name": "b", "auth": {"type": "header", "header": "X-Api-Key", "token_file": str(key_file)}},
        {
            "name": "c",
            "auth": {
                "type": "client_credentials",
                "token_url": endpoint.url,
                "client_id": "vmcp",
                "client_secret_file": str(secret_file),
                "scope": "tools:call",
            },
        },
        {"name": "d", "pass_headers": ["X-Request-Id"]},
    ]
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        "backends": [
            {**backend, "transport": "streamable-http", "url": module_procs.fault_http(str(backend["name"])).url}
            for backend in backends
        ],
    }
    os.environ[ENV_NAME] = BEARER  # inherited by `vmcp serve`: the config holds only the reference
    try:
        yield module_procs.vmcp(config, filename="credentials.yaml")
    finally:
        os.environ.pop(ENV_NAME, None)


async def _whoami(served: Any, backend: str, mode: str, request_id: str = "") -> dict[str, str]:
    headers = {"X-Request-Id": request_id} if request_id else {}
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        Client(streamable_http_client(served.url, http_client=http), mode=mode) as client,  # type: ignore[arg-type]
    ):
        result = await client.call_tool(f"{backend}_whoami", {})
    assert not result.is_error, result
    assert result.structured_content is not None
    return dict(result.structured_content)


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])  # the SDK client's session, and the lean path
async def test_each_backend_receives_only_its_own_credential(served: Any, endpoint: TokenEndpoint, mode: str) -> None:
    a, b, c, d = [await _whoami(served, name, mode) for name in "abcd"]
    assert a == {"authorization": digest(f"Bearer {BEARER}"), "x-request-id": ""}
    assert b == {"x-api-key": digest(API_KEY), "x-request-id": ""}
    assert c["authorization"] in {digest(f"Bearer {token}") for token in endpoint.issued}
    assert "x-api-key" not in c
    assert d == {"x-request-id": ""}


async def test_a_client_credentials_token_is_fetched_once_and_reused(served: Any, endpoint: TokenEndpoint) -> None:
    for mode in ("legacy", "2026-07-28", "2026-07-28"):
        await _whoami(served, "c", mode)
    assert len(endpoint.issued) == 1  # one token for the connection's listing and every call since
    assert endpoint.forms[0]["scope"] == ["tools:call"]


async def test_only_allowed_client_headers_pass(served: Any) -> None:
    request_id = f"req-{uuid.uuid4().hex[:8]}"
    assert (await _whoami(served, "d", "2026-07-28", request_id))["x-request-id"] == request_id
    assert (await _whoami(served, "a", "2026-07-28", request_id))["x-request-id"] == ""


async def test_a_rotated_secret_file_is_read_again(served: Any, module_procs: Any) -> None:
    key_file = anyio.Path(module_procs.workdir / "api-key")
    rotated = f"key-{uuid.uuid4().hex}"
    await key_file.write_text(rotated)
    os.utime(key_file, (1, 1))  # a new mtime even within the file system's clock resolution
    assert (await _whoami(served, "b", "2026-07-28"))["x-api-key"] == digest(rotated)
    await key_file.write_text(API_KEY)
