"""InsurerBatches without services: what it refuses (nothing held), how it chunks, and that a re-run after a
crash submits the same items under the same submission ids.  The index and holds in memory and on SQLite
(each test runs on both), in-memory S3 and bus (storage.memory)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree

from config.tables import load_validation_rules
from hub.errors import BusUnavailable, Refused
from hub.intake import Intake
from hub.records import PatientRecord, PatientStatus
from pipelines.cda.validation import ValidationRules
from pipelines.insurer.core.reimbursements import history_document_id
from pipelines.insurer.reimbursements import InsurerBatches
from storage.memory.blobs import MemoryBlobStore
from storage.memory.bus import MemoryPublisher
from storage.memory.index import MemoryIndex
from storage.memory.reimbursements import MemoryReimbursements
from storage.sql.index import SqlIndex
from storage.sql.reimbursements import SqlReimbursements
from tests.builders import TEST_INS, TEST_OID, with_key
from tests.services import FIXTURES_CDA, missing

NS = {"h": "urn:hl7-org:v3"}
ACTIVATED = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
RELEASE = ACTIVATED + timedelta(hours=48)
AnyIndex = MemoryIndex | SqlIndex


@pytest.fixture(scope="module")
def rules() -> ValidationRules:
    return load_validation_rules()


@pytest.fixture(params=["memory", "sqlite"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnyIndex]:
    index = MemoryIndex() if request.param == "memory" else SqlIndex.connect(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    index.upsert_patients([PatientRecord(ins=TEST_INS, oid=TEST_OID, birth_name="TEST", given_names="Jeanne",
                                         birth_date="1979-03-01", sex="F", status=PatientStatus.ACTIVE)])
    yield index
    if isinstance(index, SqlIndex):
        index.dispose()


class Parts:
    def __init__(self, index: AnyIndex, rules: ValidationRules, *, chunk: int = 500) -> None:
        self.index, self.blobs, self.bus = index, MemoryBlobStore(), MemoryPublisher()
        self.holds = (MemoryReimbursements.beside(index) if isinstance(index, MemoryIndex)
                      else SqlReimbursements.beside(index))
        self.activated: dict[str, datetime] = {TEST_INS: ACTIVATED}
        intake = Intake(store=self.blobs, index=index, publisher=self.bus)
        self.feed = InsurerBatches(intake=intake, index=index, store=self.blobs, holds=self.holds,
                                   released_after=self.released_after, rules=rules, producer="cnam",
                                   max_acts_per_document=chunk, page_size=2,
                                   clock=lambda: ACTIVATED - timedelta(days=1))

    def released_after(self, ins: str) -> datetime | None:
        at = self.activated.get(ins)
        return None if at is None else at + timedelta(hours=48)


def line(ref: str, ins: str = TEST_INS) -> str:
    return f"{ref}|{ins}|{TEST_OID}|2026-11-02|NABM|1208|T.S.H. (SANG)|1|7.02|4.91||"


def batch(*lines: str, count: int | None = None) -> bytes:
    return "\n".join(["MESHUB-REMB|1|B1|CNAM", *lines, f"END|{len(lines) if count is None else count}"]).encode()


def fixture(name: str = "CNAM-HR_2021.01.xml") -> bytes:
    path = FIXTURES_CDA / name
    if not path.exists():
        missing(f"ANS fixture {path} not found")
    return bytes(path.read_bytes())


def refusal(call: object, raw: bytes) -> dict[str, object]:
    with pytest.raises(Refused) as caught:
        call(raw)  # type: ignore[operator]
    return dict(caught.value.finding)


def test_a_bad_batch_is_refused_whole_and_nothing_is_held(index: AnyIndex, rules: ValidationRules) -> None:
    parts = Parts(index, rules)
    finding = refusal(parts.feed.accept_batch, batch(line("A1"), line("A2", TEST_INS[:13] + "00")))
    assert finding["rule"] == "remb.batch" and finding["count"] == 1
    assert finding["problems"] == [{"line": 3, "field": "ins", "rule": "ins.key",
                                    "message": "the INS key (2 last digits) does not match its 13 first digits"}]
    assert TEST_INS[:13] not in str(finding)
    assert parts.holds.pending_patients() == []
    assert refusal(parts.feed.accept_batch, b"\xff\xfe")["problems"] == [
        {"line": 0, "field": "file", "rule": "remb.encoding", "message": "the file is not UTF-8 text"}]


@pytest.mark.parametrize(("name", "change", "rule"), [
    ("BIO-CR-BIO_2024.01_TSH_1.xml", None, "remb.document.type"),
    ("CNAM-HR_2021.01.xml", "wrong-key", "ins.key"),
    ("CNAM-HR_2021.01.xml", "no-ins", "ins.missing"),
    ("CNAM-HR_2021.01.xml", "no-title", "cda.xsd"),
    ("CNAM-HR_2021.01.xml", "doctype", "xml.dtd-forbidden"),
    ("CNAM-HR_2021.01.xml", "garbage", "xml.well-formed"),
])
def test_insurer_documents_that_are_not_remb_with_an_ins_are_refused(
        index: AnyIndex, rules: ValidationRules, name: str, change: str | None, rule: str) -> None:
    parts = Parts(index, rules)
    raw = _changed(fixture(name), change)
    assert refusal(parts.feed.accept_document, raw)["rule"] == rule
    assert parts.blobs.objects == {} and parts.holds.pending_patients() == []


def _changed(raw: bytes, change: str | None) -> bytes:
    if change == "doctype":
        return b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]>' + raw[raw.index(b"<ClinicalDocument"):]
    if change == "garbage":
        return raw[:500]
    root = etree.fromstring(raw)
    ins = root.find("h:recordTarget/h:patientRole/h:id", NS)
    assert ins is not None
    if change == "wrong-key":
        ins.set("extension", TEST_INS[:13] + "00")
    elif change == "no-ins":
        ins.getparent().remove(ins)  # type: ignore[union-attr]
    elif change == "no-title":
        title = root.find("h:title", NS)
        assert title is not None
        title.tag = "{urn:hl7-org:v3}titre"
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def test_many_acts_are_filed_in_chunks_cut_in_received_order(index: AnyIndex, rules: ValidationRules) -> None:
    parts = Parts(index, rules, chunk=2)
    parts.feed.accept_batch(batch(*(line(f"A{n}") for n in range(5))))
    counts = parts.feed.release(RELEASE)
    assert (counts["histories"], counts["acts"]) == (3, 5)
    ids = {parts.index.submission(e.submission_id).document_id for e in parts.bus.published}  # type: ignore[union-attr]
    assert len(parts.bus.published) == 3 and ids == {None}  # pending: the pipeline fills the document id
    filed = {h.filed_submission for h in (parts.holds.held_act(f"A{n}") for n in range(5)) if h is not None}
    assert filed == {e.submission_id for e in parts.bus.published}
    expected = {history_document_id(refs) for refs in (["A0", "A1"], ["A2", "A3"], ["A4"])}
    rendered = {_doc_id(parts.blobs.get(e.raw)) for e in parts.bus.published}
    assert rendered == expected


def _doc_id(raw: bytes) -> str:
    element = etree.fromstring(raw).find("h:id", NS)
    assert element is not None
    return f"{element.get('root')}^{element.get('extension')}"


def test_a_rerun_after_a_crash_uses_the_same_submission_and_bytes(index: AnyIndex, rules: ValidationRules) -> None:
    parts = Parts(index, rules)
    parts.feed.accept_batch(batch(line("A1"), line("A2")))
    parts.feed.accept_document(fixture())
    real_mark = parts.holds.mark_filed
    parts.holds.mark_filed = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("crash"))  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        parts.feed.release(RELEASE)
    parts.holds.mark_filed = real_mark  # type: ignore[method-assign]
    first = parts.bus.published[-1]
    parts.feed.release(RELEASE + timedelta(hours=5))
    again = parts.bus.published[-2]  # the history again (pending: published again), then the document
    assert (again.submission_id, again.raw) == (first.submission_id, first.raw)
    assert parts.holds.pending_patients() == []
    assert len({e.submission_id for e in parts.bus.published}) == 2  # one history, one insurer document


def test_a_bus_outage_leaves_everything_pending(index: AnyIndex, rules: ValidationRules) -> None:
    parts = Parts(index, rules)
    parts.feed.accept_batch(batch(line("A1")))
    parts.bus.down = True
    with pytest.raises(BusUnavailable):
        parts.feed.release(RELEASE)
    assert len(parts.holds.pending_acts(TEST_INS)) == 1
    parts.bus.down = False
    assert parts.feed.release(RELEASE)["acts"] == 1


def test_patients_not_released_are_paged_through_and_wait(index: AnyIndex, rules: ValidationRules) -> None:
    parts = Parts(index, rules)
    others = [with_key(f"17903991234{n:02d}") for n in range(5)]
    parts.feed.accept_batch(batch(line("A0"), *(line(f"O{n}", ins) for n, ins in enumerate(others))))
    assert parts.feed.release(RELEASE - timedelta(seconds=1), full=True) == {
        "released": 0, "waiting": 6, "histories": 0, "documents": 0, "acts": 0}
    parts.activated[others[0]] = ACTIVATED  # activated, but not in the registry: waits too
    assert parts.feed.release(RELEASE, full=True) == {
        "released": 1, "waiting": 5, "histories": 1, "documents": 0, "acts": 1}


def test_the_routine_release_looks_only_at_what_an_opening_scheduled(index: AnyIndex, rules: ValidationRules) -> None:
    parts = Parts(index, rules)
    waiting = with_key("1790399123400")
    del parts.activated[TEST_INS]  # nobody is open when the batch arrives
    parts.feed.accept_batch(batch(line("A0"), line("W0", waiting)))
    parts.activated[TEST_INS] = ACTIVATED  # opened since, but its schedule was never recorded
    quiet = {"released": 0, "waiting": 0, "histories": 0, "documents": 0, "acts": 0}
    assert parts.feed.release(RELEASE) == quiet  # the routine pass reads no unscheduled patient
    assert parts.holds.schedule(TEST_INS, RELEASE) == 1  # what the lifecycle records when a profile opens
    assert parts.feed.release(RELEASE - timedelta(seconds=1)) == quiet
    assert parts.feed.release(RELEASE) == {"released": 1, "waiting": 0, "histories": 1, "documents": 0, "acts": 1}
    assert parts.feed.release(RELEASE, full=True)["waiting"] == 1  # the hourly net still sees the other one
