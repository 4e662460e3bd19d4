"""Run data private in Temporal: every payload vmcp's processes hand to Temporal is compressed and
encrypted (AES-256-GCM) before it leaves the process, and decrypted when it comes back.

A payload is what Temporal stores of a run: a composite's parameters, each step's arguments and
result, the run's summary. The codec wraps the whole serialized payload (its metadata too, so not
even the encoding of the original shows), compressed with zlib when that makes it smaller, then
sealed with the current key of the key ring under a fresh 96-bit nonce, the key id bound in as
associated data. The stored payload says `encoding: binary/encrypted` and which key sealed it;
every key of the ring stays usable for reading, so after a rotation older runs stay readable and
complete. A payload without that encoding is passed through as it is: runs started before
encryption was turned on carry on. A payload sealed with a key this process lacks fails loudly,
naming the key id. Search attributes never pass through a codec: vmcp keeps only the tool name,
the run's state and whether it waits for approval there (the owner is in the memo, encrypted).

The key ring is JSON — `{"current": "k2", "keys": {"k1": "<base64 of 32 bytes>", "k2": "…"}}` —
in a file (`temporal.encryption.key_file`, readable by its owner only) or an environment variable
(`temporal.encryption.keys_env`). `vmcp keys rotate` adds a key and makes it current.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import stat
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

if TYPE_CHECKING:
    from vmcp.config.models import VmcpConfig

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
COMPRESSION = "vmcp-compression"
_NONCE = 12
_KEY_BYTES = 32
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class KeyRingError(Exception):
    """The key ring cannot be used: the message says where it was looked for and what is wrong."""


class MissingKey(Exception):
    """A payload was sealed with a key this process does not have."""


@dataclass(frozen=True)
class KeyRing:
    current: str
    keys: Mapping[str, bytes]

    @classmethod
    def parse(cls, text: str, where: str) -> KeyRing:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise KeyRingError(f"{where}: not JSON ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("keys"), dict) or not data["keys"]:
            raise KeyRingError(f'{where}: expected {{"current": ID, "keys": {{ID: base64 key, …}}}}')
        keys: dict[str, bytes] = {}
        for key_id, encoded in data["keys"].items():
            if not KEY_ID_PATTERN.match(str(key_id)):
                raise KeyRingError(f"{where}: key id {key_id!r} must be 1-64 letters, digits, '_', '.', '-'")
            try:
                key = base64.b64decode(str(encoded), validate=True)
            except (binascii.Error, ValueError):
                raise KeyRingError(f"{where}: key {key_id!r} is not base64") from None
            if len(key) != _KEY_BYTES:
                raise KeyRingError(f"{where}: key {key_id!r} has {len(key)} bytes; AES-256 needs {_KEY_BYTES}")
            keys[str(key_id)] = key
        current = data.get("current")
        if current not in keys:
            raise KeyRingError(f"{where}: current key {current!r} is not in the ring ({', '.join(sorted(keys))})")
        return cls(str(current), keys)

    def dumps(self) -> str:
        encoded = {key_id: base64.b64encode(key).decode() for key_id, key in self.keys.items()}
        return json.dumps({"current": self.current, "keys": encoded}, indent=2) + "\n"

    def rotated(self) -> KeyRing:
        """This ring with a new random key, made current; the others stay, for reading."""
        numbers = [int(match.group(1)) for key_id in self.keys if (match := re.fullmatch(r"k(\d+)", key_id))]
        key_id = f"k{max(numbers, default=0) + 1}"
        while key_id in self.keys:
            key_id += "x"
        return KeyRing(key_id, {**self.keys, key_id: AESGCM.generate_key(bit_length=256)})

    @classmethod
    def new(cls) -> KeyRing:
        return cls("k1", {"k1": AESGCM.generate_key(bit_length=256)})


def read_key_file(path: Path) -> KeyRing:
    try:
        text = path.read_text()
        mode = path.stat().st_mode
    except OSError as exc:
        raise KeyRingError(f"temporal.encryption.key_file: cannot read {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyRingError(
            f"temporal.encryption.key_file: {path} is readable by others (mode {stat.S_IMODE(mode):o}); "
            "it holds the keys to every run's data: chmod 600 it"
        )
    return KeyRing.parse(text, f"temporal.encryption.key_file ({path})")


def write_key_file(path: Path, ring: KeyRing) -> None:
    """Write the ring readable by its owner only (created that way: never briefly open to others)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(ring.dumps())
    os.replace(partial, path)


class EncryptionCodec(PayloadCodec):
    def __init__(self, ring: KeyRing, *, compress: bool = True) -> None:
        self.ring = ring
        self._compress = compress
        self._ciphers = {key_id: AESGCM(key) for key_id, key in ring.keys.items()}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.seal(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.open(payload) for payload in payloads]

    def seal(self, payload: Payload) -> Payload:
        plain = payload.SerializeToString()
        metadata = {"encoding": ENCODING, KEY_ID: self.ring.current.encode()}
        if self._compress:
            packed = zlib.compress(plain, 6)
            if len(packed) < len(plain):
                plain, metadata[COMPRESSION] = packed, b"zlib"
        nonce = os.urandom(_NONCE)
        sealed = self._ciphers[self.ring.current].encrypt(nonce, plain, self.ring.current.encode())
        return Payload(metadata=metadata, data=nonce + sealed)

    def open(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written before encryption was turned on: as it is
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise MissingKey(
                f"a payload was encrypted with key {key_id!r}, which is not in this process's key ring "
                f"({', '.join(sorted(self.ring.keys))}): add it back to temporal.encryption's ring"
            )
        try:
            plain = cipher.decrypt(payload.data[:_NONCE], payload.data[_NONCE:], key_id.encode())
        except InvalidTag:
            raise MissingKey(
                f"a payload sealed with key {key_id!r} does not open with it: altered, or another key"
            ) from None
        if payload.metadata.get(COMPRESSION) == b"zlib":
            plain = zlib.decompress(plain)
        return Payload.FromString(plain)


def load_ring(config: VmcpConfig) -> KeyRing | None:
    """The key ring `temporal.encryption` names (None: encryption is off); KeyRingError, saying
    what is missing or wrong, when it cannot be used — a process must not start without it."""
    settings = config.temporal.encryption
    if settings is None:
        return None
    if settings.key_file is not None:
        return read_key_file(config.resolve_path(settings.key_file))
    assert settings.keys_env is not None
    text = os.environ.get(settings.keys_env)
    if not text:
        raise KeyRingError(f"temporal.encryption.keys_env: the environment variable {settings.keys_env} is not set")
    return KeyRing.parse(text, f"temporal.encryption.keys_env ({settings.keys_env})")


def codec_for(config: VmcpConfig) -> EncryptionCodec | None:
    ring = load_ring(config)
    if ring is None:
        return None
    assert config.temporal.encryption is not None
    return EncryptionCodec(ring, compress=config.temporal.encryption.compress)


class BadDocument(ValueError):
    """A codec request's body is not a `{"payloads": [...]}` document, or a payload is damaged."""


async def convert_document(codec: EncryptionCodec, body: bytes, *, encode: bool) -> dict[str, object]:
    """The remote codec protocol's conversion (`vmcp.pipeline.codec_server`): a JSON document of
    payloads (protobuf JSON, bytes in base64) encoded or decoded. MissingKey for a payload sealed
    with a key this process lacks; BadDocument for anything else wrong with it."""
    from google.protobuf import json_format
    from temporalio.api.common.v1 import Payloads

    payloads = Payloads()
    try:
        json_format.Parse(body, payloads)
    except json_format.ParseError as exc:
        raise BadDocument(f'expected {{"payloads": [{{"metadata": …, "data": …}}]}}: {exc}') from None
    try:
        converted = await (codec.encode if encode else codec.decode)(payloads.payloads)
    except MissingKey:
        raise
    except Exception as exc:  # bad compression, a protobuf that does not parse: damaged
        raise BadDocument(
            f"a payload could not be {'encoded' if encode else 'decoded'}: it is damaged ({exc})"
        ) from None
    document = json_format.MessageToDict(Payloads(payloads=converted))
    return {"payloads": document.get("payloads", [])}
