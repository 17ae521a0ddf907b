"""Mail filings and their integration-report claim, run against memory, SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from hub.ports import Mailboxes
from hub.records import FiledDocument, MailFiling
from storage.memory.index import MemoryIndex
from storage.memory.mailbox import MemoryMailbox
from storage.sql.index import SqlIndex
from storage.sql.mailbox import SqlMailbox
from tests import builders
from tests.contract.conftest import beside

pytestmark = pytest.mark.integration
MAILBOX = f"{builders.TEST_INS}@patient.mssante.fr"


@pytest.fixture
def mailbox(index: MemoryIndex | SqlIndex) -> Iterator[Mailboxes]:
    yield beside(index, MemoryMailbox, SqlMailbox)


def filing(message_id: str = "mail-1-0") -> MailFiling:
    return MailFiling(message_id=message_id, mail_submission_id="mail-1", mailbox=MAILBOX,
                      received_at=datetime.now(UTC),
                      documents=(FiledDocument("doc-a", "SUBSET01#Document01"),
                                 FiledDocument("doc-b", "SUBSET01#Document02")),
                      findings=({"rule": "mss.xdm.other-patient", "location": "SUBSET01#Document03"},))


def test_a_filing_is_recorded_once_and_found_from_each_of_its_documents(mailbox: Mailboxes) -> None:
    # Given a filing recorded twice (a redelivered mail), the second time with other contents
    mailbox.record_filing(filing())
    mailbox.record_filing(MailFiling(message_id="mail-1-0", mail_submission_id="other", mailbox=MAILBOX,
                                     received_at=datetime.now(UTC), documents=(FiledDocument("doc-c", "x"),)))
    # Then the first one stays, in order, and each of its documents leads to it
    kept = mailbox.filing("mail-1-0")
    assert kept is not None and kept.mail_submission_id == "mail-1"
    assert [d.entry for d in kept.documents] == ["SUBSET01#Document01", "SUBSET01#Document02"]
    assert kept.findings[0]["rule"] == "mss.xdm.other-patient"
    found = mailbox.filing_of("doc-b")
    assert found is not None and found.message_id == "mail-1-0"
    assert mailbox.filing_of("unknown") is None and mailbox.filing("unknown") is None


def test_the_report_is_claimed_once_and_again_by_the_same_claimant(mailbox: Mailboxes) -> None:
    mailbox.record_filing(filing())
    assert mailbox.claim_report("mail-1-0", by="doc-b") is True
    assert mailbox.claim_report("mail-1-0", by="doc-a") is False
    assert mailbox.claim_report("mail-1-0", by="doc-b") is True  # a redelivery of the winner's envelope
    assert mailbox.claim_report("no-such-filing", by="doc-a") is False


def test_two_workers_finishing_the_last_documents_together_get_one_claim(mailbox: Mailboxes) -> None:
    # Given many filings, each claimed by two threads released at the same moment
    for n in range(20):
        mailbox.record_filing(filing(f"mail-{n}"))
    wins: list[tuple[int, str]] = []
    lock = threading.Lock()

    def claim(n: int, by: str, start: threading.Barrier) -> None:
        start.wait()
        if mailbox.claim_report(f"mail-{n}", by=by):
            with lock:
                wins.append((n, by))

    for n in range(20):
        start = threading.Barrier(2)
        threads = [threading.Thread(target=claim, args=(n, by, start)) for by in ("doc-a", "doc-b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    # Then every filing has exactly one winner
    assert sorted(n for n, _ in wins) == list(range(20))
