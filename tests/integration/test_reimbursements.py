"""The insurer's reimbursement history on the production stack (RabbitMQ, SeaweedFS, PostgreSQL, real workers):
acts held until 48 h after activation (injected clock), filed once, deduplicated on re-delivery; the ANS
CNAM-HR example held and filed; each history indexed under category REMB."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from config.tables import load_validation_rules
from hub.envelope import Source
from hub.records import DocumentQuery, DocumentRecord, PatientRecord, PatientStatus, SubmissionRecord
from pipelines.insurer.core.history import HeldAct, HeldDocument, ReimbursedAct
from pipelines.insurer.core.reimbursements import history_document_id
from pipelines.insurer.reimbursements import InsurerBatches
from storage.sql.reimbursements import SqlReimbursements
from tests.builders import TEST_INS, TEST_OID, with_key
from tests.integration.hub_harness import RunningHub
from tests.services import FIXTURES_CDA, eventually, missing

pytestmark = pytest.mark.integration
ACTIVATED = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
NEVER_ACTIVATED = with_key("1790399123456")
FIXTURE_ID = "1.2.250.1.213.1.1.1.36.2021.1.1"


def act_line(ref: str, ins: str = TEST_INS, *, day: int = 1) -> str:
    return f"{ref}|{ins}|{TEST_OID}|2026-11-{day:02d}|NGAP|G|CONSULTATION MEDECINE GENERALE|1|30|21|810100997245|"


def batch(batch_id: str, *lines: str) -> bytes:
    return "\n".join([f"MESHUB-REMB|1|{batch_id}|CNAM", *lines, f"END|{len(lines)}", ""]).encode()


@dataclass
class Lifecycle:
    """Stands in for the patient lifecycle: activation times, and activation + 48 h as the release time."""

    activated: dict[str, datetime] = field(default_factory=dict)

    def released_after(self, ins: str) -> datetime | None:
        at = self.activated.get(ins)
        return None if at is None else at + timedelta(hours=48)


class CrashOnce:
    """The holding store, except that the first mark_filed dies (the process crashed after intake)."""

    def __init__(self, inner: SqlReimbursements) -> None:
        self.inner = inner
        self.crashed = False

    def hold_acts(self, batch_id: str, acts: Sequence[ReimbursedAct], *, received_at: datetime,
                  release_after: Mapping[str, datetime | None] | None = None) -> int:
        return self.inner.hold_acts(batch_id, acts, received_at=received_at, release_after=release_after)

    def schedule(self, ins: str, release_after: datetime) -> int:
        return self.inner.schedule(ins, release_after)

    def hold_document(self, document: HeldDocument) -> bool:
        return self.inner.hold_document(document)

    def pending_patients(self, limit: int = 500, *, after: str = "", due_before: datetime | None = None) -> list[str]:
        return self.inner.pending_patients(limit, after=after, due_before=due_before)

    def pending_acts(self, ins: str) -> list[HeldAct]:
        return self.inner.pending_acts(ins)

    def pending_documents(self, ins: str) -> list[HeldDocument]:
        return self.inner.pending_documents(ins)

    def mark_filed(self, submission_id: str, *, act_refs: Sequence[str] = (),
                   document_keys: Sequence[str] = ()) -> int:
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("killed between Intake.accept and mark_filed")
        return self.inner.mark_filed(submission_id, act_refs=act_refs, document_keys=document_keys)


@dataclass
class Feed:
    hub: RunningHub
    holds: SqlReimbursements
    lifecycle: Lifecycle
    batches: InsurerBatches
    now: list[datetime]

    def activate(self, ins: str) -> None:
        """What the lifecycle does when a profile opens: its release time known, and scheduled."""
        self.lifecycle.activated[ins] = ACTIVATED
        self.holds.schedule(ins, ACTIVATED + timedelta(hours=48))

    def remb(self, ins: str = TEST_INS) -> list[DocumentRecord]:
        return self.hub.hub.index.documents(ins, DocumentQuery(category="REMB"))

    def final(self, submission_id: str) -> SubmissionRecord:
        found: SubmissionRecord = eventually(lambda: _final(self.hub, submission_id), what="submission final")
        return found

    def filed_submissions(self, refs: Sequence[str]) -> set[str]:
        held = [self.holds.held_act(r) for r in refs]
        return {h.filed_submission for h in held if h is not None and h.filed_submission is not None}


def _final(hub: RunningHub, submission_id: str) -> SubmissionRecord | None:
    record = hub.hub.index.submission(submission_id)
    return record if record is not None and record.final else None


def make_feed(stack: RunningHub, holds: object | None = None) -> Feed:
    index = stack.hub.index
    index.upsert_patients([
        PatientRecord(ins=TEST_INS, oid=TEST_OID, birth_name="PAT-TROIS", given_names="DOMINIQUE",
                      birth_date="1979-03-28", sex="F", birth_place="51215", status=PatientStatus.ACTIVE),
        PatientRecord(ins=NEVER_ACTIVATED, oid=TEST_OID, birth_name="TEST", given_names="Jean",
                      birth_date="1979-03-01", sex="M", status=PatientStatus.CREATED)])
    store = SqlReimbursements.beside(index)
    lifecycle = Lifecycle()
    now = [ACTIVATED - timedelta(days=3)]
    batches = InsurerBatches(intake=stack.hub.intake, index=index, store=stack.hub.pipeline_store,
                             holds=holds or store,  # type: ignore[arg-type]
                             released_after=lifecycle.released_after, rules=load_validation_rules(),
                             producer="cnam", clock=lambda: now[0])
    return Feed(stack, store, lifecycle, batches, now)


@pytest.fixture
def feed(stack: RunningHub) -> Iterator[Feed]:
    yield make_feed(stack)


def test_acts_are_held_until_48_hours_after_activation_then_filed_exactly_once(feed: Feed) -> None:
    refs = ["R-1", "R-2", "R-3"]
    answer = feed.batches.accept_batch(batch("B1", *(act_line(r, day=n + 1) for n, r in enumerate(refs)),
                                             act_line("R-9", NEVER_ACTIVATED)))
    assert (answer["acts"], answer["new"], answer["known"]) == (4, 4, 0)

    # Before activation, and 1 minute before activation + 48 h: nothing is filed.
    assert feed.batches.release(ACTIVATED)["histories"] == 0
    feed.activate(TEST_INS)
    early = feed.batches.release(ACTIVATED + timedelta(hours=47, minutes=59))
    assert (early["released"], early["histories"]) == (0, 0)
    assert feed.remb() == [] and len(feed.holds.pending_acts(TEST_INS)) == 3

    # At activation + 48 h: one history document with the three acts, indexed under REMB.
    done = feed.batches.release(ACTIVATED + timedelta(hours=48))
    assert (done["released"], done["histories"], done["acts"]) == (1, 1, 3)
    [submission] = feed.filed_submissions(refs)
    assert feed.final(submission).status == "indexed"
    [document] = feed.remb()
    assert document.document_id == history_document_id(refs)
    assert (document.category, document.class_code, document.type_code) == ("REMB", "60", "REMB")
    assert feed.holds.pending_acts(TEST_INS) == []
    assert len(feed.holds.pending_acts(NEVER_ACTIVATED)) == 1  # never activated: still held

    # Later runs file nothing more.
    assert feed.batches.release(ACTIVATED + timedelta(days=3))["histories"] == 0
    assert len(feed.remb()) == 1


def test_a_redelivered_batch_adds_nothing_and_an_overlapping_one_only_its_new_acts(feed: Feed) -> None:
    feed.activate(TEST_INS)
    first = batch("B1", act_line("R-1"), act_line("R-2"))
    assert feed.batches.accept_batch(first)["new"] == 2
    feed.batches.release(ACTIVATED + timedelta(hours=48))
    assert feed.batches.accept_batch(first) == {"batch_id": "B1", "issuer": "CNAM", "acts": 2, "new": 0, "known": 2}
    assert feed.batches.release(ACTIVATED + timedelta(hours=50))["histories"] == 0

    overlapping = batch("B2", act_line("R-2"), act_line("R-3", day=3), act_line("R-4", day=4))
    assert (feed.batches.accept_batch(overlapping)["new"], len(feed.holds.pending_acts(TEST_INS))) == (2, 2)
    assert feed.batches.release(ACTIVATED + timedelta(hours=51))["acts"] == 2
    eventually(lambda: len(feed.remb()) == 2, what="second history indexed")
    assert {d.document_id for d in feed.remb()} == {history_document_id(["R-1", "R-2"]),
                                                    history_document_id(["R-3", "R-4"])}


def test_the_ans_cnam_hr_example_is_held_and_filed(feed: Feed) -> None:
    path = FIXTURES_CDA / "CNAM-HR_2021.01.xml"
    if not path.exists():
        missing(f"ANS fixture {path} not found")
    raw = path.read_bytes()
    assert feed.batches.accept_document(raw) == {"document_id": FIXTURE_ID, "new": True}
    assert feed.batches.accept_document(raw) == {"document_id": FIXTURE_ID, "new": False}  # re-delivered
    assert feed.batches.release(ACTIVATED + timedelta(days=10))["documents"] == 0  # not activated
    feed.activate(TEST_INS)
    assert feed.batches.release(ACTIVATED + timedelta(hours=48))["documents"] == 1
    held = feed.holds.held_document(FIXTURE_ID)
    assert held is not None and held.filed_submission is not None
    assert feed.final(held.filed_submission).status == "indexed"
    document = feed.hub.hub.index.document(FIXTURE_ID)
    assert document is not None and (document.category, document.class_code) == ("REMB", "60")
    assert document.sha256 == held.blob.sha256  # the exact bytes the insurer sent
    assert feed.batches.release(ACTIVATED + timedelta(hours=49))["documents"] == 0


def test_a_crash_between_intake_and_mark_filed_files_nothing_twice(stack: RunningHub) -> None:
    crashing = CrashOnce(SqlReimbursements.beside(stack.hub.index))
    feed = make_feed(stack, crashing)
    feed.activate(TEST_INS)
    feed.batches.accept_batch(batch("B1", act_line("R-1"), act_line("R-2")))
    with pytest.raises(RuntimeError):
        feed.batches.release(ACTIVATED + timedelta(hours=48))
    assert len(feed.holds.pending_acts(TEST_INS)) == 2  # accepted by intake, but not marked filed
    eventually(lambda: len(feed.remb()) == 1, what="the first submission indexed")

    # The next run (later, after a restart) renders the same document and submits it again.
    assert feed.batches.release(ACTIVATED + timedelta(hours=60))["histories"] == 1
    [submission] = feed.filed_submissions(["R-1", "R-2"])
    assert feed.final(submission).status == "indexed"
    assert len(feed.remb()) == 1 and feed.holds.pending_acts(TEST_INS) == []

    # Even the same bytes under a fresh submission id (a producer retrying) are only a duplicate.
    [document] = feed.remb()
    raw = stack.hub.store.get(document.blob)
    again = stack.hub.intake.accept(raw, Source(kind="insurer", producer="cnam"))
    assert feed.final(again.submission_id).status == "duplicate"
    assert len(feed.remb()) == 1
