"""One SQL database (SQLite or PostgreSQL) as every store in storage.sql uses it.

Owns: the engines (durable writer; on SQLite a relaxed writer, synchronous=NORMAL; an autocommit reader for
one-statement reads), the dialect's INSERT (ON CONFLICT on both back ends), the boundary where database
errors become IndexUnavailable, the models' MetaData every store adds its tables to, the UTC time helpers
(SQLite hands back naive datetimes), SqlStore, the base of the stores built `beside` the index, and
Database.unit, one transaction for all their writes of one step (storage.sql.unit).
Rule: one Database per process and URL; every store on it shares its pools (SqlIndex.connect makes it and
brings its schema to the migrations' head, storage.sql.migrate).
Does not: create or alter tables (storage/migrations does, through storage.sql.migrate) or hold any query.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol, Self

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from hub.errors import IndexUnavailable
from storage.sql.unit import Unit, current_unit, opened

#: the models: every store module adds its tables here (storage.sql.schema imports them all)
metadata = sa.MetaData()
POOL = {"pool_size": 16, "max_overflow": 16}


def utc_now() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored here is UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def when(value: datetime | None) -> datetime:
    """`aware` for a column that is never NULL."""
    result = aware(value)
    assert result is not None
    return result


def postgres_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here (SQLAlchemy's default driver for it is psycopg2)."""
    return "postgresql+psycopg://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url


def sqlite_pragmas(synchronous: str) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        _wal(cursor)
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.close()
    return on_connect


def _wal(cursor: Any, *, tries: int = 150) -> None:
    """WAL mode (persistent in the file).  Switching a new database to it takes an exclusive lock and SQLite
    answers "locked" at once, without waiting, while another connection holds one (processes or threads
    opening a new database together): try again for up to 15 s.  A database in WAL already costs one read."""
    for _ in range(tries - 1):
        if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            return
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            time.sleep(0.1)
    cursor.execute("PRAGMA journal_mode=WAL")


def make_engine(url: str, *, durable: bool = True, autocommit: bool = False) -> Engine:
    """An engine for `url` (sqlite:///path or postgresql+psycopg://...) with the hub's settings.

    durable=True: a commit is on disk when it returns (SQLite WAL + synchronous=FULL; PostgreSQL's
    default synchronous_commit), which the worker needs before it acks a bus message.
    durable=False (SQLite synchronous=NORMAL) is for writes that may be lost in a power cut without
    losing anything accepted: a pending submission row, which the worker re-creates if missing.
    autocommit=True: connections made in autocommit mode once, for single-statement reads (no
    isolation level set and reset around every checkout)."""
    url = postgres_url(url)
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, **POOL, connect_args={"timeout": 15}, **options)
        sa.event.listen(engine, "connect", sqlite_pragmas("FULL" if durable else "NORMAL"))
        return engine
    # No pre-ping (a round trip per checkout): a dropped connection raises OperationalError, which
    # becomes IndexUnavailable (retried by the worker, 503 at the API) and SQLAlchemy replaces it.
    return sa.create_engine(url, **POOL, pool_recycle=1800, connect_args={"connect_timeout": 5}, **options)


@contextmanager
def db_errors() -> Iterator[None]:
    """Database errors become IndexUnavailable (transient: retried, or 503) at this boundary."""
    try:
        yield
    except sa.exc.OperationalError as exc:
        raise IndexUnavailable(f"index database unavailable: {type(exc.orig).__name__}") from exc
    except sa.exc.InterfaceError as exc:
        raise IndexUnavailable("index database connection lost") from exc


class Database:
    """The engines of one database and the statements that differ between its two back ends."""

    def __init__(self, engine: Engine, *, relaxed: Engine | None = None, reader: Engine | None = None) -> None:
        self.engine = engine
        self.relaxed = relaxed or engine
        self.reader = reader or engine.execution_options(isolation_level="AUTOCOMMIT")
        self.postgres = engine.dialect.name == "postgresql"
        self._insert = postgresql.insert if self.postgres else sqlite.insert

    @classmethod
    def connect(cls, url: str) -> Database:
        """The engines for `url`; nothing is created or checked (storage.sql.migrate.upgrade does that)."""
        engine = make_engine(url)
        relaxed = make_engine(url, durable=False) if engine.dialect.name == "sqlite" else None
        return cls(engine, relaxed=relaxed, reader=make_engine(url, autocommit=True))

    @property
    def database(self) -> Database:
        """Itself (a Database is OnDatabase: stores can be built `beside` it)."""
        return self

    def insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT for `table`: `.on_conflict_do_nothing` / `.on_conflict_do_update` on both."""
        return self._insert(table)

    @contextmanager
    def unit(self) -> Iterator[Unit]:
        """One transaction for every store's writes on this database in the block, committed (durably)
        when it ends, then its after-commit callbacks run (storage.sql.unit); joins the one under way."""
        with db_errors(), opened(self, self.engine.connect) as unit:
            yield unit

    @contextmanager
    def begin(self, *, durable: bool = True) -> Iterator[Connection]:
        """One transaction, committed when the block ends; inside a unit, the unit's (no commit of its own,
        durable whatever is asked).  durable=False: the relaxed engine on SQLite, `synchronous_commit off`
        for this transaction on PostgreSQL (see make_engine)."""
        if (unit := current_unit(self)) is not None:
            with db_errors(), unit.block() as conn:
                yield conn
            return
        with db_errors(), (self.engine if durable else self.relaxed).begin() as conn:
            if not durable and self.postgres:
                conn.execute(sa.text("SET LOCAL synchronous_commit TO OFF"))
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """One-statement reads in autocommit: no BEGIN/ROLLBACK round trips around a primary-key lookup.
        Inside a unit, on the unit's connection (it sees the unit's own writes)."""
        if (unit := current_unit(self)) is not None:
            with db_errors(), unit.block() as conn:
                yield conn
            return
        with db_errors(), self.reader.connect() as conn:
            yield conn

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection of the durable engine (reads that want one transaction's view; rolled back).
        Inside a unit, the unit's."""
        if (unit := current_unit(self)) is not None:
            with db_errors(), unit.block() as conn:
                yield conn
            return
        with db_errors(), self.engine.connect() as conn:
            yield conn

    def dispose(self) -> None:
        for engine in {id(e): e for e in (self.engine, self.relaxed, self.reader)}.values():
            engine.dispose()


class OnDatabase(Protocol):
    """Whatever knows its database: the index (SqlIndex) or a Database itself."""

    @property
    def database(self) -> Database: ...


class SqlStore:
    """The base of a store on the index's database: built from the Database, or `beside` the index."""

    def __init__(self, database: Database) -> None:
        self._db = database

    @classmethod
    def beside(cls, index: OnDatabase) -> Self:
        """The store sharing `index`'s database (its tables come from the migrations)."""
        return cls(index.database)

    @property
    def database(self) -> Database:
        return self._db
