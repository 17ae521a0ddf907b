"""The onward ticket a deferred mail leaves behind: the retry's SMTP envelope and the queued mail it points at."""

from __future__ import annotations

import pytest

from hub.envelope import BlobRef
from hub.errors import EnvelopeDecodeError
from hub.mailqueue import SmtpEnvelope, SmtpRecipient, pack
from pipelines.mail.core.onward import OnwardTicket, is_ticket

MAIL = BlobRef(bucket="b", key="mail/ab/abcd", sha256="c" * 64, size=1234)
SMTP = SmtpEnvelope(mail_from="dr@hop.mssante.fr", recipients=(SmtpRecipient("x@ailleurs.fr", notify=("DELAY",)),),
                    ret="HDRS", envid="e1", received_at="2026-12-03T10:00:00+00:00", extra={"warned": "1"})


def test_a_ticket_reads_back_as_written_and_holds_no_message() -> None:
    data = OnwardTicket(SMTP, MAIL).encode()
    assert is_ticket(data)
    assert OnwardTicket.decode(data) == OnwardTicket(SMTP, MAIL)
    assert len(data) < 600


def test_a_queued_mail_is_not_a_ticket() -> None:
    packed = pack(SMTP, b"Subject: x\r\n\r\nbody\r\n")
    assert not is_ticket(packed)
    with pytest.raises(EnvelopeDecodeError):
        OnwardTicket.decode(packed)


@pytest.mark.parametrize("body", [b"{", b"{}", b'{"smtp": {}, "mail": {}}', b"[]"])
def test_an_unreadable_ticket_is_a_decode_error(body: bytes) -> None:
    with pytest.raises(EnvelopeDecodeError):
        OnwardTicket.decode(b"MESHUB-ONWARD-TICKET/1\n" + body)
