"""Sealed `requestState` for composite runs that ask a 2026-07-28 client a question.

A 2026-07-28 call is stateless: the façade answers an elicitation step with an
`InputRequiredResult`, and the client retries the same `tools/call` with its answers and the
`requestState` it was given. That state names the run and the steps asked, so it must not be
forgeable (a client could otherwise answer another caller's run) nor readable (run ids are for the
caller who started the run). It is sealed with AES-256-GCM under a key every façade replica shares,
so the retry may reach any replica, and a restarted one, within `STATE_LIFETIME`.

The key: the environment variable `VMCP_REQUEST_STATE_KEY` (64 hex digits), else the file
`server.request_state_key_file` (created with a fresh key, mode 0600, when missing). Replicas
behind one load balancer must share it: mount the same secret file, or set the variable.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

logger = logging.getLogger(__name__)

KEY_ENV = "VMCP_REQUEST_STATE_KEY"
STATE_LIFETIME = 24 * 3600.0
"""How long a client may take to answer before it must call the tool again (the run still
waits, for its step's own timeout; its answer can also come by signal)."""
_AAD = b"vmcp/request-state/v1"
_NONCE = 12


class InvalidState(Exception):
    """The requestState was not sealed by this deployment, was altered, or has expired."""


@dataclass(frozen=True)
class PendingQuestions:
    run_id: str
    tool: str
    steps: dict[str, str]  # input-request key -> elicitation step id
    # who was asked (issuer and subject): only they may answer with this state
    asked: dict[str, Any] = field(default_factory=dict)


class RequestStateSealer:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the request-state key must be 32 bytes (64 hex digits)")
        self._aead = AESGCM(key)

    @classmethod
    def from_environment_or_file(cls, key_file: Path) -> RequestStateSealer:
        value = os.environ.get(KEY_ENV)
        if value:
            try:
                return cls(bytes.fromhex(value.strip()))
            except ValueError as exc:
                raise ValueError(f"{KEY_ENV}: {exc}") from None
        return cls(_key_from_file(key_file))

    def seal(self, pending: PendingQuestions, lifetime: float = STATE_LIFETIME) -> str:
        body = {"run": pending.run_id, "tool": pending.tool, "steps": pending.steps, "asked": pending.asked}
        return self.seal_body(body, _AAD, lifetime)

    def open(self, token: str) -> PendingQuestions:
        body = self.open_body(
            token,
            _AAD,
            "requestState was not issued by this vmcp, or was altered",
            "requestState has expired: call the tool again to get a new one",
        )
        asked = body.get("asked")
        return PendingQuestions(
            run_id=str(body["run"]),
            tool=str(body["tool"]),
            steps=dict(body["steps"]),
            asked=dict(asked) if isinstance(asked, dict) else {},
        )

    def seal_body(self, body: dict[str, Any], purpose: bytes, lifetime: float) -> str:
        """`body` sealed for `purpose` (bound as associated data: a token sealed for one purpose
        never opens as another), valid for `lifetime` seconds; URL-safe base64."""
        nonce = secrets.token_bytes(_NONCE)
        plain = json.dumps({**body, "exp": time.time() + lifetime}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(nonce + self._aead.encrypt(nonce, plain, purpose)).decode().rstrip("=")

    def open_body(self, token: str, purpose: bytes, forged: str, expired: str) -> dict[str, Any]:
        """What `seal_body` sealed for `purpose`; InvalidState (`forged` or `expired`) otherwise."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            if base64.urlsafe_b64encode(raw).decode().rstrip("=") != token:
                # another spelling of the same bytes (unused low bits of the last character):
                # one sealed value has one token, so an altered one never opens
                raise ValueError("not the canonical encoding")
            body = json.loads(self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], purpose))
        except (ValueError, InvalidTag, TypeError):
            raise InvalidState(forged) from None
        if not isinstance(body, dict) or float(body.get("exp", 0)) < time.time():
            raise InvalidState(expired)
        return body


def _key_from_file(path: Path) -> bytes:
    try:
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        pass
    except ValueError as exc:
        raise ValueError(f"{path}: not a 64-hex-digit key ({exc})") from None
    key = secrets.token_bytes(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another replica or process wrote it first: use theirs
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key.hex() + "\n")
    logger.info("created the request-state key %s (replicas must share it)", path)
    return key
