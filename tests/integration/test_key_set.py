"""The issuer's key set as vmcp fetches it, against a JWKS endpoint on 127.0.0.1: a token without a
key id is checked against a set of one key; made-up key ids, or an issuer that fails, cost the
issuer one request per cooldown — never one per token — and the keys already known stay in use."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.http_endpoint import JsonEndpoint
from vmcp.pipeline.tokens import KeySet

pytestmark = [pytest.mark.integration]


def _jwks(keys: dict[str, Any]) -> dict[str, Any]:
    entries = []
    for kid, key in keys.items():
        public = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        entries.append({**public, "kid": kid, "use": "sig", "alg": "RS256"})
    return {"keys": entries}


def test_a_token_without_a_key_id_uses_the_sets_only_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuer = JsonEndpoint(lambda received: (200, _jwks({"only": key})))
    try:
        keys = KeySet(issuer.url, lifespan=300, cooldown=30)
        token = jwt.encode({"sub": "a"}, key, algorithm="RS256")  # no kid
        found = keys.key_for(jwt.get_unverified_header(token).get("kid"))
        assert jwt.decode(token, found.key, algorithms=["RS256"])["sub"] == "a"
    finally:
        issuer.close()


def test_made_up_key_ids_cost_the_issuer_one_request_per_cooldown() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuer = JsonEndpoint(lambda received: (200, _jwks({"k1": key})))
    try:
        keys = KeySet(issuer.url, lifespan=300, cooldown=60)
        assert keys.key_for("k1").key_id == "k1"
        for _ in range(50):
            with pytest.raises(jwt.PyJWKClientError, match="no key"):
                keys.key_for(uuid.uuid4().hex)
        assert len(issuer.requests) == 1  # the first fetch; the made-up ids fell inside its cooldown
    finally:
        issuer.close()


def test_an_issuer_that_fails_is_not_asked_again_within_the_cooldown_and_known_keys_stay() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    answers = [(200, _jwks({"k1": key}))]
    issuer = JsonEndpoint(lambda received: answers[-1])
    try:
        keys = KeySet(issuer.url, lifespan=0, cooldown=0.5)  # every use wants a fresh set
        assert keys.key_for("k1").key_id == "k1"
        answers.append((503, {"error": "down"}))
        time.sleep(0.6)  # the cooldown passes: the next use asks the (now failing) issuer
        for _ in range(20):
            assert keys.key_for("k1").key_id == "k1"  # the keys it had still verify
        assert len(issuer.requests) == 2  # one failed fetch, not twenty: the cooldown holds after a failure
    finally:
        issuer.close()
