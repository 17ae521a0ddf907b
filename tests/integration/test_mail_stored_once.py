"""A mail's bytes are written once: the queued mail intake stores at the 250 is the only copy of the message.

One mail from an authenticated clinic to a patient (with an XDM carrying one CDA), an organisation's
mailbox here and a doctor on another domain goes through intake, the mail pipeline and the outbound
pipeline (deferred once, then delivered) on a sealed SeaweedFS store wrapped to count its PUTs.
The queues are in-memory publishers (storage.memory.bus); the relay and the local delivery are doubles that keep
what they were handed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from hub.delivery import Outcome, RecipientResult
from hub.envelope import BlobRef, Envelope, Source
from hub.intake import ClaimCheck, Intake
from hub.mailqueue import MAIL_CONTENT_TYPE, Reply, SmtpEnvelope, SmtpRecipient, pack
from hub.records import DeliveryState
from pipelines.mail.core.mss import MssRules
from pipelines.mail.core.relay_schedule import NextHop, RelaySchedule
from pipelines.mail.outbound import OutboundPipeline, OutboundPorts
from pipelines.mail.pipeline import MailPipeline, MailPorts
from pipelines.mail.reporting import ReportSender
from storage.memory.bus import MemoryPublisher
from storage.objects import MinioBlobStore
from storage.sql.index import SqlIndex
from storage.sql.mailbox import SqlMailbox
from tests.fixtures_memory import envelopes
from tests.mail_builders import PATIENT_ADDRESS, fixture_cda, make_mail_with_xdm

pytestmark = pytest.mark.integration

CLINIC = "dr.test@hopital.mssante.fr"
ORG = "secretariat@clinique.hub.test"
REMOTE = "dr.autre@ailleurs.mssante.fr"
BUSY = Reply(451, "4.3.0", "busy")


@dataclass
class CountingStore:
    """The BlobStore, counting what is PUT (the bytes of each put are kept to look into)."""

    inner: MinioBlobStore
    puts: list[tuple[str, bytes]] = field(default_factory=list)

    def put(self, data: bytes, *, kind: str, content_type: str) -> BlobRef:
        self.puts.append((kind, data))
        return self.inner.put(data, kind=kind, content_type=content_type)

    def get(self, ref: BlobRef) -> bytes:
        return self.inner.get(ref)

    def ping(self) -> None:
        self.inner.ping()

    def holding(self, part: bytes) -> list[str]:
        """The kinds of the puts whose bytes contain `part`."""
        return [kind for kind, data in self.puts if part in data]


class Hands:
    """Relay and LocalDelivery doubles: the relay answers 451 on its first call, 250 afterwards."""

    def __init__(self) -> None:
        self.relayed: list[tuple[bytes, list[str]]] = []
        self.local: list[tuple[bytes, list[str]]] = []

    def deliver(self, *args: Any, **_kw: Any) -> list[RecipientResult]:
        if len(args) == 3:  # LocalDelivery.deliver(message, mail_from, recipients)
            message, _from, recipients = args
            self.local.append((message, list(recipients)))
            return [RecipientResult(r, Outcome.DELIVERED, Reply(250, "2.0.0", "ok")) for r in recipients]
        _hop, message, _from, rcpts = args
        addresses = [r.address for r in rcpts]
        self.relayed.append((message, addresses))
        outcome, reply = (Outcome.TRANSIENT, BUSY) if len(self.relayed) == 1 else \
            (Outcome.DELIVERED, Reply(250, "2.0.0", "ok"))
        return [RecipientResult(a, outcome, reply) for a in addresses]


@dataclass
class Wired:
    store: CountingStore
    mailboxes: SqlMailbox
    intake: Intake
    intake_queue: MemoryPublisher
    outbound_queue: MemoryPublisher
    hands: Hands
    mail: MailPipeline
    outbound: OutboundPipeline


@pytest.fixture
def wired(blob_store: MinioBlobStore, index: SqlIndex) -> Wired:
    store, mailboxes = CountingStore(blob_store), SqlMailbox.beside(index)
    rules = MssRules(local_domains=("clinique.hub.test",), org_mailboxes=(ORG,))
    intake_queue, outbound_queue, hands = MemoryPublisher(), MemoryPublisher(), Hands()
    intake, claims = Intake(store=store, index=index, publisher=intake_queue), ClaimCheck(store=store, index=index)
    reports = ReportSender(claims, intake_queue, hostname="hub.test", domain="hub.test")
    mail = MailPipeline(MailPorts(store=store, index=index, mailboxes=mailboxes, claims=claims,
                                  submissions=intake_queue, outbound=outbound_queue, rules=rules, reports=reports))
    outbound = OutboundPipeline(OutboundPorts(
        store=store, mailboxes=mailboxes, outbound=outbound_queue, rules=rules, reports=reports, relay=hands,
        next_hops={"*": NextHop("mx.ailleurs.test")}, local=hands, schedule=RelaySchedule(initial_s=60.0)))
    return Wired(store, mailboxes, intake, intake_queue, outbound_queue, hands, mail, outbound)


def accept(w: Wired, message: bytes, recipients: Sequence[str]) -> Envelope:
    smtp = SmtpEnvelope(mail_from=CLINIC, recipients=tuple(SmtpRecipient(r) for r in recipients), auth="clinic")
    w.intake.accept(pack(smtp, message), Source(kind="smtp", producer="clinic"), content_type=MAIL_CONTENT_TYPE,
                  kind="mail")
    return envelopes(w.intake_queue)[-1]


def test_the_message_is_written_once_for_a_patient_an_organisation_and_another_domain(wired: Wired) -> None:
    # Given a mail to a patient (its XDM carries a CDA), an organisation's mailbox here and another domain
    cda = fixture_cda("BIO-CR-BIO_2024.01_TSH_1.xml")
    message = make_mail_with_xdm([cda], to=[PATIENT_ADDRESS, ORG, REMOTE], from_=CLINIC)
    envelope = accept(wired, message, [PATIENT_ADDRESS, ORG, REMOTE])

    # When the mail pipeline runs, then the outbound pipeline (the other domain is busy once), then its retry
    wired.mail(envelope)
    [onward] = envelopes(wired.outbound_queue)
    wired.outbound(onward)
    retry = envelopes(wired.outbound_queue)[-1]
    assert retry is not onward and retry.attempt == 1
    wired.outbound(retry)

    # Then the message's bytes were PUT once, by intake, however many copies and attempts there were
    assert wired.store.holding(message) == ["mail"]
    # And the CDA is one object of its own (filed through the claim check), the retry a small ticket without the message
    assert wired.store.holding(cda).count("cda") == 1
    assert [k for k, _ in wired.store.puts] == ["mail", "cda", "onward"]
    assert onward.raw == envelope.raw  # the organisational copy is the queued mail itself, not a repack
    # And every copy handed on is the message, byte for byte
    assert wired.hands.local == [(message, [ORG])]
    assert wired.hands.relayed == [(message, [REMOTE]), (message, [REMOTE])]
    states = {d.recipient: d.state for d in wired.mailboxes.deliveries(envelope.submission_id)}
    assert states == {PATIENT_ADDRESS: DeliveryState.DELIVERED, ORG: DeliveryState.DELIVERED,
                      REMOTE: DeliveryState.DELIVERED}


def test_the_mailbox_copy_refers_to_the_queued_mail_and_opens_to_the_exact_message(wired: Wired) -> None:
    # Given a mail filed in a patient's mailbox (a sealed store)
    message = make_mail_with_xdm([fixture_cda("BIO-CR-BIO_2024.01_TSH_1.xml")], from_=CLINIC)
    envelope = accept(wired, message, [PATIENT_ADDRESS])
    wired.mail(envelope)

    # When the mailbox row is read back
    [row] = wired.mailboxes.messages(PATIENT_ADDRESS.lower())

    # Then it points at the object intake stored, and opens to the message exactly (its own SHA-256 and size)
    assert (row.blob_bucket, row.blob_key) == (envelope.raw.bucket, envelope.raw.key)
    assert row.blob == envelope.raw
    assert row.message_in(wired.store.get(row.blob)) == message
    assert (row.sha256, row.size) == (hashlib.sha256(message).hexdigest(), len(message))
    assert "blob_offset" not in row.to_dict() and row.to_dict()["sha256"] == row.sha256
