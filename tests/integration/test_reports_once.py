"""Delivery reports are sent once, even when the hub dies between queueing one and recording the state.

The outbound pipeline runs for real against a scripted SMTP sink on loopback (the next hop of both the
original recipient and the sender), with a real intake (SeaweedFS objects, SQLite index) queueing the
reports; the queues are in-memory publishers (storage.memory.bus), so each test chooses when an envelope is
(re)delivered.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes

import pytest
import sqlalchemy as sa

from connectors.outbound.relay import SmtpRelay
from hub.envelope import Envelope, Source
from hub.events import Event
from hub.intake import ClaimCheck, new_submission_id
from hub.mailqueue import MAIL_CONTENT_TYPE, Reply, SmtpEnvelope, SmtpRecipient, pack
from hub.records import DeliveryState
from pipelines.mail.core.mss import MssRules
from pipelines.mail.core.relay_schedule import RelaySchedule
from pipelines.mail.core.reports import report_id
from pipelines.mail.outbound import OutboundPipeline, OutboundPorts
from pipelines.mail.reporting import ReportSender
from storage.memory.bus import MemoryPublisher
from storage.objects import MinioBlobStore
from storage.sql.index import SqlIndex
from storage.sql.mailbox import SqlMailbox
from tests.fixtures_memory import envelopes
from tests.smtp_sink import Running, Sink, start_sink

pytestmark = pytest.mark.integration

DOCTOR = "dr.martin@hopital.mssante.fr"
OTHER = "secretariat@clinique.mssante.fr"
MESSAGE = (b"From: dr.martin@hopital.mssante.fr\r\nTo: secretariat@clinique.mssante.fr\r\n"
           b"Subject: compte rendu\r\nMessage-ID: <1@hopital.mssante.fr>\r\n\r\nBonjour,\r\nfin\r\n")


class Killed(Exception):
    """Stands for the hub process being killed at that point (raised by a test double)."""


class DiesOnce(MemoryPublisher):
    """The in-memory publisher, except that its first publish "kills the hub" (nothing is kept then)."""

    def __init__(self) -> None:
        super().__init__()
        self._die = True

    def publish(self, event: Event, *, delay_s: float = 0.0) -> None:
        if self._die:
            self._die = False
            raise Killed("before the retry was scheduled")
        super().publish(event, delay_s=delay_s)


@pytest.fixture
def sink() -> Iterator[Running]:
    # The original recipient's server is busy on both attempts; anything else is accepted
    yield from start_sink(Sink(rcpt_script={OTHER: ["450 4.2.1 Mailbox busy"] * 2}))


def outbound(store: MinioBlobStore, index: SqlIndex, sink: Running, reports: ReportSender,
             retries: MemoryPublisher) -> OutboundPipeline:
    # The lifetime starts at the mail's queue time: two hours ago, so the first deferral warns
    return OutboundPipeline(OutboundPorts(
        store=store, mailboxes=SqlMailbox.beside(index), outbound=retries, rules=MssRules(), reports=reports,
        relay=SmtpRelay(helo_name="hub.test", timeout_s=5), next_hops={"*": sink.hop()},
        schedule=RelaySchedule(initial_s=60.0, delay_warning_s=3600.0)))


def queued_mail(store: MinioBlobStore) -> Envelope:
    received = datetime.now(UTC) - timedelta(hours=2)
    smtp = SmtpEnvelope(mail_from=DOCTOR, recipients=(SmtpRecipient(OTHER, notify=("DELAY", "FAILURE")),),
                        received_at=received.isoformat())
    ref = store.put(pack(smtp, MESSAGE), kind="mail", content_type=MAIL_CONTENT_TYPE)
    return Envelope(submission_id=new_submission_id(), received_at=received,
                    source=Source(kind="smtp", producer="test"), raw=ref, content_type=MAIL_CONTENT_TYPE)


def submissions_count(index: SqlIndex) -> int:
    with index.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM submissions")).scalar_one())


def test_delayed_dsn_is_sent_once_when_the_hub_dies_after_queueing_it(
        blob_store: MinioBlobStore, index: SqlIndex, sink: Running) -> None:
    # Given a mail whose next hop is busy, two hours after it was queued, for a sender who wants DELAY reports
    reports_queue = MemoryPublisher()
    reports = ReportSender(ClaimCheck(store=blob_store, index=index), reports_queue, hostname="hub.test",
                           domain="hub.test")
    retries = DiesOnce()
    pipeline = outbound(blob_store, index, sink, reports, retries)
    mail = queued_mail(blob_store)

    # When the first attempt is deferred, the "delayed" DSN queued, and the hub dies before scheduling the retry
    with pytest.raises(Killed):
        pipeline(mail)
    # And the bus delivers the same envelope again: deferred again, the DSN asked for again
    pipeline(mail)

    # Then the report is one submission, under the id derived from what it reports
    expected = report_id(mail.submission_id, "dsn:delayed", [OTHER])
    assert {e.submission_id for e in envelopes(reports_queue)} == {expected}
    assert index.submission(expected) is not None
    assert submissions_count(index) == 1
    assert len(retries.published) == 1  # one retry scheduled

    # When the report envelopes (the pending one was handed on again) go through the outbound pipeline
    for envelope in envelopes(reports_queue):
        pipeline(envelope)

    # Then exactly one DSN reached the sender's server, from the null sender, with a Message-ID from its id
    [dsn] = sink.sink.received
    assert (dsn.mail_from, dsn.rcpt_tos) == ("<>", [DOCTOR])
    parsed = message_from_bytes(dsn.content)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed["Message-ID"] == f"<{expected}@hub.test>"
    assert b"Action: delayed" in dsn.content
    assert [(d.recipient, d.state) for d in SqlMailbox.beside(index).deliveries(expected)] == [
        (DOCTOR, DeliveryState.DELIVERED)]


def test_a_report_already_final_is_not_queued_again(blob_store: MinioBlobStore, index: SqlIndex) -> None:
    # Given a "failed" DSN queued once and then processed (its submission is final)
    queue = MemoryPublisher()
    reports = ReportSender(ClaimCheck(store=blob_store, index=index), queue, hostname="hub.test",
                           domain="hub.test")
    smtp = SmtpEnvelope(mail_from=DOCTOR, recipients=(SmtpRecipient(OTHER),))
    failure = (SmtpRecipient(OTHER), Reply(550, "5.1.1", "No such user"), "mx.clinique.mssante.fr")
    about = new_submission_id()
    reports.failed(smtp, MESSAGE, [failure], about=about)
    [first] = envelopes(queue)
    index.complete(first)

    # When the same report is asked for again (the mail was redelivered after a crash)
    reports.failed(smtp, MESSAGE, [failure], about=about)

    # Then nothing is queued: one submission, one envelope ever published
    assert envelopes(queue) == [first] and submissions_count(index) == 1
    # While a report about another mail, or another event, is a report of its own
    reports.failed(smtp, MESSAGE, [failure], about=new_submission_id())
    reports.delayed(smtp, MESSAGE, [failure], about=about)
    assert len({e.submission_id for e in envelopes(queue)}) == 3
