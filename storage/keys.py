"""Object-key scheme for stored bytes (pure: no I/O).

Owns: how an object key is derived from content.  The key is a keyed hash
(HMAC-SHA256 with a hub secret) of the bytes, so it carries no INS, no name and
no plain SHA-256: nobody holding a guessed document can hash it to confirm the
object exists.  The plain SHA-256 still travels in BlobRef for integrity checks.
Does not: talk to any store, or decide which secret is used (configuration does).
"""

from __future__ import annotations

import hashlib
import hmac


def keyed_digest(secret: bytes, data: bytes) -> str:
    """HMAC-SHA256 of `data` under `secret`, as 64 lowercase hex characters."""
    if not secret:
        raise ValueError("the object-key secret must not be empty")
    return hmac.new(secret, data, hashlib.sha256).hexdigest()


def object_key(kind: str, digest: str) -> str:
    """`<kind>/<first two hex digits>/<digest>`: a short fan-out prefix, then the keyed digest."""
    if not kind or "/" in kind:
        raise ValueError(f"object kind must be a non-empty path segment, got {kind!r}")
    if len(digest) < 2:
        raise ValueError("digest too short for an object key")
    return f"{kind}/{digest[:2]}/{digest}"
