"""Sealed values (requestState, relayed task ids): one token per sealed value, bound to its
purpose; any other spelling, purpose or key is refused."""

from __future__ import annotations

import secrets
import string

import pytest

from vmcp.runs.request_state import InvalidState, RequestStateSealer

ALPHABET = string.ascii_letters + string.digits + "-_"


def _opens(sealer: RequestStateSealer, token: str, purpose: bytes = b"test/v1") -> bool:
    try:
        sealer.open_body(token, purpose, "forged", "expired")
    except InvalidState:
        return False
    return True


def test_a_token_with_any_other_last_character_never_opens() -> None:
    """The last base64 character may carry unused bits: without a canonical check, changing
    them spelt the same sealed bytes, so an altered id still reached the task."""
    sealer = RequestStateSealer(secrets.token_bytes(32))
    for size in range(1, 40):  # every remainder of the encoded length
        token = sealer.seal_body({"v": "x" * size}, b"test/v1", 60)
        assert _opens(sealer, token)
        assert not any(_opens(sealer, token[:-1] + c) for c in ALPHABET if c != token[-1]), token


def test_a_token_opens_only_for_its_purpose_key_and_lifetime() -> None:
    sealer = RequestStateSealer(secrets.token_bytes(32))
    token = sealer.seal_body({"v": 1}, b"test/v1", 60)
    assert not _opens(sealer, token, b"other/v1")
    assert not _opens(RequestStateSealer(secrets.token_bytes(32)), token)
    assert not _opens(sealer, sealer.seal_body({"v": 1}, b"test/v1", -1))
    with pytest.raises(InvalidState, match="forged"):
        sealer.open_body("not base64 at all!", b"test/v1", "forged", "expired")
