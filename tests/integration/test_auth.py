"""Incoming OAuth through a real façade (`vmcp serve`): a local issuer serves its JWKS on 127.0.0.1,
the test mints tokens, and the MCP SDK client (or plain HTTP, for the refusals) presents them."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import VMCP
from tests.http_endpoint import JsonEndpoint, Received
from tests.integration.test_backend_credentials import CLIENT_SECRET, TokenEndpoint, basic, digest
from tests.support.processes import free_port
from tests.support.raw_session import SESSION_HEADERS, answer_of, open_session

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

AUDIENCE = "https://vmcp.test/mcp"
SCOPE = "mcp:tools"
METADATA_PATH = "/.well-known/oauth-protected-resource/mcp"


class Issuer(JsonEndpoint):
    """An OAuth issuer as far as a resource server sees one: signing keys, and a JWKS on 127.0.0.1."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {"k1": rsa.generate_private_key(public_exponent=65537, key_size=2048)}
        super().__init__(lambda received: (200, self.jwks()))
        self.url += "/"

    @property
    def fetches(self) -> int:
        return len(self.requests)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in list(self.keys.items()):
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def auth_settings(self) -> dict[str, Any]:
        """vmcp's `auth:` section for tokens of this issuer."""
        return {
            "mode": "oauth",
            "issuer": self.url,
            "audience": AUDIENCE,
            "jwks_url": self.url + "jwks.json",
            "required_scopes": [SCOPE],
        }

    def token(self, *, kid: str = "k1", key: Any = None, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.url, "aud": AUDIENCE, "sub": "alice", "exp": now + 300, "iat": now, "scope": SCOPE}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, key or self.keys[kid], algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    served = Issuer()
    yield served
    served.close()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[TokenEndpoint]:
    served = TokenEndpoint()
    yield served
    served.close()


@pytest.fixture(scope="module")
def served(module_procs: Any, issuer: Issuer, endpoint: TokenEndpoint) -> Any:
    fault = module_procs.fault_http("fault")
    secret_file = module_procs.workdir / "exchange-secret"
    secret_file.write_text(CLIENT_SECRET)
    exchanging = module_procs.fault_http("exchanging")
    from vmcp.runs.payload_codec import KeyRing, write_key_file

    write_key_file(module_procs.workdir / "payload-keys.json", KeyRing.new())
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        # run data encrypted: the codec endpoint sits behind the same token as /status
        "temporal": {"encryption": {"key_file": str(module_procs.workdir / "payload-keys.json")}},
        # the default 30 s between forced refetches would slow the key-rotation test
        "auth": {**issuer.auth_settings(), "jwks_cooldown": "500ms"},
        "backends": [
            {"name": "fault", "transport": "streamable-http", "url": fault.url},
            {
                "name": "ex",
                "transport": "streamable-http",
                "url": exchanging.url,
                "auth": {
                    "type": "token_exchange",
                    "token_url": endpoint.url,
                    "client_id": "vmcp",
                    "client_secret_file": str(secret_file),
                    "audience": "https://ex.test",
                },
            },
        ],
        "aggregation": {
            "backends": {"fault": {"overrides": {"fetch": {"parameters": {"user": {"fixed": "{{ caller.subject }}"}}}}}}
        },
        "authorization": {
            "default": "deny",
            "rules": [
                {"tools": ["fault.fail"], "effect": "deny"},  # by its backend name: however it is advertised
                {"tools": ["fault.*", "ex.*"], "when": {"scopes": [SCOPE]}},
                {"tools": ["ops_*", "sneaky"], "when": {"groups": ["ops"]}},
            ],
        },
        "audit": {"file": str(module_procs.workdir / "audit.jsonl")},
        "composite_tools": [
            {"name": "ops_echo", "steps": [{"id": "say", "tool": "fault.echo", "arguments": {"text": "hi"}}]},
            {"name": "sneaky", "steps": [{"id": "boom", "tool": "fault_fail", "arguments": {"message": "x"}}]},
        ],
    }
    return module_procs.vmcp(config, filename="auth.yaml")


def _post(served: Any, token: str | None) -> httpx.Response:
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",  # a stateless request: no session to set up first
        "Mcp-Method": "server/discover",
    }
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    envelope = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": envelope}}
    return httpx.post(served.url, json=body, headers=headers, timeout=10)


def test_no_token_is_401_pointing_at_the_resource_metadata(served: Any, issuer: Issuer) -> None:
    response = _post(served, None)
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ") and f'resource_metadata="https://vmcp.test{METADATA_PATH}"' in challenge
    metadata = httpx.get(served.base + METADATA_PATH, timeout=10).json()
    assert metadata["resource"] == AUDIENCE
    assert metadata["authorization_servers"] == [issuer.url]
    assert metadata["scopes_supported"] == [SCOPE]


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "not_yet_valid",
        "wrong_audience",
        "wrong_issuer",
        "bad_signature",
        "no_subject",
        "empty_subject",
        "blank_subject",
        "numeric_subject",
        "garbage",
    ],
)
def test_a_bad_token_is_401(served: Any, issuer: Issuer, case: str) -> None:
    now = int(time.time())
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = {
        "expired": lambda: issuer.token(exp=now - 120),
        "not_yet_valid": lambda: issuer.token(nbf=now + 600),
        "wrong_audience": lambda: issuer.token(aud="https://other.test/mcp"),
        "wrong_issuer": lambda: issuer.token(iss="http://127.0.0.1:1/"),
        "bad_signature": lambda: issuer.token(key=stranger),  # signed by another key under the same kid
        "no_subject": lambda: issuer.token(sub=None),
        "empty_subject": lambda: issuer.token(sub=""),
        "blank_subject": lambda: issuer.token(sub="   "),
        "numeric_subject": lambda: issuer.token(sub=42),
        "garbage": lambda: "not-a-jwt",
    }[case]()
    response = _post(served, token)
    assert response.status_code == 401, (case, response.status_code, response.text)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_a_token_without_the_required_scope_is_403(served: Any, issuer: Issuer) -> None:
    response = _post(served, issuer.token(scope="something:else"))
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_valid_token_lists_and_calls_and_the_caller_reaches_templates(
    served: Any, issuer: Issuer, module_procs: Any, mode: str
) -> None:
    subject = f"user-{uuid.uuid4().hex[:6]}"
    headers = {"Authorization": f"Bearer {issuer.token(sub=subject)}"}
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        Client(streamable_http_client(served.url, http_client=http), mode=mode) as client,  # type: ignore[arg-type]
    ):
        names = {tool.name for tool in (await client.list_tools()).tools}
        result = await client.call_tool("fault_fetch", {"url": "https://a.example.test/"})
    assert "fault_echo" in names
    assert not result.is_error, result
    assert result.structured_content is not None and result.structured_content["user"] == subject


def test_keys_rotate_without_a_restart(served: Any, issuer: Issuer) -> None:
    issuer.keys["k2"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    time.sleep(0.6)  # past the refetch cooldown
    before = issuer.fetches
    response = _post(served, issuer.token(kid="k2"))
    assert response.status_code == 200, response.text
    assert issuer.fetches > before  # an unknown kid made vmcp fetch the set again


def test_anonymous_mode_refuses_a_non_loopback_address(module_procs: Any) -> None:
    config_file = module_procs.workdir / "open.yaml"
    config_file.write_text("server: {host: 0.0.0.0, port: 0}\nbackends: []\n")
    refused = subprocess.run(
        [VMCP, "serve", "--config", str(config_file), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert "auth.mode is anonymous" in refused.stderr and "force_anonymous" in refused.stderr
    assert "Traceback" not in refused.stderr


async def _as(served: Any, token: str, mode: str = "2026-07-28") -> tuple[set[str], Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        Client(streamable_http_client(served.url, http_client=http), mode=mode) as client,  # type: ignore[arg-type]
    ):
        names = {tool.name for tool in (await client.list_tools()).tools}
        refused = {
            name: (await client.call_tool(name, {"message": "x"} if name == "fault_fail" else {})).is_error
            for name in ("fault_fail", "ops_echo", "sneaky")
        }
    return names, refused


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_callers_see_only_what_they_may_call_and_are_refused_the_rest(
    served: Any, issuer: Issuer, mode: str
) -> None:
    names, refused = await _as(served, issuer.token(sub="alice"), mode)
    assert "fault_echo" in names and "fault_fail" not in names  # denied by its backend name
    assert "ops_echo" not in names and "sneaky" not in names  # alice is not in ops
    assert refused == {"fault_fail": True, "ops_echo": True, "sneaky": True}


async def test_a_composite_is_no_way_around_a_backend_denial(served: Any, issuer: Issuer) -> None:
    names, _ = await _as(served, issuer.token(sub="bob", groups=["ops"]))
    assert "ops_echo" in names  # bob may call it and everything its steps call
    assert "sneaky" not in names  # bob may call `sneaky`, but not the fault.fail its step calls
    headers = {"Authorization": f"Bearer {issuer.token(sub='bob', groups=['ops'])}"}
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        Client(streamable_http_client(served.url, http_client=http)) as client,  # type: ignore[arg-type]
    ):
        result = await client.call_tool("sneaky", {})
    assert result.is_error and "not available to you" in result.content[0].text  # type: ignore[union-attr]


async def test_every_call_is_in_the_audit_trail_without_secrets(served: Any, issuer: Issuer) -> None:
    token = issuer.token(sub="auditor")
    await _as(served, token)
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        Client(streamable_http_client(served.url, http_client=http)) as client,  # type: ignore[arg-type]
    ):
        assert not (await client.call_tool("fault_echo", {"text": "audited"})).is_error
    text = (served.config_file.parent / "audit.jsonl").read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    mine = [line for line in lines if line.get("subject") == "auditor"]
    by_tool = {line["tool"]: line for line in mine}
    assert by_tool["fault_fail"]["decision"] == "deny" and by_tool["fault_fail"]["outcome"] == "refused"
    assert by_tool["sneaky"]["decision"] == "deny"
    echo = by_tool["fault_echo"]
    assert echo["decision"] == "allow" and echo["outcome"] == "ok" and echo["backend"] == "fault"
    assert echo["duration_ms"] >= 0 and echo["time"].endswith("+00:00")
    assert token not in text and token.split(".")[2] not in text  # no token, not even its signature


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_token_exchange_backend_gets_each_callers_own_exchanged_token(
    served: Any, issuer: Issuer, endpoint: TokenEndpoint, mode: str
) -> None:
    seen: dict[str, str] = {}
    tokens = {who: issuer.token(sub=f"{who}-{mode}") for who in ("alice", "bob")}
    for who, token in [*tokens.items(), ("alice", tokens["alice"])]:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx2.AsyncClient(headers=headers) as http,
            Client(streamable_http_client(served.url, http_client=http), mode=mode) as client,  # type: ignore[arg-type]
        ):
            result = await client.call_tool("ex_whoami", {})
        assert not result.is_error, result
        seen.setdefault(who, (result.structured_content or {})["authorization"])
        assert (result.structured_content or {})["authorization"] == seen[who]  # alice again: the cached token
    by_digest = {digest(f"Bearer {token}"): subject for token, subject in endpoint.exchanged.items()}
    assert by_digest[seen["alice"]] == tokens["alice"] and by_digest[seen["bob"]] == tokens["bob"]
    exchanges = [form for form in endpoint.forms if form.get("subject_token", [""])[0] in tokens.values()]
    assert len(exchanges) == 2 and all(form["audience"] == ["https://ex.test"] for form in exchanges)


class Introspection(JsonEndpoint):
    """An RFC 7662 introspection endpoint that knows a few opaque tokens (client `vmcp-rs`)."""

    def __init__(self, issuer: str) -> None:
        now = int(time.time())
        good = {"active": True, "iss": issuer, "aud": AUDIENCE, "exp": now + 300, "scope": SCOPE}
        self.tokens: dict[str, dict[str, Any]] = {
            "opaque-carol": {**good, "sub": "carol", "client_id": "carol-cli"},
            "opaque-expired": {**good, "sub": "carol", "exp": now - 600},
            "opaque-elsewhere": {**good, "sub": "carol", "aud": "https://other.test/mcp"},
            "opaque-revoked": {"active": False},
        }
        super().__init__(self._answer)
        self.url += "/introspect"

    @property
    def asked(self) -> list[str]:
        return [received.form().get("token", [""])[0] for received in self.requests]

    def _answer(self, received: Received) -> tuple[int, Any]:
        if received.headers.get("Authorization") != basic("vmcp-rs", CLIENT_SECRET):
            return 401, {"error": "invalid_client"}
        return 200, self.tokens.get(received.form().get("token", [""])[0], {"active": False})


@pytest.fixture(scope="module")
def introspected(module_procs: Any, issuer: Issuer) -> Iterator[tuple[Any, Introspection]]:
    endpoint = Introspection(issuer.url)
    fault = module_procs.fault_http("fault-introspected")
    os.environ["VMCP_TEST_INTROSPECTION_SECRET"] = CLIENT_SECRET
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        "auth": {
            **{k: v for k, v in issuer.auth_settings().items() if k != "jwks_url"},
            "introspection_url": endpoint.url,
            "introspection_client_id": "vmcp-rs",
            "introspection_client_secret": "${VMCP_TEST_INTROSPECTION_SECRET}",
        },
        "backends": [{"name": "fault", "transport": "streamable-http", "url": fault.url}],
        "aggregation": {
            "backends": {"fault": {"overrides": {"fetch": {"parameters": {"user": {"fixed": "{{ caller.subject }}"}}}}}}
        },
    }
    try:
        yield module_procs.vmcp(config, filename="introspected.yaml"), endpoint
    finally:
        endpoint.close()
        os.environ.pop("VMCP_TEST_INTROSPECTION_SECRET", None)


@pytest.mark.parametrize("token", ["opaque-expired", "opaque-elsewhere", "opaque-revoked", "opaque-unknown"])
def test_introspection_refuses_what_the_issuer_does_not_vouch_for(
    introspected: tuple[Any, Introspection], token: str
) -> None:
    served, _ = introspected
    assert _post(served, token).status_code == 401


async def test_an_introspected_token_calls_as_its_subject_and_the_answer_is_cached(
    introspected: tuple[Any, Introspection],
) -> None:
    served, endpoint = introspected
    before = endpoint.asked.count("opaque-carol")
    async with (
        httpx2.AsyncClient(headers={"Authorization": "Bearer opaque-carol"}) as http,
        Client(streamable_http_client(served.url, http_client=http)) as client,  # type: ignore[arg-type]
    ):
        result = await client.call_tool("fault_fetch", {"url": "https://a.example.test/"})
        again = await client.call_tool("fault_fetch", {"url": "https://a.example.test/"})
    assert not result.is_error and not again.is_error
    assert (result.structured_content or {})["user"] == "carol"
    assert endpoint.asked.count("opaque-carol") - before == 1  # one introspection for several requests


@pytest.mark.parametrize("path", ["/status", "/metrics"])
def test_status_and_metrics_need_a_token_and_a_known_host(served: Any, issuer: Issuer, path: str) -> None:
    """What vmcp knows of its backends and callers is no stranger's: the same bearer token as /mcp,
    and the same Host check; the probes say only up or ready, and stay open."""
    url = served.base + path
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer garbage"}, timeout=10).status_code == 401
    bearer = {"Authorization": f"Bearer {issuer.token()}"}
    answered = httpx.get(url, headers=bearer, timeout=10)
    assert answered.status_code == 200 and ("backends" in answered.text or "vmcp_" in answered.text)
    rebound = httpx.get(url, headers={**bearer, "Host": "evil.example:80"}, timeout=10)
    assert rebound.status_code in (400, 403, 421) and "backends" not in rebound.text
    assert httpx.get(served.base + "/healthz", timeout=10).status_code == 200
    assert httpx.get(served.base + "/readyz", timeout=10).status_code == 200


def test_the_codec_endpoint_needs_a_token_but_answers_the_web_uis_preflight(served: Any, issuer: Issuer) -> None:
    """Whoever may call the codec may read every run: the same bearer token as /status. The Web
    UI's preflight carries no credentials, so it is answered without one (and says nothing)."""
    url = served.base + "/codec/encode"
    origin = "http://127.0.0.1:8233"
    headers = {"Content-Type": "application/json", "X-Namespace": "default", "Origin": origin}
    document = {"payloads": [{"metadata": {"encoding": "anNvbi9wbGFpbg=="}, "data": "InNlY3JldCI="}]}
    assert httpx.post(url, json=document, headers=headers, timeout=10).status_code == 401
    forged = {**headers, "Authorization": "Bearer garbage"}
    assert httpx.post(url, json=document, headers=forged, timeout=10).status_code == 401
    preflight = httpx.options(
        url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
        },
        timeout=10,
    )
    assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == origin
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower() and not preflight.content
    bearer = {**headers, "Authorization": f"Bearer {issuer.token()}"}
    sealed = httpx.post(url, json=document, headers=bearer, timeout=10)
    assert sealed.status_code == 200 and sealed.headers["access-control-allow-origin"] == origin, sealed.text
    opened = httpx.post(served.base + "/codec/decode", json=sealed.json(), headers=bearer, timeout=10)
    assert opened.status_code == 200 and opened.json() == document


async def test_a_handshake_session_lists_only_for_the_credential_that_opened_it(served: Any, issuer: Issuer) -> None:
    """Lists of a handshake-era session are answered from prepared pages after the first one
    (JSON, not SSE), for the view of the token on each request; another caller's token with this
    session's id is refused as the SDK refuses it (404), and cannot read the session's lists."""
    alice = {"Authorization": f"Bearer {issuer.token(sub='alice')}"}
    bob = {"Authorization": f"Bearer {issuer.token(sub='bob', groups=['ops'])}"}
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    async with httpx.AsyncClient(timeout=30, headers=alice) as http:
        session = await open_session(http, served.url, "lister")
        headers = {**SESSION_HEADERS, "Mcp-Session-Id": session}
        kinds, views = [], []
        for _ in range(2):
            response = await http.post(served.url, json=listing, headers=headers)
            kinds.append(response.headers["content-type"].split(";")[0])
            views.append({tool["name"] for tool in answer_of(response)["result"]["tools"]})
        assert kinds == ["text/event-stream", "application/json"]
        assert views[0] == views[1] and "fault_echo" in views[1] and "ops_echo" not in views[1]
        stolen = await http.post(served.url, json=listing, headers={**headers, **bob})
        assert stolen.status_code == 404, stolen.text
        assert "ops_echo" not in stolen.text and "fault_echo" not in stolen.text
