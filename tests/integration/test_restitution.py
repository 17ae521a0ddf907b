"""Restitution (the ZIP export) and purge (the end of the archive) on real PostgreSQL and SeaweedFS.

Documents are indexed through the Index port directly (their bytes stored in S3 first, as intake does);
messages and notices through their stores.  The export is opened with zipfile and checked file by file
against what was stored; the purge is checked row by row and object by object."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from hub.envelope import BlobRef, Envelope, Source
from hub.errors import NotFound, StoreUnavailable
from hub.intake import new_submission_id
from hub.notices import Channel, EventKind, Notice, NoticeState, Preferences
from hub.records import (
    DeliveryRecord,
    DeliveryState,
    DocumentQuery,
    DocumentRecord,
    MessageRecord,
    PatientRecord,
    PatientStatus,
)
from pipelines.notify.core.policy import notice_id
from pipelines.record.core.restitution import ExportSummary, patient_visible
from pipelines.record.restitution import export_record, purge, sweep_erasures
from storage.objects import MinioBlobStore
from storage.sql.index import SqlIndex
from storage.sql.mailbox import SqlMailbox
from storage.sql.notifications import SqlNotifications
from storage.sql.purge import SqlPurge
from tests.builders import TEST_INS, TEST_OID, document, with_key

pytestmark = pytest.mark.integration
OTHER_INS = with_key("1850775123456")
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
ODD_ID = "1.2.250.1.999^lab/2024:01/../x?y"


@dataclass
class Hub:
    index: SqlIndex
    store: MinioBlobStore
    mailboxes: SqlMailbox
    notices: SqlNotifications
    purge: SqlPurge


@pytest.fixture
def hub(pg_url: str, blob_store: MinioBlobStore) -> Iterator[Hub]:
    index = SqlIndex.connect(pg_url)
    yield Hub(index, blob_store, SqlMailbox.beside(index), SqlNotifications.beside(index), SqlPurge.beside(index))
    index.dispose()


def register(hub: Hub, *inses: str) -> None:
    hub.index.upsert_patients([PatientRecord(ins=ins, oid=TEST_OID, birth_name="TEST", given_names="Jeanne",
                                             birth_date="1979-03-01", sex="F", email=f"{ins}@example.org",
                                             phone="+33600000000", postal_address="1 rue de Test, 75000 Paris",
                                             status=PatientStatus.ACTIVE) for ins in inses])


def index_document(hub: Hub, document_id: str, *, ins: str = TEST_INS, **changes: object) -> DocumentRecord:
    """Store the bytes (as intake does), then index them under `ins` (as the CDA pipeline does)."""
    data = f"<ClinicalDocument><!-- {ins} {document_id} --><id/></ClinicalDocument>".encode()
    ref = hub.store.put(data, kind="cda", content_type="text/xml")
    env = Envelope(submission_id=new_submission_id(), received_at=NOW, source=Source("http", "lab-1"), raw=ref)
    doc = document(env, document_id, patient_ins=ins, blob_bucket=ref.bucket, **changes)
    hub.index.index_document(env, doc, ())
    stored = hub.index.document(document_id)
    assert stored is not None
    return stored


def deliver_mail(hub: Hub, *inses: str, tag: str = "1") -> BlobRef:
    """One mail kept in each patient's mailbox: one object, one copy (row) per mailbox."""
    raw = f"From: dr@hopital.mssante.fr\r\nSubject: Résultats {tag}\r\n\r\nBonjour {tag}\r\n".encode()
    ref = hub.store.put(raw, kind="msg", content_type="message/rfc822")
    submission = new_submission_id()
    for ins in inses:
        hub.mailboxes.store_message(MessageRecord(
            message_id=f"{submission}-{ins}", mailbox=f"{ins}@patient.mssante.fr", submission_id=submission,
            direction="in", correspondent="dr@hopital.mssante.fr", subject=f"Résultats {tag}",
            rfc_message_id=f"<{tag}@hopital>", in_reply_to="", blob_bucket=ref.bucket, blob_key=ref.key,
            sha256=ref.sha256, size=ref.size, received_at=NOW))
    return ref


def notify(hub: Hub, ins: str, event: str) -> None:
    hub.notices.add([Notice(notice_id=notice_id(event, Channel.INAPP, ins, ""), event_id=event,
                            kind=EventKind.NEW_DOCUMENT, ins=ins, about_ins=ins, channel=Channel.INAPP, address="",
                            state=NoticeState.SENT, created_at=NOW, due_at=NOW)])


def export(hub: Hub, ins: str = TEST_INS, *, visible: Callable[[DocumentRecord], bool] = patient_visible,
           audit_entries: Callable[[str], list[dict[str, Any]]] | None = None,
           ) -> tuple[zipfile.ZipFile, ExportSummary]:
    out = io.BytesIO()
    summary = export_record(ins, index=hub.index, store=hub.store, mailboxes=hub.mailboxes, notices=hub.notices,
                            out=out, now=NOW, visible=visible, audit_entries=audit_entries)
    return zipfile.ZipFile(io.BytesIO(out.getvalue())), summary


def read_json(archive: zipfile.ZipFile, name: str) -> Any:
    return json.loads(archive.read(name))


class Unseekable(io.RawIOBase):
    """A pipe-like sink: write only, no tell or seek (as an HTTP response body is)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        chunk = bytes(b)
        self.data += chunk
        return len(chunk)


# --- export ---------------------------------------------------------------------------------------

def test_the_export_holds_every_document_byte_for_byte_and_a_manifest_that_checks(hub: Hub) -> None:
    register(hub, TEST_INS, OTHER_INS)
    old = index_document(hub, "1.2.3^v1")
    new = index_document(hub, "1.2.3^v2", replaces=("1.2.3^v1",))
    masked = index_document(hub, ODD_ID, confidentiality=("N", "MASQUE_PS"))
    index_document(hub, "1.2.3^other", ins=OTHER_INS)
    archive, summary = export(hub)
    assert archive.testzip() is None
    docs = {d["document_id"]: d for d in read_json(archive, "documents.json")["documents"]}
    assert set(docs) == {old.document_id, new.document_id, masked.document_id}  # deprecated and masked too
    assert docs[old.document_id]["status"] == "deprecated" and docs[old.document_id]["replaced_by"] == "1.2.3^v2"
    for record in (old, new, masked):
        entry = docs[record.document_id]
        data = archive.read(entry["file"])
        assert data == hub.store.get(record.blob)
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] == record.sha256
    assert docs[masked.document_id]["confidentiality"] == ["N", "MASQUE_PS"]
    manifest = read_json(archive, "manifest.json")
    listed = {f["name"]: f for f in manifest["files"]}
    assert set(listed) == set(archive.namelist()) - {"manifest.json"}
    for name, entry in listed.items():
        data = archive.read(name)
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["size"]
    assert {"README.txt", "patient.json", "documents.json", "messages.json", "notifications.json"} <= set(listed)
    assert "audit.json" not in listed  # no trail given
    assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in archive.infolist())
    assert summary.documents == 3 and summary.excluded_documents == 0


def test_a_document_id_with_slashes_and_colons_gets_a_safe_file_name(hub: Hub) -> None:
    register(hub, TEST_INS)
    index_document(hub, ODD_ID)
    index_document(hub, "1.2.250.1.999^lab:2024:01:..:x?y")  # the same once unsafe characters are replaced
    archive, _ = export(hub)
    entries = read_json(archive, "documents.json")["documents"]
    names = [e["file"] for e in entries]
    assert len(set(names)) == 2
    for name in names:
        folder, file = name.split("/")
        assert folder == "documents" and file.endswith(".xml") and not file.startswith(".")
        assert set(file) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    assert ODD_ID in {e["document_id"] for e in entries}


def test_invisible_patient_documents_stay_out_and_the_readme_says_so(hub: Hub) -> None:
    register(hub, TEST_INS)
    shown = index_document(hub, "1.2.3^shown")
    hidden = index_document(hub, "1.2.3^hidden", confidentiality=("N", "INVISIBLE_PATIENT"))
    archive, summary = export(hub)
    ids = [d["document_id"] for d in read_json(archive, "documents.json")["documents"]]
    assert ids == [shown.document_id]
    assert summary.excluded_documents == 1
    assert hub.store.get(hidden.blob) not in [archive.read(n) for n in archive.namelist()]
    assert "INVISIBLE_PATIENT" in archive.read("README.txt").decode()
    everything, summary = export(hub, visible=lambda _doc: True)  # the lead's access rule decides
    assert summary.documents == 2 and summary.excluded_documents == 0
    assert len(read_json(everything, "documents.json")["documents"]) == 2


def test_messages_notices_settings_and_the_audit_trail_are_included(hub: Hub) -> None:
    register(hub, TEST_INS, OTHER_INS)
    refs = [deliver_mail(hub, TEST_INS, tag=str(n)) for n in range(3)]
    deliver_mail(hub, OTHER_INS, tag="9")
    notify(hub, TEST_INS, "document:1")
    notify(hub, OTHER_INS, "document:2")
    hub.notices.set_preferences(TEST_INS, Preferences(digest=False))
    hub.notices.add_device(TEST_INS, "https://push.example.org/device-1")
    hub.notices.set_representatives(TEST_INS, [OTHER_INS])
    trail = [{"seq": 1, "action": "read", "actor": "812345678901"}]
    archive, summary = export(hub, audit_entries=lambda ins: trail if ins == TEST_INS else [])
    messages = read_json(archive, "messages.json")["messages"]
    assert len(messages) == 3
    assert sorted(archive.read(m["file"]) for m in messages) == sorted(hub.store.get(r) for r in refs)
    assert all(m["file"].endswith(".eml") for m in messages)
    notes = read_json(archive, "notifications.json")
    assert [n["event_id"] for n in notes["notices"]] == ["document:1"]
    assert notes["preferences"]["digest"] is False
    assert notes["devices"] == ["https://push.example.org/device-1"]
    patient = read_json(archive, "patient.json")
    assert patient["patient"]["ins"] == TEST_INS and patient["legal_representatives"] == [OTHER_INS]
    assert read_json(archive, "audit.json")["entries"] == trail
    assert (summary.messages, summary.notifications, summary.audit_entries) == (3, 1, 1)
    readme = archive.read("README.txt").decode()
    assert "audit.json" in readme and "manifest.json" in readme and "3 message(s)" in readme


def test_more_documents_than_a_page_stream_to_an_unseekable_sink(hub: Hub) -> None:
    register(hub, TEST_INS)
    for n in range(205):  # the index pages by 200
        index_document(hub, f"1.2.3^bulk-{n:03d}")
    sink = Unseekable()
    summary = export_record(TEST_INS, index=hub.index, store=hub.store, mailboxes=hub.mailboxes,
                            notices=hub.notices, out=sink, now=NOW)  # type: ignore[arg-type]
    archive = zipfile.ZipFile(io.BytesIO(bytes(sink.data)))
    assert archive.testzip() is None and summary.documents == 205
    assert len([n for n in archive.namelist() if n.startswith("documents/")]) == 205


def test_an_unknown_patient_has_no_export(hub: Hub) -> None:
    with pytest.raises(NotFound):
        export(hub, OTHER_INS)


# --- purge ----------------------------------------------------------------------------------------

def row_counts(hub: Hub, ins: str) -> dict[str, int]:
    mailbox = f"{ins}@patient.mssante.fr"
    queries = {
        "documents": f"SELECT count(*) FROM documents WHERE patient_ins = '{ins}'",
        "messages": f"SELECT count(*) FROM messages WHERE mailbox = '{mailbox}'",
        "deliveries": f"SELECT count(*) FROM deliveries WHERE recipient = '{mailbox}'",
        "notices": f"SELECT count(*) FROM notices WHERE ins = '{ins}' OR about_ins = '{ins}'",
        "preferences": f"SELECT count(*) FROM notification_preferences WHERE ins = '{ins}'",
        "devices": f"SELECT count(*) FROM push_devices WHERE ins = '{ins}'",
        "representatives": f"SELECT count(*) FROM legal_representatives WHERE ins = '{ins}' "
                           f"OR representative_ins = '{ins}'",
    }
    with hub.index.engine.connect() as conn:
        return {name: int(conn.execute(sa.text(sql)).scalar_one()) for name, sql in queries.items()}


def fill(hub: Hub, ins: str, tag: str) -> list[BlobRef]:
    """Documents (two versions), a mail with its delivery row, a notice and settings for one patient."""
    first = index_document(hub, f"1.2.3^{tag}-v1", ins=ins)
    second = index_document(hub, f"1.2.3^{tag}-v2", ins=ins, replaces=(first.document_id,))
    mail = deliver_mail(hub, ins, tag=tag)
    hub.mailboxes.record_delivery(DeliveryRecord(new_submission_id(), f"{ins}@patient.mssante.fr", "patient",
                                                 DeliveryState.DELIVERED))
    notify(hub, ins, f"document:{tag}")
    hub.notices.set_preferences(ins, Preferences(email=False))
    hub.notices.add_device(ins, f"https://push.example.org/{tag}")
    return [first.blob, second.blob, mail]


def test_purge_removes_the_patients_rows_and_objects_and_nothing_else(hub: Hub) -> None:
    register(hub, TEST_INS, OTHER_INS)
    mine = fill(hub, TEST_INS, "mine")
    theirs = fill(hub, OTHER_INS, "theirs")
    shared = deliver_mail(hub, TEST_INS, OTHER_INS, tag="both")  # one mail to both: one object
    hub.notices.set_representatives(OTHER_INS, [TEST_INS])
    before_other = row_counts(hub, OTHER_INS)
    report = purge(TEST_INS, purge_store=hub.purge, eraser=hub.store, redact=lambda ins: 4)
    assert report.complete and report.audit_redacted == 4
    assert set(report.blobs) == set(mine) and shared not in report.blobs
    assert report.rows["documents"] == 2 and report.rows["document_links"] == 1 and report.rows["patients"] == 1
    assert set(row_counts(hub, TEST_INS).values()) == {0}
    for ref in mine:
        with pytest.raises(NotFound):
            hub.store.get(ref)
    # the other patient keeps everything, including the object of the mail both received
    assert row_counts(hub, OTHER_INS) == {**before_other, "representatives": 0}  # the link to the purged one
    for ref in (*theirs, shared):
        assert hub.store.get(ref)
    assert len(hub.index.documents(OTHER_INS, DocumentQuery(include_deprecated=True))) == 2
    assert len(hub.mailboxes.messages(f"{OTHER_INS}@patient.mssante.fr")) == 2


def test_the_registry_row_stays_as_a_blank_closed_tombstone(hub: Hub) -> None:
    register(hub, TEST_INS)
    fill(hub, TEST_INS, "t")
    purge(TEST_INS, purge_store=hub.purge, eraser=hub.store)
    tombstone = hub.index.patient(TEST_INS)
    assert tombstone == PatientRecord(ins=TEST_INS, oid=TEST_OID, status=PatientStatus.CLOSED)
    register(hub, TEST_INS)  # the insurer brings the INS back: a new, empty profile
    assert hub.index.documents(TEST_INS, DocumentQuery(include_deprecated=True)) == []


def test_purging_twice_is_harmless(hub: Hub) -> None:
    register(hub, TEST_INS, OTHER_INS)
    fill(hub, TEST_INS, "twice")
    theirs = fill(hub, OTHER_INS, "kept")
    purge(TEST_INS, purge_store=hub.purge, eraser=hub.store)
    again = purge(TEST_INS, purge_store=hub.purge, eraser=hub.store)
    assert again.blobs == () and again.complete and set(again.rows.values()) == {0}
    assert all(hub.store.get(ref) for ref in theirs)
    assert hub.purge.pending_erasures() == []


class DownOnce:
    """An object store that is down for the first `failures` deletions, then back."""

    def __init__(self, store: MinioBlobStore, failures: int) -> None:
        self.store, self.failures = store, failures

    def delete(self, ref: BlobRef) -> None:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("object store delete: no answer")
        self.store.delete(ref)


def test_objects_the_store_could_not_erase_stay_queued_for_the_sweep(hub: Hub) -> None:
    register(hub, TEST_INS)
    mine = fill(hub, TEST_INS, "down")
    report = purge(TEST_INS, purge_store=hub.purge, eraser=DownOnce(hub.store, failures=1))
    assert not report.complete and report.erased == 0 and set(report.failed) == set(mine)
    assert set(row_counts(hub, TEST_INS).values()) == {0}  # the rows are gone regardless (durable first)
    assert set(hub.purge.pending_erasures()) == set(mine)
    swept = sweep_erasures(purge_store=hub.purge, eraser=hub.store)
    assert swept.complete and swept.erased == len(mine)
    assert hub.purge.pending_erasures() == []
    for ref in mine:
        with pytest.raises(NotFound):
            hub.store.get(ref)
    hub.store.delete(mine[0])  # deleting a missing object is fine


def test_a_queued_object_referred_to_again_is_not_erased(hub: Hub) -> None:
    register(hub, TEST_INS, OTHER_INS)
    [doc_ref, *_] = fill(hub, TEST_INS, "again")
    purge(TEST_INS, purge_store=hub.purge, eraser=DownOnce(hub.store, failures=99))
    # the same bytes stored again since (content-addressed: the same object) and indexed for someone
    env = Envelope(new_submission_id(), NOW, Source("http", "lab-1"), doc_ref)
    hub.index.index_document(env, replace(document(env, "1.2.3^reborn", patient_ins=OTHER_INS),
                                          blob_bucket=doc_ref.bucket), ())
    assert doc_ref not in hub.purge.pending_erasures()
    sweep_erasures(purge_store=hub.purge, eraser=hub.store)
    assert hub.store.get(doc_ref)
