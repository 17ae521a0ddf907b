"""A read-your-writes cache in front of a BlobStore, for a process that both accepts and processes.

Owns: keeping the bytes of the last few objects this process stored (bounded in bytes), so its own
worker reads them from memory instead of asking the object store again.  Each entry is handed out
once and dropped (a worker reads a submission once); a miss goes to the store.  Bytes come back only
after the same SHA-256 check the store does.  Only the embedded single-process hub uses it: separate
worker processes read from S3.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from hub.envelope import BlobRef
from hub.errors import ConfigError, IntegrityError
from hub.ports import BlobStore


class RecentBlobs:
    """BlobStore decorator: put() remembers the bytes, the next get() of that object uses them."""

    def __init__(self, store: BlobStore, *, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._store = store
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def put(self, data: bytes, *, kind: str, content_type: str) -> BlobRef:
        ref = self._store.put(data, kind=kind, content_type=content_type)
        if len(data) <= self._max_bytes // 4:
            with self._lock:
                self._remember(ref.key, data)
        return ref

    def get(self, ref: BlobRef) -> bytes:
        with self._lock:
            data = self._entries.pop(ref.key, None)
            self._size -= len(data) if data is not None else 0
        if data is None:
            return self._store.get(ref)
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            raise IntegrityError("cached object does not match its SHA-256")
        return data

    def ping(self) -> None:
        self._store.ping()

    def delete(self, ref: BlobRef) -> None:
        """Forget any cached copy, then delete from the wrapped store (pipelines.record.core.restitution.BlobEraser)."""
        with self._lock:
            data = self._entries.pop(ref.key, None)
            self._size -= len(data) if data is not None else 0
        delete = getattr(self._store, "delete", None)
        if delete is None:
            raise ConfigError("the wrapped object store cannot delete objects")
        delete(ref)

    def _remember(self, key: str, data: bytes) -> None:
        old = self._entries.pop(key, None)
        self._size -= len(old) if old is not None else 0
        self._entries[key] = data
        self._size += len(data)
        while self._size > self._max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._size -= len(evicted)
