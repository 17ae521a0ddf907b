"""Contract fixtures: every port runs on each of its adapters, in memory, on SQLite and on PostgreSQL.

`backend` is the parameter ("memory", "sqlite", "postgresql"); `index` is the index on it (a MemoryIndex,
or an SqlIndex on the fresh database of tests/fixtures_db.py: PostgreSQL skips when absent locally and
fails when CI=true; memory never skips).  `beside(index, MemoryX, SqlX)` is the store of that family on
the same back end, as the composition root makes it (`X.beside(index)`).  Tests that reach into SQL
itself (raw statements, engine events) keep using `sql_index`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from storage.memory.index import MemoryIndex
from storage.sql.index import SqlIndex

BACKENDS = ["memory", "sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def index(backend: str, request: pytest.FixtureRequest) -> Iterator[MemoryIndex | SqlIndex]:
    if backend == "memory":
        yield MemoryIndex()
        return
    url = str(request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url"))
    sql = SqlIndex.connect(url)  # as tests/fixtures_db.sql_index makes it
    yield sql
    sql.dispose()


def beside(index: MemoryIndex | SqlIndex, memory: Any, sql: Any) -> Any:
    """The store of one family sharing `index`'s back end: `memory.beside(index)` or `sql.beside(index)`."""
    return memory.beside(index) if isinstance(index, MemoryIndex) else sql.beside(index)
