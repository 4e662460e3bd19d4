"""The payload codec and its key ring (`vmcp.runs.payload_codec`), without a server: what a
sealed payload shows, what opens it, and every way a ring can be wrong, said plainly."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload

from vmcp.runs.payload_codec import (
    COMPRESSION,
    ENCODING,
    KEY_ID,
    EncryptionCodec,
    KeyRing,
    KeyRingError,
    MissingKey,
    read_key_file,
    write_key_file,
)

pytestmark = pytest.mark.anyio

SECRET = b'{"secret": "' + b"ZEBRA" * 40 + b'"}'


def _payload(data: bytes = SECRET) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=data)


async def test_a_sealed_payload_shows_nothing_and_opens_to_the_original() -> None:
    codec = EncryptionCodec(KeyRing.new())
    [sealed] = await codec.encode([_payload()])
    assert sealed.metadata["encoding"] == ENCODING and sealed.metadata[KEY_ID] == b"k1"
    assert sealed.metadata[COMPRESSION] == b"zlib"  # repetitive: compressed first
    assert b"ZEBRA" not in sealed.data and b"json/plain" not in sealed.data
    [opened] = await codec.decode([sealed])
    assert opened == _payload()
    [again] = await codec.encode([_payload()])
    assert again.data != sealed.data  # a fresh nonce every time


async def test_an_incompressible_payload_is_not_marked_compressed() -> None:
    codec = EncryptionCodec(KeyRing.new())
    noise = os.urandom(200)
    [sealed] = await codec.encode([_payload(noise)])
    assert COMPRESSION not in sealed.metadata
    assert (await codec.decode([sealed]))[0].data == noise


async def test_after_a_rotation_old_payloads_open_and_new_ones_use_the_new_key() -> None:
    first = KeyRing.new()
    [old] = await EncryptionCodec(first).encode([_payload()])
    rotated = first.rotated()
    assert rotated.current == "k2" and set(rotated.keys) == {"k1", "k2"}
    codec = EncryptionCodec(rotated)
    [new] = await codec.encode([_payload()])
    assert new.metadata[KEY_ID] == b"k2"
    assert [p.data for p in await codec.decode([old, new])] == [SECRET, SECRET]


async def test_a_payload_in_clear_passes_through_and_a_missing_or_wrong_key_is_named() -> None:
    codec = EncryptionCodec(KeyRing.new())
    assert await codec.decode([_payload()]) == [_payload()]  # written before encryption was on
    [sealed] = await EncryptionCodec(KeyRing.new().rotated()).encode([_payload()])
    with pytest.raises(MissingKey, match="'k2', which is not in this process's key ring"):
        await codec.decode([sealed])
    [mine] = await codec.encode([_payload()])
    tampered = Payload(metadata=mine.metadata, data=mine.data[:-1] + bytes([mine.data[-1] ^ 1]))
    with pytest.raises(MissingKey, match="does not open"):
        await codec.decode([tampered])
    relabelled = Payload(metadata={**mine.metadata, KEY_ID: b"k1"}, data=mine.data)
    other = EncryptionCodec(KeyRing.new())  # another ring's k1
    with pytest.raises(MissingKey, match="does not open"):
        await other.decode([relabelled])


@pytest.mark.parametrize(
    ("ring", "says"),
    [
        ("not json", "not JSON"),
        ('{"current": "k1"}', "expected"),
        ('{"current": "k1", "keys": {"k1": "***"}}', "not base64"),
        ('{"current": "k1", "keys": {"k1": "' + base64.b64encode(b"short").decode() + '"}}', "AES-256 needs 32"),
        (
            '{"current": "k9", "keys": {"k1": "' + base64.b64encode(bytes(32)).decode() + '"}}',
            "'k9' is not in the ring",
        ),
        ('{"current": "a b", "keys": {"a b": "' + base64.b64encode(bytes(32)).decode() + '"}}', "key id 'a b'"),
    ],
)
def test_a_broken_ring_is_refused_saying_what_is_wrong(ring: str, says: str) -> None:
    with pytest.raises(KeyRingError, match=says):
        KeyRing.parse(ring, "temporal.encryption.keys_env (KEYS)")


def test_the_key_file_is_written_for_its_owner_only_and_refused_when_others_can_read_it(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "ring.json"
    ring = KeyRing.new().rotated()
    write_key_file(path, ring)
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_key_file(path) == ring and json.loads(path.read_text())["current"] == "k2"
    path.chmod(0o644)
    with pytest.raises(KeyRingError, match="readable by others"):
        read_key_file(path)
    with pytest.raises(KeyRingError, match="cannot read"):
        read_key_file(tmp_path / "missing.json")
