"""hub.ports.BlobStore in memory: content-addressed objects in a dict.

Owns: MemoryBlobStore.  Same rules as storage.objects.MinioBlobStore: the key is
`<kind>/<2 hex>/<keyed digest>` (a keyed hash of the bytes, never the plain SHA-256), the same bytes
under the same kind give the same BlobRef (idempotent put), get checks the SHA-256 (IntegrityError on a
mismatch), a missing object is NotFound, delete is idempotent, and `down` makes every call
StoreUnavailable.  Does not: seal (encrypt) anything.
"""

from __future__ import annotations

import hashlib
import hmac

from hub.envelope import BlobRef
from hub.errors import IntegrityError, NotFound, StoreUnavailable
from storage.memory.base import MemoryState

_KEY_SECRET = b"meshub-memory-store"


class MemoryBlobStore:
    """A BlobStore (plus delete) whose objects live in `objects` (key -> bytes)."""

    def __init__(self, bucket: str = "meshub") -> None:
        self.bucket = bucket
        self.objects: dict[str, bytes] = {}
        self.state = MemoryState(StoreUnavailable, "object store")

    @property
    def down(self) -> bool:
        return self.state.down

    @down.setter
    def down(self, value: bool) -> None:
        self.state.down = value

    def put(self, data: bytes, *, kind: str, content_type: str) -> BlobRef:
        """Store `data` once under its keyed digest; the same bytes give the same ref."""
        if not kind or "/" in kind:
            raise ValueError(f"object kind must be a non-empty path segment, got {kind!r}")
        digest = hmac.new(_KEY_SECRET, data, hashlib.sha256).hexdigest()
        ref = BlobRef(bucket=self.bucket, key=f"{kind}/{digest[:2]}/{digest}",
                      sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        with self.state.lock:
            self.state.check()
            self.objects[ref.key] = bytes(data)
        return ref

    def get(self, ref: BlobRef) -> bytes:
        """The stored bytes, checked against the ref's SHA-256 and size."""
        with self.state.lock:
            self.state.check()
            data = self.objects.get(ref.key) if ref.bucket == self.bucket else None
        if data is None:
            raise NotFound(f"no object {ref.key} in bucket {ref.bucket}")
        if len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.sha256:
            raise IntegrityError(f"stored object in bucket {ref.bucket} does not match its SHA-256")
        return data

    def delete(self, ref: BlobRef) -> None:
        """Forget an object (a purge); deleting a missing one is not an error."""
        with self.state.lock:
            self.state.check()
            if ref.bucket == self.bucket:
                self.objects.pop(ref.key, None)

    def ping(self) -> None:
        """StoreUnavailable while switched down."""
        self.state.check()
