"""A mail step makes new items through the claim check and publishes their events itself (no Intake).

The mail pipeline on the in-memory adapters (storage/memory): the documents of a mail's XDM are claimed
under ids derived from the mail and published as DocumentSubmitted on the step's own publisher; a
redelivered mail whose derived document id is already final publishes nothing for it.  And the two
halves of hub.intake: ClaimCheck publishes nothing, Intake (the doors) still drops what it could not
publish.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hub.envelope import Envelope, Source
from hub.errors import BusUnavailable
from hub.events import DocumentSubmitted, MailQueued
from hub.intake import ClaimCheck, Intake, resubmitted
from hub.mailqueue import MAIL_CONTENT_TYPE, SmtpEnvelope, SmtpRecipient, pack
from hub.records import SubmissionStatus
from pipelines.mail.core.mss import MssRules
from pipelines.mail.pipeline import MailPipeline, MailPorts
from pipelines.mail.reporting import ReportSender
from storage.memory.blobs import MemoryBlobStore
from storage.memory.bus import MemoryPublisher
from storage.memory.index import MemoryIndex
from storage.memory.mailbox import MemoryMailbox
from tests.mail_builders import PATIENT_ADDRESS, fixture_cda, make_mail_with_xdm

CLINIC = "dr.test@hopital.mssante.fr"


@dataclass
class Wired:
    store: MemoryBlobStore
    index: MemoryIndex
    mailboxes: MemoryMailbox
    claims: ClaimCheck
    submissions: MemoryPublisher  # the mail step's DocumentSubmitted
    reports_bus: MemoryPublisher  # the reports' MailQueued
    mail: MailPipeline


@pytest.fixture
def wired(memory_store: MemoryBlobStore, memory_index: MemoryIndex) -> Wired:
    mailboxes, claims = MemoryMailbox.beside(memory_index), ClaimCheck(store=memory_store, index=memory_index)
    submissions, reports_bus = MemoryPublisher(), MemoryPublisher()
    reports = ReportSender(claims, reports_bus, hostname="hub.test", domain="hub.test")
    mail = MailPipeline(MailPorts(store=memory_store, index=memory_index, mailboxes=mailboxes, claims=claims,
                                  submissions=submissions, outbound=MemoryPublisher(), rules=MssRules(),
                                  reports=reports))
    return Wired(memory_store, memory_index, mailboxes, claims, submissions, reports_bus, mail)


def queued_mail(w: Wired) -> Envelope:
    """A mail from an authenticated clinic to a patient, its XDM carrying one CDA, as the SMTP door queued it."""
    message = make_mail_with_xdm([fixture_cda("BIO-CR-BIO_2024.01_TSH_1.xml")], from_=CLINIC)
    smtp = SmtpEnvelope(mail_from=CLINIC, recipients=(SmtpRecipient(PATIENT_ADDRESS),), auth="clinic")
    claim = w.claims.claim(pack(smtp, message), Source(kind="smtp", producer="clinic"),
                           content_type=MAIL_CONTENT_TYPE, kind="mail")
    assert claim.envelope is not None
    return claim.envelope


def test_a_mail_step_publishes_document_submitted_for_each_extracted_document(wired: Wired) -> None:
    # Given a queued mail whose XDM carries one CDA
    envelope = queued_mail(wired)

    # When the mail pipeline runs
    wired.mail(envelope)

    # Then the CDA is a pending submission of its own, under the id the filing derived from the mail
    [filing] = wired.mailboxes.filing_rows.values()
    [filed] = filing.documents
    record = wired.index.submission(filed.submission_id)
    assert record is not None and record.status is SubmissionStatus.PENDING
    assert record.blob_key.startswith("cda/") and record.source_kind == "mss"
    # And the step published its DocumentSubmitted itself, on its own publisher, once
    [event] = wired.submissions.published
    assert isinstance(event, DocumentSubmitted)
    assert event.envelope.submission_id == filed.submission_id
    assert event.envelope.raw.key == record.blob_key
    assert wired.reports_bus.published == []  # no report yet: the document is not final


def test_a_redelivered_mail_step_with_an_already_final_document_publishes_nothing_for_it(wired: Wired) -> None:
    # Given a mail whose step died publishing its document (the bus was down): the step raises, to be
    # redelivered, and the document's submission stays pending (nothing forgotten)
    envelope = queued_mail(wired)
    wired.submissions.down = True
    with pytest.raises(BusUnavailable):
        wired.mail(envelope)
    [pending] = [r for r in wired.index.submission_rows.values() if r.blob_key.startswith("cda/")]
    assert not pending.final and wired.mailboxes.message_rows == {}
    # And the recovery sweep republished it meanwhile, and the CDA pipeline finished it (rejected: final)
    wired.index.reject(resubmitted(pending, bucket=wired.store.bucket).envelope, ())
    wired.submissions.down = False

    # When the bus redelivers the mail
    wired.mail(envelope)

    # Then the document, already final under its derived id, is not published again (nor stored twice)
    assert wired.submissions.published == []
    assert [r.submission_id for r in wired.index.submission_rows.values() if r.blob_key.startswith("cda/")] == [
        pending.submission_id]
    # And the mail is filed, and its integration report queued as a mail, by the reports' own publisher
    [filing] = wired.mailboxes.filing_rows.values()
    assert [d.submission_id for d in filing.documents] == [pending.submission_id]
    assert len(wired.mailboxes.message_rows) == 1
    assert [type(e) for e in wired.reports_bus.published] == [MailQueued]


def test_the_claim_check_publishes_nothing_and_gives_no_envelope_for_a_final_id(
        memory_store: MemoryBlobStore, memory_index: MemoryIndex) -> None:
    # Given a claimed item later processed (final)
    claims = ClaimCheck(store=memory_store, index=memory_index)
    first = claims.claim(b"<ClinicalDocument/>", Source(kind="mss", producer="clinic"), submission_id="a" * 32)
    assert first.envelope is not None and first.created
    memory_index.reject(first.envelope, ())

    # When it is claimed again under the same id
    again = claims.claim(b"<ClinicalDocument/>", Source(kind="mss", producer="clinic"), submission_id="a" * 32)

    # Then there is nothing to publish: the final record as it is
    assert again.envelope is None and not again.created
    assert again.record.final and again.record.submission_id == "a" * 32


def test_intake_still_drops_a_submission_it_could_not_publish(
        memory_store: MemoryBlobStore, memory_index: MemoryIndex, memory_bus: MemoryPublisher) -> None:
    # Given a door's intake whose bus is down
    intake = Intake(store=memory_store, index=memory_index, publisher=memory_bus)
    memory_bus.down = True

    # When it accepts an item, then the caller gets the TransientError and nothing stays recorded
    with pytest.raises(BusUnavailable):
        intake.accept(b"<ClinicalDocument/>", Source(kind="http", producer="clinic"))
    assert memory_index.submission_rows == {}

    # And once the bus is back, the item is recorded and its DocumentSubmitted published
    memory_bus.down = False
    record = intake.accept(b"<ClinicalDocument/>", Source(kind="http", producer="clinic"))
    [event] = memory_bus.published
    assert isinstance(event, DocumentSubmitted) and event.envelope.submission_id == record.submission_id
