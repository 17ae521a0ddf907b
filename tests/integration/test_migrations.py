"""The index database's migrations (storage.sql.migrate, storage/migrations) on SQLite and PostgreSQL.

A database made by the hub before migrations (commit 56d1499: create_all plus ALTER TABLE, a few rows in
every table: tests/data/pre_alembic, made by its make.py) is adopted with every row kept, and the stores
read it; migrations from an empty database give exactly the models (alembic's compare_metadata finds no
difference); concurrent starts migrate once; a database that differs is refused whole; `meshub migrate`.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from hub.errors import ConfigError
from hub.records import DocumentQuery, SubmissionStatus
from meshub import cli
from pipelines.record.audit import verify_trail
from storage.sql import migrate
from storage.sql.audit import SqlAuditTrail
from storage.sql.controls import SqlRecordControls
from storage.sql.database import Database
from storage.sql.index import SqlIndex
from storage.sql.mailbox import SqlMailbox
from storage.sql.notifications import SqlNotifications
from storage.sql.profiles import SqlProfiles
from storage.sql.purge import SqlPurge
from storage.sql.reimbursements import SqlReimbursements
from storage.sql.schema import metadata
from storage.sql.tokens import SqlTokens

pytestmark = pytest.mark.integration
PRE = Path(__file__).resolve().parents[1] / "data" / "pre_alembic"
KEPT, PURGED, MINOR = "279035121518989", "185077512345678", "210017512345619"  # as in make.py
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def load_pg_dump(url: str) -> None:
    """The pg_dump of the old database into the fresh one at `url` (its own session: the dump empties
    search_path)."""
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute((PRE / "index.pg.sql").read_text())


@pytest.fixture
def legacy_url(index_url: str) -> str:
    """A database as 56d1499 left it, on both back ends."""
    if index_url.startswith("sqlite:///"):
        shutil.copy(PRE / "index.sqlite3", index_url.removeprefix("sqlite:///"))
    else:
        load_pg_dump(index_url)
    return index_url


@pytest.fixture
def database(index_url: str) -> Iterator[Database]:
    db = Database.connect(index_url)
    yield db
    db.dispose()


def rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table but alembic's, as the driver returns it, in a stable order."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            names = sorted(set(sa.inspect(conn).get_table_names()) - {migrate.VERSION_TABLE})
            return {n: sorted((tuple(r) for r in conn.execute(sa.text(f'SELECT * FROM "{n}"'))), key=repr)
                    for n in names}
    finally:
        engine.dispose()


def schema_diff(url: str) -> list[Any]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata))
    finally:
        engine.dispose()


def test_a_database_made_before_migrations_is_adopted_with_every_row(legacy_url: str) -> None:
    # Given the old hub's database: every table has rows, and there is no alembic_version
    before = rows(legacy_url)
    assert set(before) == set(metadata.tables) and all(before.values()), {n: len(r) for n, r in before.items()}
    # When the hub connects (as `meshub run` does at start-up)
    index = SqlIndex.connect(legacy_url)
    try:
        # Then it is at the head, every row is still there, unchanged, and the schema is the models'
        assert migrate.current(index.database) == migrate.head()
        # (revision 0002 gave every mailbox copy its two columns, with their defaults: the message alone)
        assert rows(legacy_url) == before | {"messages": [(*r, 0, "") for r in before["messages"]]}
        assert schema_diff(legacy_url) == []
        stores_read_the_old_rows(index)
    finally:
        index.dispose()


def stores_read_the_old_rows(index: SqlIndex) -> None:
    (doc,) = index.documents(KEPT, DocumentQuery())  # -a was replaced by -b
    assert doc.document_id == f"1.2.3^{KEPT}-b" and doc.replaces == (f"1.2.3^{KEPT}-a",)
    assert index.submission(f"sub-{KEPT[:4]}-1").status is SubmissionStatus.INDEXED
    assert index.submission(f"sub-{KEPT[:4]}-9").status is SubmissionStatus.DUPLICATE
    assert index.submission(f"sub-{KEPT[:4]}-0").confidentiality == ("N",)
    assert index.patient(KEPT).given_names == "Jeanne"
    assert index.patient(PURGED).birth_name == ""  # the purge's tombstone
    mail = SqlMailbox.beside(index)
    assert [m.message_id for m in mail.messages(f"{KEPT}@patient.mssante.fr")] == [f"msg-{KEPT[:4]}-1",
                                                                                 f"msg-{KEPT[:4]}-0"]
    assert [d.submission_id for d in mail.filing(f"msg-{KEPT[:4]}-0").documents] == [
        f"sub-{KEPT[:4]}-0", f"sub-{KEPT[:4]}-1"]
    assert len(mail.deliveries(f"mail-{KEPT[:4]}-1")) == 1
    notes = SqlNotifications.beside(index)
    assert len(notes.for_patient(KEPT)) == 3 and notes.representatives(MINOR) == [KEPT]
    assert notes.preferences(KEPT).push is False and notes.devices(KEPT)
    assert notes.contact(KEPT).pending_email == "new@example.org"
    assert {b.batch_id for b in notes.batches()} == {f"b-{KEPT[:4]}", f"b-{PURGED[:4]}"}
    audit = SqlAuditTrail.beside(index)
    assert audit.head()[0] == 3 and verify_trail(audit).ok
    controls = SqlRecordControls.beside(index)
    assert controls.flags([f"1.2.3^{KEPT}-b"])[f"1.2.3^{KEPT}-b"].masked_by_patient
    assert controls.first_access(KEPT, "810000000001") == NOW
    assert SqlProfiles.beside(index).profile(KEPT).activated_at == NOW
    holds = SqlReimbursements.beside(index)
    assert [a.act.act_ref for a in holds.pending_acts(KEPT)] == [f"act-{KEPT[:4]}-1"]
    assert SqlTokens.beside(index).lookup(KEPT.ljust(64, "f")) is not None
    assert SqlPurge.beside(index).pending_erasures()  # the purged patient's objects still wait


def reflected(database: Database) -> dict[str, Any]:
    """What the database says of each table: columns (type, NULL, default), keys, unique constraints, indexes."""
    inspector = sa.inspect(database.engine)
    return {name: ([(c["name"], str(c["type"]), c["nullable"], str(c.get("default"))) for c in
                    inspector.get_columns(name)],
                   inspector.get_pk_constraint(name)["constrained_columns"],
                   sorted((u["name"] or "", u["column_names"]) for u in inspector.get_unique_constraints(name)),
                   sorted((i["name"] or "", i["column_names"], i["unique"]) for i in inspector.get_indexes(name)))
            for name in sorted(set(inspector.get_table_names()) - {migrate.VERSION_TABLE})}


def test_the_first_revision_makes_the_old_schema_exactly(legacy_url: str, database: Database) -> None:
    old = reflected(database)  # as 56d1499's create_all and ALTER TABLE made it
    migrate.upgrade(database, target="0001")
    migrate.downgrade(database, "base")
    assert reflected(database) == {}
    migrate.upgrade(database, target="0001")  # from empty, this time
    assert reflected(database) == old


def test_migrations_from_empty_give_exactly_the_models(index_url: str) -> None:
    index = SqlIndex.connect(index_url)
    index.dispose()
    assert schema_diff(index_url) == []


def test_concurrent_starts_migrate_once(index_url: str) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            SqlIndex.connect(index_url).dispose()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert schema_diff(index_url) == []


def test_a_database_that_differs_is_refused_whole(legacy_url: str, database: Database) -> None:
    # Given an old database with a table missing and a column no release made
    with database.begin() as conn:
        conn.execute(sa.text("DROP TABLE api_tokens"))
        conn.execute(sa.text("ALTER TABLE profiles ADD COLUMN nickname TEXT"))
    # When it is migrated, it is refused, naming the column, and nothing changed (one transaction)
    with pytest.raises(ConfigError, match="profiles: unknown columns nickname"):
        migrate.upgrade(database)
    assert migrate.current(database) is None and migrate.legacy(database)
    assert "api_tokens" not in sa.inspect(database.engine).get_table_names()


def test_a_database_from_a_newer_hub_is_refused(database: Database) -> None:
    migrate.upgrade(database)
    with database.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(ConfigError, match="newer meshub"):
        SqlIndex(database).migrate()


def test_a_release_older_than_the_late_column_gets_it(tmp_path: Path) -> None:
    # Given a database of a release before submissions.confidentiality (its ALTER TABLE never ran)
    path = tmp_path / "older.sqlite3"
    shutil.copy(PRE / "index.sqlite3", path)
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE submissions DROP COLUMN confidentiality")
    # Then adoption adds it as that ALTER TABLE did: its old rows read as not confidential
    index = SqlIndex.connect(f"sqlite:///{path}")
    try:
        assert index.submission(f"sub-{KEPT[:4]}-0").confidentiality == ()
    finally:
        index.dispose()
    assert schema_diff(f"sqlite:///{path}") == []


def test_downgrade_to_base_empties_and_upgrade_rebuilds(sqlite_url: str) -> None:
    database = Database.connect(sqlite_url)
    try:
        assert migrate.upgrade(database).after == migrate.head()
        migrate.downgrade(database, "base")
        assert set(sa.inspect(database.engine).get_table_names()) <= {migrate.VERSION_TABLE}
        assert migrate.upgrade(database).after == migrate.head()
    finally:
        database.dispose()
    assert schema_diff(sqlite_url) == []


def test_meshub_migrate_says_where_it_is_and_goes_to_the_head(legacy_url: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["migrate", "--sql-url", legacy_url, "--check"]) == 1
    assert f"current revision none (made before migrations), target {migrate.head()}" in capsys.readouterr().out
    assert cli.main(["migrate", "--sql-url", legacy_url]) == 0
    assert f"migrated to {migrate.head()} (adopted a database made before migrations" in capsys.readouterr().out
    assert cli.main(["migrate", "--sql-url", legacy_url, "--check"]) == 0
    assert cli.main(["migrate", "--sql-url", legacy_url]) == 0
    assert "already at the head" in capsys.readouterr().out


def test_meshub_migrate_finds_the_embedded_database_in_the_data_dir(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["migrate", "--data-dir", str(tmp_path / "data"), "--json"]) == 0
    out = capsys.readouterr().out
    assert f'"current": "{migrate.head()}"' in out and '"migrated": true' in out
    assert (tmp_path / "data" / "index.sqlite3").exists()
