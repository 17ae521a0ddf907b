"""In-memory adapter fixtures (storage/memory): no service, never skipped, a fresh one per test; and
`envelopes`, what a MemoryPublisher was handed as the submissions' envelopes."""

from __future__ import annotations

import pytest

from hub.envelope import Envelope
from hub.events import Submitted
from storage.memory.blobs import MemoryBlobStore
from storage.memory.bus import MemoryPublisher
from storage.memory.index import MemoryIndex


@pytest.fixture
def memory_index() -> MemoryIndex:
    """An empty index; the stores beside it come from `MemoryX.beside(memory_index)`."""
    return MemoryIndex()


@pytest.fixture
def memory_store() -> MemoryBlobStore:
    return MemoryBlobStore()


@pytest.fixture
def memory_bus() -> MemoryPublisher:
    return MemoryPublisher()


def envelopes(bus: MemoryPublisher) -> list[Envelope]:
    """The envelope of each submission event published on `bus` (MailQueued, DeliveryRequested...), in order."""
    return [event.envelope for event in bus.published if isinstance(event, Submitted)]
