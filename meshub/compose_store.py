"""Composition of the object store: an external S3, or the embedded SeaweedFS child process.

Owns: opening the keyring (a missing key fails the start, not a PUT), starting SeaweedFS for the
embedded default, connecting the sealed MinioBlobStore and probing it once.
Does not: use the store (the services do) or choose anything else (meshub.compose_core).
"""

from __future__ import annotations

import io
import os
import uuid
from contextlib import ExitStack
from dataclasses import replace

from config.settings import Settings
from hub.errors import StoreUnavailable
from meshub import datadir
from storage.keyring import open_keyring
from storage.objects import MinioBlobStore
from storage.seaweed import SeaweedServer


def object_store(settings: Settings, stack: ExitStack) -> MinioBlobStore:
    """The store `settings` name (the embedded child is stopped by `stack`)."""
    keyring = open_keyring(environ=os.environ, kek_file=settings.store.kek_file, data_dir=settings.data_dir,
                           embedded=settings.embedded_store)  # first: a missing key fails the start, not a PUT
    store = settings.store
    if settings.embedded_store:
        keys = datadir.secrets_for(settings.data_dir)
        server = SeaweedServer(settings.data_dir / "s3", s3_port=store.embedded_port,
                               access_key=keys["s3_access_key"], secret_key=keys["s3_secret_key"],
                               fsync=store.fsync)
        server.start()
        stack.callback(server.stop)
        store = replace(store, endpoint=server.endpoint, access_key=keys["s3_access_key"],
                        secret_key=keys["s3_secret_key"])
    assert store.endpoint is not None
    blobs = MinioBlobStore.connect(endpoint=store.endpoint, access_key=store.access_key,
                                   secret_key=store.secret_key, bucket=store.bucket,
                                   key_secret=settings.key_secret, secure=store.secure, keyring=keyring)
    blobs.ensure_bucket()
    if settings.embedded_store:
        probe_embedded(blobs)
        datadir.strip_group_other(settings.data_dir / "s3")
    return blobs


def probe_embedded(blobs: MinioBlobStore) -> None:
    """Write, read back and delete a random object with this start's credentials: the child answers as the
    store the hub created (and has grown its first volumes, whose files strip_group_other then makes private)."""
    key, data = f"meshub-probe/{uuid.uuid4().hex}", os.urandom(1024)
    try:
        blobs.client.put_object(bucket_name=blobs.bucket, object_name=key, data=io.BytesIO(data), length=len(data))
        answer = blobs.client.get_object(bucket_name=blobs.bucket, object_name=key)
        try:
            same = answer.read() == data
        finally:
            answer.close()
            answer.release_conn()
        blobs.client.remove_object(bucket_name=blobs.bucket, object_name=key)
    except Exception as exc:  # minio and urllib3 errors alike: the store is not ours
        raise StoreUnavailable(f"the embedded object store failed its start probe: {type(exc).__name__}") from None
    if not same:
        raise StoreUnavailable("the embedded object store answered the start probe with other bytes")


class StorePermissions:
    """The embedded store's periodic tick: volumes SeaweedFS grew since (their .vif files are 0644) made
    private to the hub's user."""

    def __init__(self, settings: Settings) -> None:
        self._s3 = settings.data_dir / "s3"

    def tick(self) -> None:
        datadir.strip_group_other(self._s3)
