"""Encryption at rest, without S3: the sealed format (storage.sealing) and the keyring (storage.keyring)."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from hub.errors import ConfigError
from storage import sealing
from storage.keyring import Keyring, add_key, ensure_key_file, new_kek, open_keyring, remove_key
from storage.sealing import SEGMENT, DecryptionError, Kek

KEY = "cda/ab/" + "ab" * 32


def _seal(data: bytes, kek: Kek, key: str = KEY) -> tuple[dict[str, str], bytes]:
    sealed, pieces = sealing.seal(data, kek, key)
    body = b"".join(pieces)
    assert len(body) == sealed.length
    return sealed.metadata, body


def _open(metadata: dict[str, str], body: bytes, kek: Kek, key: str = KEY) -> bytes:
    return sealing.open_bytes(body, sealing.unwrap(metadata[sealing.META_DEK], kek, key), key)


@pytest.mark.parametrize("size", [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 17])
def test_round_trip_at_every_segment_boundary(size: int) -> None:
    kek, data = new_kek(), os.urandom(size)
    metadata, body = _seal(data, kek)

    assert _open(metadata, body, kek) == data
    assert sealing.plain_length(len(body)) == size
    assert metadata[sealing.META_KEK] == kek.id and metadata[sealing.META_FORMAT] == "1"


def test_the_same_bytes_seal_differently_each_time() -> None:
    kek, data = new_kek(), b"<ClinicalDocument/>" * 100
    (m1, b1), (m2, b2) = _seal(data, kek), _seal(data, kek)

    assert b1 != b2 and m1[sealing.META_DEK] != m2[sealing.META_DEK]
    assert data not in b1


def test_a_flipped_bit_anywhere_in_the_body_is_refused() -> None:
    kek, data = new_kek(), os.urandom(2 * SEGMENT + 10)
    metadata, body = _seal(data, kek)
    for offset in (0, 9, sealing.HEADER_SIZE + 5, sealing.HEADER_SIZE + SEGMENT + 20, len(body) - 1):
        tampered = bytearray(body)
        tampered[offset] ^= 0x01
        with pytest.raises(DecryptionError):
            _open(metadata, bytes(tampered), kek)


def test_cut_reordered_or_extended_bodies_are_refused() -> None:
    kek, data = new_kek(), os.urandom(3 * SEGMENT)
    metadata, body = _seal(data, kek)
    step, head = SEGMENT + sealing.TAG, sealing.HEADER_SIZE
    segments = [body[head + i * step: head + (i + 1) * step] for i in range(3)]
    for variant in (body[: head + 2 * step],  # the last segment dropped: the new last one is not flagged last
                    body[:head] + segments[1] + segments[0] + segments[2],
                    body + os.urandom(sealing.TAG),
                    body[:-1]):
        with pytest.raises(DecryptionError):
            _open(metadata, variant, kek)


def test_a_body_under_another_object_key_is_refused() -> None:
    kek = new_kek()
    metadata, body = _seal(b"patient A's document", kek)

    with pytest.raises(DecryptionError):
        _open(metadata, body, kek, key="cda/cd/" + "cd" * 32)  # the wrap is bound to the key
    dek = sealing.unwrap(metadata[sealing.META_DEK], kek, KEY)
    with pytest.raises(DecryptionError):  # and so is each segment
        sealing.open_bytes(body, dek, "cda/cd/" + "cd" * 32)


def test_a_wrong_kek_or_a_relabelled_kek_id_is_refused() -> None:
    kek = new_kek()
    metadata, _ = _seal(b"x", kek)

    with pytest.raises(DecryptionError):
        sealing.unwrap(metadata[sealing.META_DEK], Kek(id=kek.id, key=os.urandom(32)), KEY)
    with pytest.raises(DecryptionError):
        sealing.unwrap(metadata[sealing.META_DEK], Kek(id="kek-other", key=kek.key), KEY)
    with pytest.raises(DecryptionError):
        sealing.unwrap("not base64!", kek, KEY)


def test_rewrap_keeps_the_body_readable_under_the_new_kek_only() -> None:
    old, new = new_kek(), new_kek()
    metadata, body = _seal(b"kept as it is", old)

    wrapped = sealing.rewrap(metadata[sealing.META_DEK], old, new, KEY)

    assert sealing.open_bytes(body, sealing.unwrap(wrapped, new, KEY), KEY) == b"kept as it is"
    with pytest.raises(DecryptionError):
        sealing.unwrap(wrapped, old, KEY)


def test_a_kek_never_prints_its_key() -> None:
    kek = new_kek()
    assert kek.key.hex() not in repr(kek) and base64.b64encode(kek.key).decode() not in repr(kek)


# -- keyring -------------------------------------------------------------------------------------------------

def test_the_embedded_default_creates_a_private_key_file_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = open_keyring(environ={}, kek_file="", data_dir=data_dir, embedded=True)
    again = open_keyring(environ={}, kek_file="", data_dir=data_dir, embedded=True)

    path = data_dir / "keys" / "kek.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert first.current() == again.current()


def test_production_without_a_key_is_a_config_error_naming_the_ways_to_give_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MESHUB_KEK"):
        open_keyring(environ={}, kek_file="", data_dir=tmp_path, embedded=False)
    with pytest.raises(ConfigError, match="does not exist"):  # a configured file is never invented
        open_keyring(environ={}, kek_file=str(tmp_path / "missing.json"), data_dir=tmp_path, embedded=False)
    with pytest.raises(ConfigError, match="does not exist"):
        open_keyring(environ={"MESHUB_KEK_FILE": str(tmp_path / "gone.json")}, kek_file="", data_dir=tmp_path,
                     embedded=True)


def test_the_environment_keyring_first_entry_is_current() -> None:
    a, b = new_kek(), new_kek()
    value = f"{a.id}={base64.b64encode(a.key).decode()}, {b.id}={base64.b64encode(b.key).decode()}"

    ring = open_keyring(environ={"MESHUB_KEK": value}, kek_file="/nonexistent", data_dir=Path("/nonexistent"),
                        embedded=False)

    assert ring.current() == a and ring.get(b.id) == b and ring.path is None


@pytest.mark.parametrize("value", ["", "no-equals", "k1=bm90MzJieXRlcw==", "bad id!=" + "A" * 44])
def test_a_malformed_environment_keyring_is_refused(value: str) -> None:
    with pytest.raises(ConfigError):
        Keyring.from_env_value(value if value else " , ")


def test_new_and_retire_change_the_file_and_a_running_keyring_sees_it(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    ring, created = ensure_key_file(path)
    old = ring.current()
    assert created

    new = add_key(path)

    assert ring.get(new.id) == new  # an id it does not know yet re-reads the file at once
    assert ring.current() == new and ring.get(old.id) == old
    with pytest.raises(ConfigError, match="current"):
        remove_key(path, new.id)
    remove_key(path, old.id)
    ring.reload()
    assert ring.get(old.id) is None
    assert Keyring.from_file(path).ids() == [new.id]


def test_a_corrupt_key_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    path.write_text('{"format": "meshub-keyring/1", "current": "k", "keys": {"k": {"key": "c2hvcnQ="}}}')
    with pytest.raises(ConfigError, match="32 bytes"):
        Keyring.from_file(path)
