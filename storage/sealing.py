"""Sealed objects: the at-rest encryption format of everything the hub puts in object storage (pure: no I/O).

Owns: turning plaintext into the bytes an S3 object holds and back, and wrapping the object's data key.

Format (version 1):

| part | where | what |
|---|---|---|
| data key (DEK) | nowhere in clear | 32 random bytes per object (AES-256-GCM), new on every put |
| wrapped DEK | metadata `x-amz-meta-meshub-dek` | base64(nonce 12 ‖ AES-256-GCM(KEK, DEK) ‖ tag 16) |
| KEK id | metadata `x-amz-meta-meshub-kek` | which key-encryption key wrapped the DEK (storage.keyring) |
| format | metadata `x-amz-meta-meshub-enc` | `1`; absent on objects stored before encryption (plaintext) |
| header | body, 19 bytes | magic `MESHUBE`, version 1, segment size (u32 BE), nonce prefix (7 random bytes) |
| segments | body, after the header | the plaintext in 64 KiB segments, each AES-256-GCM(DEK) + 16-byte tag |

The DEK is wrapped with AAD = `meshub-dek/1` ‖ KEK id ‖ object key.
Each segment's nonce is prefix ‖ counter (u32 BE) ‖ last-flag (1 on the final segment, else 0), and its AAD is
the header followed by the object key.  So a segment cannot be moved, dropped, reordered or truncated away
(the final flag), a body cannot be put under another object key (the AAD), and a wrapped DEK cannot be copied
to another object or relabelled with another KEK id (the wrap's AAD).  An empty plaintext is one final
segment of 0 bytes.  The ciphertext is the plaintext's length + 19 + 16 per segment: only the length leaks.

Rotation re-wraps the DEK (unwrap with the old KEK, wrap with the current one) and rewrites the metadata
only: the body, and so the plaintext, is never read.
Does not: talk to S3 (storage.objects), hold or load keys (storage.keyring), or hash the plaintext (the
SHA-256 check after decryption is the store's).
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hub.errors import IntegrityError, StoreUnavailable

FORMAT = "1"
MAGIC = b"MESHUBE"
VERSION = 1
SEGMENT = 64 * 1024
TAG = 16
_HEADER = struct.Struct("!7sBI7s")  # magic, version, segment size, nonce prefix
HEADER_SIZE = _HEADER.size  # 19
_WRAP_LABEL = b"meshub-dek/1"
META_FORMAT, META_KEK, META_DEK = "meshub-enc", "meshub-kek", "meshub-dek"  # x-amz-meta-<name>


class DecryptionError(IntegrityError):
    """An object does not decrypt under its keys: tampered with, moved to another key, or a wrong KEK."""


class KeyUnavailable(StoreUnavailable):
    """An object's KEK is not in this process's keyring (not distributed yet, or retired while still in use).
    Transient: a worker retries, HTTP answers 503; the fix is to give the process the key."""


@dataclass(frozen=True, slots=True)
class Kek:
    """A key-encryption key: its id (stored with each object, not secret) and its 32 bytes."""

    id: str
    key: bytes

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise ValueError("a KEK is 32 bytes (AES-256)")

    def __repr__(self) -> str:  # never print the key
        return f"Kek(id={self.id!r})"


@dataclass(frozen=True, slots=True)
class Sealed:
    """What a put writes: the metadata to store with the object and the body's length (the body is a stream)."""

    metadata: dict[str, str]
    length: int


def sealed_length(plain_size: int, segment: int = SEGMENT) -> int:
    """Bytes of the object body for `plain_size` bytes of plaintext."""
    segments = max(1, -(-plain_size // segment))
    return HEADER_SIZE + plain_size + TAG * segments


def plain_length(sealed_size: int, segment: int = SEGMENT) -> int:
    """Plaintext bytes held by an object body of `sealed_size` bytes (DecryptionError if no plaintext fits)."""
    body = sealed_size - HEADER_SIZE
    full, rest = divmod(body, segment + TAG)
    if body < TAG or (rest and rest < TAG) or (rest == 0 and full == 0):
        raise DecryptionError("sealed object is too short for its format")
    return full * segment + (rest - TAG if rest else 0)


def _wrap_aad(kek_id: str, object_key: str) -> bytes:
    return b"\x00".join((_WRAP_LABEL, kek_id.encode(), object_key.encode()))


def wrap(dek: bytes, kek: Kek, object_key: str) -> str:
    """The DEK wrapped under `kek` and bound to `object_key`, as the base64 text stored in metadata."""
    nonce = os.urandom(12)
    return base64.b64encode(nonce + AESGCM(kek.key).encrypt(nonce, dek, _wrap_aad(kek.id, object_key))).decode()


def unwrap(wrapped: str, kek: Kek, object_key: str) -> bytes:
    """The DEK from its metadata text; DecryptionError if it was not wrapped under `kek` for `object_key`."""
    try:
        raw = base64.b64decode(wrapped.encode(), validate=True)
        dek = AESGCM(kek.key).decrypt(raw[:12], raw[12:], _wrap_aad(kek.id, object_key))
    except (InvalidTag, binascii.Error, ValueError) as exc:
        raise DecryptionError(f"object data key does not unwrap under KEK {kek.id}") from exc
    if len(dek) != 32:
        raise DecryptionError("object data key has the wrong length")
    return dek


def rewrap(wrapped: str, old: Kek, new: Kek, object_key: str) -> str:
    """Rotation: the same DEK, wrapped under `new` (the body is untouched)."""
    return wrap(unwrap(wrapped, old, object_key), new, object_key)


def metadata(kek: Kek, wrapped: str) -> dict[str, str]:
    return {META_FORMAT: FORMAT, META_KEK: kek.id, META_DEK: wrapped}


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + struct.pack("!IB", counter, 1 if last else 0)


def seal(data: bytes, kek: Kek, object_key: str, segment: int = SEGMENT) -> tuple[Sealed, Iterator[bytes]]:
    """Encrypt `data` under a fresh DEK: the metadata and length now, the body as pieces produced on demand
    (header, then one ciphertext segment at a time: memory stays at one segment beyond the caller's data)."""
    dek, prefix = AESGCM.generate_key(bit_length=256), os.urandom(7)
    header = _HEADER.pack(MAGIC, VERSION, segment, prefix)
    sealed = Sealed(metadata=metadata(kek, wrap(dek, kek, object_key)), length=sealed_length(len(data), segment))
    return sealed, _segments(data, AESGCM(dek), header, prefix, header + object_key.encode(), segment)


def _segments(data: bytes, aead: AESGCM, header: bytes, prefix: bytes, aad: bytes,
              segment: int) -> Iterator[bytes]:
    yield header
    view = memoryview(data)
    count = max(1, -(-len(data) // segment))
    for i in range(count):
        yield aead.encrypt(_nonce(prefix, i, i == count - 1), view[i * segment:(i + 1) * segment], aad)


def open_segments(header: bytes, pieces: Iterable[bytes], dek: bytes, object_key: str) -> Iterator[bytes]:
    """Decrypt an object body given its header and its ciphertext segments (each segment + tag, the last one
    possibly shorter); yields plaintext segments, each authenticated before it is yielded.  DecryptionError
    on a wrong header, a tampered or moved segment, or a body cut short or extended."""
    _, _, segment, prefix = parse_header(header)
    aead, aad = AESGCM(dek), header + object_key.encode()
    counter, pending = 0, None
    for piece in pieces:
        if pending is not None:  # not the last one: a full segment, flag 0
            yield _open(aead, prefix, counter, False, pending, aad, segment)
            counter += 1
        pending = piece
    if pending is None:
        raise DecryptionError("sealed object has no segment")
    yield _open(aead, prefix, counter, True, pending, aad, segment)


def _open(aead: AESGCM, prefix: bytes, counter: int, last: bool, piece: bytes, aad: bytes, segment: int) -> bytes:
    if len(piece) < TAG or len(piece) > segment + TAG or (not last and len(piece) != segment + TAG):
        raise DecryptionError("sealed object segment has the wrong length")
    try:
        return aead.decrypt(_nonce(prefix, counter, last), piece, aad)
    except InvalidTag as exc:
        raise DecryptionError(f"sealed object segment {counter} does not authenticate") from exc


def parse_header(header: bytes) -> tuple[bytes, int, int, bytes]:
    """magic, version, segment size, nonce prefix; DecryptionError unless it is our format, version 1."""
    if len(header) != HEADER_SIZE:
        raise DecryptionError("sealed object header is cut short")
    magic, version, segment, prefix = _HEADER.unpack(header)
    if magic != MAGIC or version != VERSION or not 1024 <= segment <= 16 * 1024 * 1024:
        raise DecryptionError("object body is not in the sealed format its metadata announces")
    return magic, version, segment, prefix


def segment_size(header: bytes) -> int:
    return parse_header(header)[2]


def open_bytes(body: bytes, dek: bytes, object_key: str) -> bytes:
    """Decrypt a whole body held in memory (tests, small objects)."""
    header = body[:HEADER_SIZE]
    step = segment_size(header) + TAG
    view = memoryview(body)[HEADER_SIZE:]
    pieces = (bytes(view[i:i + step]) for i in range(0, max(len(view), 1), step))
    return b"".join(open_segments(header, pieces, dek, object_key))
