"""A document in a worker is one database transaction (index, notice and trail rows) on PostgreSQL and
SQLite, its wake-ups published after the commit; crash-safe and idempotent on redelivery.

The worker's chain is wired as meshub.compose_workers.build_workers wires it (DocumentPipeline ->
LocalBus -> AfterFiling, inside InUnit; the notify queue behind AfterCommit), on the test's database,
with an in-memory store and bus.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from config.tables import load_classification, load_habilitations, load_notify_policy, load_validation_rules
from hub.bus.local import LocalBus
from hub.envelope import Envelope
from hub.errors import BusUnavailable
from hub.events import NoticeDue
from hub.records import PatientRecord, PatientStatus
from meshub.compose_workers import AfterFiling, InUnit
from pipelines.definitions import Dispatch, Steps, routes
from pipelines.documents.runner import DocumentPipeline
from pipelines.notify.service import Notifier, NotifyPorts
from pipelines.record.access import RecordAccess, RecordPorts
from pipelines.record.audit import verify_trail
from storage.memory.blobs import MemoryBlobStore
from storage.memory.bus import MemoryPublisher
from storage.sql.audit import SqlAuditTrail
from storage.sql.audit_batching import GroupCommitTrail
from storage.sql.controls import SqlRecordControls
from storage.sql.index import SqlIndex
from storage.sql.notifications import SqlNotifications
from storage.sql.unit import AfterCommit, BrokenUnit
from tests import builders, cda_builders


class Boom(Exception):
    """The injected crash."""


@dataclass
class Worker:
    step: InUnit
    index: SqlIndex
    trail: GroupCommitTrail
    notices: SqlNotifications
    queue: MemoryPublisher
    store: MemoryBlobStore

    def envelope(self, extension: str) -> Envelope:
        raw = self.store.put(cda_builders.cda(extension=extension), kind="cda", content_type="text/xml")
        env = builders.envelope()
        env = Envelope(submission_id=env.submission_id, received_at=env.received_at, source=env.source, raw=raw)
        self.index.create_submission(builders.submission_for(env))
        return env

    def rows(self) -> tuple[int, int, int]:
        """(documents, write trail entries, notices) in the database."""
        with self.index.database.read() as conn:
            return tuple(int(conn.execute(sa.text(f"SELECT count(*) FROM {q}")).scalar_one()) for q in (  # type: ignore[return-value]
                "documents", "audit_trail WHERE action = 'write'", "notices"))


@pytest.fixture
def worker(sql_index: SqlIndex) -> Worker:
    sql_index.upsert_patients([PatientRecord(ins=builders.TEST_INS, oid=builders.TEST_OID, email="j@example.org",
                                             status=PatientStatus.ACTIVE)])
    notices, queue, store = SqlNotifications.beside(sql_index), MemoryPublisher(), MemoryBlobStore()
    notifier = Notifier(NotifyPorts(index=sql_index, notices=notices, queue=AfterCommit(queue),
                                    policy=load_notify_policy()))
    trail = GroupCommitTrail(SqlAuditTrail.beside(sql_index))
    records = RecordAccess(RecordPorts(index=sql_index, controls=SqlRecordControls.beside(sql_index), trail=trail,
                                       habilitations=load_habilitations(), representatives=notices.representatives,
                                       announce=notifier.announce))
    outcomes = LocalBus()
    documents = DocumentPipeline(store=store, index=sql_index, rules=load_validation_rules(),
                                 tables=load_classification(), outcomes=outcomes)
    after = AfterFiling(sql_index, records, notifier, lambda _event: None, indexed=documents.indexed)
    table = routes(Steps(documents=documents, mail=_unused, outbound=_unused, notices=_unused,
                         filed=after.filed, rejected=after.rejected))
    outcomes.handler = Dispatch(table, queue="outcomes")
    return Worker(InUnit(documents, sql_index.database), sql_index, trail, notices, queue, store)


def _unused(_event: Any) -> None:
    raise AssertionError("not in this test")


@pytest.fixture
def commits(sql_index: SqlIndex) -> Iterator[list[str]]:
    """Every COMMIT on the index's engines, and every statement (its first word)."""
    seen: list[str] = []
    engines = {id(e): e for e in (sql_index.database.engine, sql_index.database.relaxed, sql_index.database.reader)}

    def on_commit(_conn: Any) -> None:
        seen.append("COMMIT")

    def on_statement(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement.split(None, 1)[0].upper())

    for engine in engines.values():
        sa.event.listen(engine, "commit", on_commit)
        sa.event.listen(engine, "before_cursor_execute", on_statement)
    yield seen
    for engine in engines.values():
        sa.event.remove(engine, "commit", on_commit)
        sa.event.remove(engine, "before_cursor_execute", on_statement)


def test_one_commit_per_document_and_wake_ups_after_it(worker: Worker, commits: list[str]) -> None:
    # Given a submitted document of an active patient who gets e-mail
    env = worker.envelope("unit-1")
    commits.clear()
    # When the worker handles it
    worker.step(env)
    # Then its document, `write` entry and notices are in one commit, its wake-ups published
    assert commits.count("COMMIT") == 1
    statements = len(commits) - 1
    assert worker.rows()[0] == 1 and worker.rows()[1] == 1 and worker.rows()[2] >= 1
    assert worker.queue.published and all(isinstance(e, NoticeDue) for e in worker.queue.published)
    print(f"\n{worker.index.database.engine.dialect.name}: 1 commit, {statements} statements per document")


def test_a_crash_before_the_commit_leaves_nothing_and_the_redelivery_files_once(
        worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    env = worker.envelope("unit-2")
    # Given a crash after the index, notice and trail writes, before the commit
    inner = worker.trail.inner.append

    def crash(entries: Any) -> Any:
        inner(entries)
        raise Boom()

    monkeypatch.setattr(worker.trail.inner, "append", crash)
    with pytest.raises(Boom):
        worker.step(env)
    # Then nothing was stored or published
    assert worker.rows() == (0, 0, 0)
    assert worker.queue.published == []
    assert worker.index.submission(env.submission_id).status == "pending"  # type: ignore[union-attr]
    # When the message is redelivered
    monkeypatch.undo()
    worker.step(env)
    # Then the document is filed exactly once
    documents, writes, notices = worker.rows()
    assert (documents, writes) == (1, 1) and notices >= 1
    assert len(worker.queue.published) == notices - _inapp(worker)


def test_a_failed_publish_after_the_commit_is_redone_on_redelivery_without_duplicates(worker: Worker) -> None:
    env = worker.envelope("unit-3")
    # Given a bus that fails after the commit
    worker.queue.down = True
    with pytest.raises(BusUnavailable):  # the worker retries the message
        worker.step(env)
    # Then the document is filed, traced and announced, nothing published
    filed = worker.rows()
    assert filed[:2] == (1, 1) and filed[2] >= 1
    assert worker.queue.published == []
    # When the message is redelivered with the bus back
    worker.queue.down = False
    worker.step(env)
    # Then the wake-ups are published, nothing stored twice
    assert worker.rows() == filed
    assert len(worker.queue.published) == filed[2] - _inapp(worker)


def _inapp(worker: Worker) -> int:
    """Notices delivered when stored (in-app: no wake-up)."""
    return len([n for n in worker.notices.for_patient(builders.TEST_INS) if str(n.channel) in ("inapp", "postal")])


def test_workers_filing_one_patients_documents_at_once_commit_each_once(worker: Worker, commits: list[str]) -> None:
    # Given documents of one patient, handled by four workers at the same moment
    envelopes = [worker.envelope(f"unit-many-{n}") for n in range(12)]
    commits.clear()
    # When each is filed
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(worker.step, envelopes))
    # Then none waited on another for ever (the trail's head lock is the last taken), each committed once,
    # and the trail's chain holds
    assert commits.count("COMMIT") == len(envelopes)
    assert worker.rows()[:2] == (len(envelopes), len(envelopes))
    assert verify_trail(worker.trail).ok


def test_a_unit_joins_the_one_under_way_and_discards_its_callbacks_on_rollback(sql_index: SqlIndex) -> None:
    db, ran = sql_index.database, []
    with pytest.raises(Boom), db.unit():
        with db.unit() as inner:  # joins: nothing of its own is committed
            inner.after_commit(lambda: ran.append("rolled back"))
        raise Boom()
    with db.unit() as unit:
        unit.after_commit(lambda: ran.append("committed"))
        assert ran == []
    assert ran == ["committed"]


def test_a_failed_block_swallowed_by_its_caller_still_rolls_the_unit_back(sql_index: SqlIndex) -> None:
    db = sql_index.database
    with pytest.raises(BrokenUnit), db.unit():
        sql_index.upsert_patients([PatientRecord(ins=builders.TEST_INS, oid=builders.TEST_OID)])
        try:
            with db.begin():
                raise Boom()
        except Boom:
            pass
    assert sql_index.patient(builders.TEST_INS) is None
