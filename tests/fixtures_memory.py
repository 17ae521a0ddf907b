"""In-memory adapter fixtures (storage/memory): no service, never skipped, a fresh one per test."""

from __future__ import annotations

import pytest

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
