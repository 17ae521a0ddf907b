"""Runs the index database's migrations (storage/migrations, Alembic) up to head, safely from many processes.

Owns: where the scripts are (inside the package: a clean clone and an installed hub alike), the revision a
database is at and the one this code wants, and `upgrade`.
Rule 1: one migrator at a time: on PostgreSQL a transaction-level advisory lock, on SQLite BEGIN IMMEDIATE
(the database's write lock), taken before the current revision is read; a process that waited finds the
work done.  Each upgrade is one transaction (both back ends run DDL in transactions), so a failure changes
nothing.
Rule 2: a database made before migrations (the hub's tables, no alembic_version) is adopted by the first
revision (it creates what is missing and keeps every row), never created over.
Rule 3: a database already at head costs one read (no lock): every SqlIndex.connect calls `upgrade`.
Does not: hold the models (storage.sql.schema) or the revisions (storage/migrations/versions).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection

import storage.migrations
from hub.errors import ConfigError
from storage.migrations.baseline import BASELINE
from storage.sql.database import Database, db_errors, sqlite_pragmas

log = logging.getLogger(__name__)
SCRIPTS = Path(storage.migrations.__file__).parent
VERSION_TABLE = "alembic_version"
LOCK = "meshub.migrate"  # hashed to the advisory lock's key on PostgreSQL


@dataclass(frozen=True)
class Revisions:
    """Where a database was and is: `before` None is an empty database or one made before migrations
    (`adopted`: it had the hub's tables)."""

    before: str | None
    after: str | None
    head: str
    adopted: bool = False

    @property
    def changed(self) -> bool:
        return self.before != self.after


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration in code (no alembic.ini needed): the packaged scripts, this connection."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.attributes["connection"] = connection
    return config


@cache
def head() -> str:
    """The revision this code's models need."""
    found = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert found is not None, f"no migration in {SCRIPTS}"
    return found


def current(database: Database) -> str | None:
    """The revision `database` is at (None: empty, or made before migrations)."""
    with database.read() as conn:
        return _current(conn)


def legacy(database: Database) -> bool:
    """True for a database made before migrations: the hub's tables without an alembic_version."""
    with database.read() as conn:
        return _legacy(conn)


def upgrade(database: Database, *, target: str = "head") -> Revisions:
    """Bring `database` to `target` (default: head); see the module's rules."""
    wanted = head() if target == "head" else target
    before = current(database)
    if before == wanted:
        return Revisions(before, before, head())
    with _locked(database) as conn:
        before, adopted = _current(conn), _legacy(conn)
        if before != wanted:
            if adopted:
                log.warning("index database made before migrations: adopting it (revision %s)", wanted)
            _run(lambda config: command.upgrade(config, target), conn)
    after = current(database)
    if after != before:
        log.info("index database migrated from %s to %s", before or "nothing", after)
    return Revisions(before, after, head(), adopted)


def downgrade(database: Database, target: str) -> Revisions:
    """Back to `target` ("base": empty).  For tests and operators who know what they lose."""
    with _locked(database) as conn:
        before = _current(conn)
        _run(lambda config: command.downgrade(config, target), conn)
    return Revisions(before, current(database), head())


def _run(step: Callable[[Config], None], conn: Connection) -> None:
    try:
        step(alembic_config(conn))
    except CommandError as exc:  # e.g. a revision this code does not know: a newer hub migrated it
        raise ConfigError(f"index database migration: {exc} (is the database from a newer meshub?)") from exc


def _current(conn: Connection) -> str | None:
    """alembic_version's one row (read here rather than through a MigrationContext: no log lines)."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    versions = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(versions) > 1:
        raise ConfigError(f"index database: several heads in {VERSION_TABLE} ({', '.join(versions)})")
    return str(versions[0]) if versions else None


def _legacy(conn: Connection) -> bool:
    tables = set(sa.inspect(conn).get_table_names())
    return VERSION_TABLE not in tables and bool(tables & set(BASELINE.tables))


@contextmanager
def _locked(database: Database) -> Iterator[Connection]:
    """A transaction holding the migration lock (Rule 1), committed when the block ends."""
    if database.postgres:
        with database.begin() as conn:
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(LOCK))))
            yield conn
        return
    if database.engine.url.database in (None, "", ":memory:"):  # one connection's database: no one to wait for
        with database.begin() as conn:
            yield conn
        return
    engine = _sqlite_migrator(database)
    try:
        with db_errors(), engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def _sqlite_migrator(database: Database) -> sa.Engine:
    """An engine whose transactions are BEGIN IMMEDIATE (pysqlite's own BEGIN handling off), so the DDL is
    transactional and the write lock is held from the first read of the revision."""
    engine = sa.create_engine(database.engine.url, poolclass=sa.pool.NullPool, connect_args={"timeout": 15})

    def no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    sa.event.listen(engine, "connect", no_implicit_begin)
    sa.event.listen(engine, "connect", sqlite_pragmas("FULL"))
    sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    return engine
