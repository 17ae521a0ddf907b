"""The in-memory adapters' outage switch: switched down, each raises the TransientError its SQL or S3
twin raises when the database, the bus or the bucket is unreachable (and nothing is kept)."""

from __future__ import annotations

import pytest

from hub.credentials import Credential, Role
from hub.errors import BusUnavailable, IndexUnavailable, StoreUnavailable
from storage.memory.blobs import MemoryBlobStore
from storage.memory.bus import MemoryPublisher
from storage.memory.index import MemoryIndex
from storage.memory.notifications import MemoryNotifications
from storage.memory.profiles import MemoryProfiles
from storage.memory.tokens import MemoryTokens
from tests import builders


def test_a_down_index_and_the_stores_beside_it_are_unavailable(memory_index: MemoryIndex) -> None:
    env = builders.envelope()
    memory_index.state.down = True
    with pytest.raises(IndexUnavailable):
        memory_index.create_submission(builders.submission_for(env))
    with pytest.raises(IndexUnavailable):
        MemoryNotifications.beside(memory_index).preferences(builders.TEST_INS)
    with pytest.raises(IndexUnavailable):
        MemoryProfiles.beside(memory_index).profile(builders.TEST_INS)
    with pytest.raises(IndexUnavailable):
        MemoryTokens.beside(memory_index).issue(Credential(name="p", role=Role.PATIENT, token_sha256="a" * 64,
                                                           ins=builders.TEST_INS))
    memory_index.state.down = False
    assert MemoryTokens.beside(memory_index).lookup("a" * 64) is None
    assert memory_index.submission(env.submission_id) is None  # nothing was kept


def test_a_down_store_and_bus_are_unavailable(memory_store: MemoryBlobStore, memory_bus: MemoryPublisher) -> None:
    memory_store.down = memory_bus.down = True
    with pytest.raises(StoreUnavailable):
        memory_store.put(b"x", kind="cda", content_type="text/xml")
    with pytest.raises(StoreUnavailable):
        memory_store.ping()
    with pytest.raises(BusUnavailable):
        memory_bus.publish(builders.envelope())
    assert memory_store.objects == {} and memory_bus.published == []
