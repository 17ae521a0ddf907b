"""PostgreSQL and SQLite index fixtures: a fresh database per test (`sql_index`: migrated by SqlIndex.connect)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from storage.sql.index import SqlIndex
from tests.services import missing, port_open

PG_ADMIN_URL = os.environ.get("MESHUB_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[sa.Engine]:
    if not port_open("127.0.0.1", 5432):
        missing("PostgreSQL is not listening on 127.0.0.1:5432")
    engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin: sa.Engine) -> Iterator[str]:
    name = f"meshub_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'index.sqlite3'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def index_url(request: pytest.FixtureRequest) -> str:
    """Both index back ends, for contract tests: same code, same expectations."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def sql_index(index_url: str) -> Iterator[SqlIndex]:
    index = SqlIndex.connect(index_url)
    yield index
    index.dispose()
