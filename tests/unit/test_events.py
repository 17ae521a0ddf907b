"""Bus events: each kind round-trips through its dict, decoding fails only as EnvelopeDecodeError, every
event has a queue and a step, and the previous release's envelopes are still read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from hub.envelope import BlobRef, Envelope, Source
from hub.errors import EnvelopeDecodeError, PermanentError
from hub.events import (
    DeliveryRequested,
    DocumentFiled,
    DocumentRejected,
    DocumentSubmitted,
    Event,
    MailQueued,
    NoticeDue,
    decode,
)
from hub.events.base import REGISTRY
from hub.intake import resubmitted
from hub.mailqueue import MAIL_CONTENT_TYPE
from hub.records import SubmissionRecord
from hub.topology import EVENT_QUEUES, queue_of, topologies
from pipelines.definitions import Dispatch, Steps, on, queues, routes

AT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
ENVELOPE = Envelope(submission_id="s1", received_at=AT, source=Source("http", "lab-1"),
                    raw=BlobRef("raw", "cda/ab/abcd", "0" * 64, 12), confidentiality=("MASQUE_PS",))
EVENTS: list[Event] = [DocumentSubmitted(ENVELOPE), MailQueued(ENVELOPE), DeliveryRequested(ENVELOPE),
                       NoticeDue("n1", AT, "email"), DocumentFiled("s1", "mss"), DocumentRejected("s2", "http")]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.kind)
def test_each_event_round_trips_with_its_attempt(event: Event) -> None:
    again = event.next_attempt()
    assert decode(again.to_dict()) == again and decode(again.to_dict()).attempt == 1
    assert decode(event.to_dict()) == event and event.to_dict()["kind"] == event.kind


def test_every_registered_event_has_a_queue() -> None:
    assert set(REGISTRY.values()) == set(EVENT_QUEUES)
    assert set(topologies("meshub")) == set(EVENT_QUEUES.values())
    assert topologies("meshub")["intake"].main_queue == "meshub.intake"  # names kept across the release


@pytest.mark.parametrize("data", [
    {"kind": "no.such", "version": 1, "data": {}},
    {"kind": "notice.due", "version": 2, "data": {"notice": "n", "at": AT.isoformat(), "channel": "sms"}},
    {"kind": "notice.due", "version": 1, "data": {"notice": "n", "at": "yesterday", "channel": "sms"}},
    {"kind": "document.submitted", "version": 1, "data": []},
    {"kind": "document.submitted", "version": "x", "data": {}},
    {"v": 1, "id": "s"},
])
def test_bad_events_fail_as_decode_errors_only(data: dict[str, Any]) -> None:
    with pytest.raises(EnvelopeDecodeError):
        decode(data)


def test_the_previous_release_envelopes_are_read_as_their_events() -> None:
    legacy = ENVELOPE.to_dict()
    assert decode(legacy) == DocumentSubmitted(ENVELOPE)
    mail = Envelope(submission_id="m1", received_at=AT, source=Source("smtp", "x"), raw=ENVELOPE.raw,
                    content_type=MAIL_CONTENT_TYPE)
    assert decode(mail.to_dict()) == MailQueued(mail)
    notice = {**ENVELOPE.to_dict(), "id": "n9", "ct": "application/x-meshub-notice",
              "source": {"kind": "notice", "producer": "sms"}, "attempt": 2}
    assert decode(notice) == NoticeDue("n9", AT, "sms", tries=2)


def test_the_sweep_republishes_by_record_kind() -> None:
    def record(key: str, source: str) -> SubmissionRecord:
        return SubmissionRecord(submission_id="s", received_at=AT, producer="p", source_kind=source, blob_key=key)

    assert type(resubmitted(record("mail/ab/abcd", "imap"), bucket="raw")) is MailQueued
    assert type(resubmitted(record("mail/ab/abcd", "dsn"), bucket="raw")) is MailQueued
    assert type(resubmitted(record("cda/ab/abcd", "mss"), bucket="raw")) is DocumentSubmitted


def test_the_table_dispatches_each_event_to_its_step_and_refuses_others() -> None:
    seen: list[str] = []
    table = routes(Steps(documents=lambda e: seen.append("doc " + e.submission_id),
                         mail=lambda e: seen.append("mail " + e.submission_id),
                         outbound=lambda e: seen.append("out " + e.submission_id),
                         notices=lambda e: seen.append("notice " + e.notice_id),
                         filed=lambda e: seen.append("filed " + e.document_id),
                         rejected=lambda e: seen.append("rejected " + e.submission_id)))
    assert queues(table) == ("intake", "outbound", "notify", "outcomes")
    intake = Dispatch(table, queue="intake")
    intake(DocumentSubmitted(ENVELOPE))
    intake(MailQueued(ENVELOPE))
    Dispatch(table, queue="notify")(NoticeDue("n1", AT, "email"))
    outcomes = Dispatch(table, queue="outcomes")
    outcomes(DocumentFiled("s1", "http", document_id="d1"))
    outcomes(DocumentRejected("s2", "mss"))
    assert seen == ["doc s1", "mail s1", "notice n1", "filed d1", "rejected s2"]
    with pytest.raises(PermanentError):
        intake(NoticeDue("n1", AT, "email"))
    assert on(NoticeDue, print).queue == queue_of(NoticeDue) == "notify"
