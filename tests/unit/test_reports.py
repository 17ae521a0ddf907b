"""build_dsn(), build_mdn(), build_message(): parsed back with the stdlib, as a receiving client would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser

import pytest

from hub.delivery import RecipientResult
from hub.mailqueue import Reply, SmtpEnvelope, SmtpRecipient
from pipelines.mail.core.mdn import MdnDisposition, ReturnContent, build_mdn
from pipelines.mail.core.mime import Attachment, ParsedMail, find_xdm, parse_mail
from pipelines.mail.core.reports import (
    DsnAction,
    DsnRecipient,
    build_dsn,
    build_message,
    dsn_recipients,
    reply_threading,
    report_id,
)
from pipelines.mail.core.xdm import read_xdm
from tests.mail_builders import PATIENT_ADDRESS, fixture_cda, make_mail_with_xdm

NOW = datetime(2024, 1, 5, 13, 0, tzinfo=UTC)
DOCTOR = "dr.test@hopital.mssante.fr"
CDA = "VAC-NOTE_2023.01.xml"


@pytest.fixture(scope="module")
def original() -> bytes:
    return make_mail_with_xdm([fixture_cda(CDA)], from_=DOCTOR, subject="XDM/1.0/DDM+Note de vaccination",
                              headers={"Disposition-Notification-To": DOCTOR})


def envelope(*, ret: str = "", envid: str = "", notify: tuple[str, ...] = (), mail_from: str = DOCTOR) -> SmtpEnvelope:
    return SmtpEnvelope(mail_from=mail_from, ret=ret, envid=envid, received_at="2024-01-05T12:00:00+00:00",
                        recipients=(SmtpRecipient(PATIENT_ADDRESS, notify, f"rfc822;{PATIENT_ADDRESS}"),))


def failed(env: SmtpEnvelope, text: str = "5.1.1 Adresse patient inconnue / Unknown patient address"
           ) -> tuple[DsnRecipient, ...]:
    return dsn_recipients(env, [RecipientResult.from_reply(PATIENT_ADDRESS, 550, text)], last_attempt=NOW)


def dsn(env: SmtpEnvelope, recipients: tuple[DsnRecipient, ...], original: bytes) -> bytes | None:
    return build_dsn(env, recipients, original=original, hub_host="mx.hub.example", hub_domain="hub.example",
                     now=NOW)


def parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def report_blocks(message: EmailMessage, content_type: str) -> list[Message]:
    part = next(p for p in message.walk() if p.get_content_type() == content_type)
    payload = part.get_payload()
    assert isinstance(payload, list)
    return [block for block in payload if isinstance(block, Message)]


# -- DSN ---------------------------------------------------------------------------------------------


def test_bounce_for_an_unknown_patient_reads_back_as_a_failure(original: bytes) -> None:
    # Given a mail to an unknown INS, refused with 550 5.1.1
    env = envelope(envid="ENV-42")
    raw = dsn(env, failed(env), original)
    assert raw is not None

    # When the sender's client reads the bounce
    message = parse(raw)

    # Then it is a delivery-status report from the mailer daemon, to the envelope sender
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert (message["From"], message["To"]) == ("MAILER-DAEMON@hub.example", DOCTOR)
    assert message["Auto-Submitted"] == "auto-replied"
    per_message, per_recipient = report_blocks(message, "message/delivery-status")
    assert per_message["Reporting-MTA"] == "dns; mx.hub.example"
    assert per_message["Original-Envelope-Id"] == "ENV-42"
    assert per_message["Arrival-Date"] == "Fri, 05 Jan 2024 12:00:00 +0000"
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "5.1.1"
    assert per_recipient["Final-Recipient"] == f"rfc822;{PATIENT_ADDRESS}"
    assert per_recipient["Original-Recipient"] == f"rfc822;{PATIENT_ADDRESS}"
    assert per_recipient["Diagnostic-Code"].startswith("smtp; 550 5.1.1 Adresse patient inconnue")
    assert per_recipient["Last-Attempt-Date"] == "Fri, 05 Jan 2024 13:00:00 +0000"
    text = message.get_body(("plain",))
    assert text is not None
    assert "n'a pas pu être remis" in text.get_content() and "could not be delivered" in text.get_content()


def test_dsn_lines_end_with_crlf(original: bytes) -> None:
    raw = dsn(envelope(), failed(envelope()), original)
    assert raw is not None and b"\n" not in raw.replace(b"\r\n", b"")


def test_no_bounce_to_a_null_sender(original: bytes) -> None:
    for null in ("", "<>"):
        env = envelope(mail_from=null)
        assert dsn(env, failed(env), original) is None


def test_notify_never_means_no_dsn(original: bytes) -> None:
    env = envelope(notify=("NEVER",))
    assert dsn(env, failed(env), original) is None


def test_success_is_reported_only_when_asked(original: bytes) -> None:
    delivered = [RecipientResult.from_reply(PATIENT_ADDRESS, 250, "2.0.0 OK", remote_host="imap.hub.example")]
    assert dsn(envelope(), dsn_recipients(envelope(), delivered), original) is None  # default NOTIFY=FAILURE
    env = envelope(notify=("SUCCESS",))
    raw = dsn(env, dsn_recipients(env, delivered), original)
    assert raw is not None
    (_, per_recipient) = report_blocks(parse(raw), "message/delivery-status")
    assert (per_recipient["Action"], per_recipient["Status"]) == ("delivered", "2.0.0")
    assert per_recipient["Remote-MTA"] == "dns; imap.hub.example"


def test_delay_says_until_when_it_retries(original: bytes) -> None:
    env = envelope()
    delayed = DsnRecipient(recipient=env.recipients[0], action=DsnAction.DELAYED,
                           reply=Reply(451, "4.4.1", "no answer"), will_retry_until=NOW + timedelta(days=5))
    raw = dsn(env, (delayed,), original)
    assert raw is not None
    message = parse(raw)
    assert "Delayed" in message["Subject"]
    (_, per_recipient) = report_blocks(message, "message/delivery-status")
    assert per_recipient["Action"] == "delayed"
    assert per_recipient["Will-Retry-Until"] == "Wed, 10 Jan 2024 13:00:00 +0000"


@pytest.mark.parametrize(("ret", "returned"), [("HDRS", "text/rfc822-headers"), ("", "text/rfc822-headers"),
                                               ("FULL", "message/rfc822")])
def test_ret_decides_what_comes_back(ret: str, returned: str, original: bytes) -> None:
    env = envelope(ret=ret)
    raw = dsn(env, failed(env), original)
    assert raw is not None
    parts = [p.get_content_type() for p in parse(raw).iter_parts()]
    assert parts == ["text/plain", "message/delivery-status", returned]
    if returned == "message/rfc822":  # the full original, documents included
        inner = parse_mail(raw).mail
        assert inner is not None
        assert b"XDM/1.0/DDM+Note de vaccination" in raw
        assert any(a.content_type == "message/rfc822" for a in inner.attachments)
    else:
        assert b"Subject: XDM/1.0/DDM+Note de vaccination" in raw
        assert b"IHE_XDM.ZIP" not in raw.split(b"text/rfc822-headers", 1)[1].split(b"\r\n\r\n", 2)[1]


def test_envelope_values_cannot_inject_headers(original: bytes) -> None:
    env = envelope(envid="X\r\nBcc: victim@evil.example")
    raw = dsn(env, failed(env, text="5.1.1 x\r\nBcc: victim@evil.example"), original)
    assert raw is not None
    assert b"\r\nBcc:" not in raw
    assert parse(raw)["Bcc"] is None


# -- MDN ---------------------------------------------------------------------------------------------


def mail_of(raw: bytes) -> ParsedMail:
    mail = parse_mail(raw).mail
    assert mail is not None
    return mail


def test_processed_mdn_has_the_mssante_fields(original: bytes) -> None:
    raw = build_mdn(mail_of(original), final_recipient=PATIENT_ADDRESS, disposition=MdnDisposition.PROCESSED,
                    reporting_ua="hub.example; MES Hub", now=NOW, original_recipient=f"rfc822;{PATIENT_ADDRESS}",
                    original_bytes=original)
    assert raw is not None
    message = parse(raw)
    assert message.get_param("report-type") == "disposition-notification"
    assert (message["From"], message["To"]) == (PATIENT_ADDRESS, DOCTOR)
    assert message["Subject"] == "XDM/1.0/DDM+Note de vaccination"
    (fields,) = report_blocks(message, "message/disposition-notification")
    assert fields["Disposition"] == "automatic-action/MDN-sent-automatically; processed"
    assert fields["Final-Recipient"] == f"rfc822;{PATIENT_ADDRESS}"
    assert fields["Original-Recipient"] == f"rfc822;{PATIENT_ADDRESS}"
    assert fields["Original-Message-ID"] == "<test-1@hopital.mssante.fr>"
    assert fields["Reporting-UA"] == "hub.example; MES Hub"
    assert [p.get_content_type() for p in message.iter_parts()][-1] == "message/rfc822"


def test_read_receipt_is_a_manual_display(original: bytes) -> None:
    raw = build_mdn(mail_of(original), final_recipient=PATIENT_ADDRESS, disposition=MdnDisposition.DISPLAYED,
                    reporting_ua="hub.example; MES Hub", now=NOW)
    assert raw is not None
    message = parse(raw)
    (fields,) = report_blocks(message, "message/disposition-notification")
    assert fields["Disposition"] == "manual-action/MDN-sent-manually; displayed"
    assert message["Auto-Submitted"] is None


def test_error_mdn_uses_the_mssante_subject_and_disposition(original: bytes) -> None:
    mail = mail_of(original)
    xdm = find_xdm(mail)
    assert xdm is not None
    raw = build_mdn(mail, final_recipient=PATIENT_ADDRESS, disposition=MdnDisposition.ERROR,
                    reporting_ua="hub.example; MES Hub", now=NOW, error="902^Identifiant de patient inconnu",
                    original_bytes=original, return_content=ReturnContent.HEADERS, reattach=[xdm])
    assert raw is not None
    message = parse(raw)
    assert message["Subject"] == "[KO Intégration système !][902] XDM/1.0/DDM+Note de vaccination"
    (fields,) = report_blocks(message, "message/disposition-notification")
    assert fields["Disposition"] == ("automatic-action/MDN-sent-automatically; "
                                     "processed/Error: 902^Identifiant de patient inconnu")
    assert fields["Error"] == "902^Identifiant de patient inconnu"
    body = message.get_body(("plain",))
    assert body is not None and "902^Identifiant de patient inconnu" in body.get_content()
    # the IHE_XDM.ZIP comes back as an attachment, still readable
    back = find_xdm(mail_of(raw))
    assert back is not None and read_xdm(back.data).documents[0].data == fixture_cda(CDA)


def test_no_mdn_unless_asked_and_never_about_a_report(original: bytes) -> None:
    unasked = make_mail_with_xdm([fixture_cda(CDA)])
    assert build_mdn(mail_of(unasked), final_recipient=PATIENT_ADDRESS, disposition=MdnDisposition.PROCESSED,
                     reporting_ua="ua", now=NOW) is None
    mdn = build_mdn(mail_of(original), final_recipient=PATIENT_ADDRESS, disposition=MdnDisposition.PROCESSED,
                    reporting_ua="ua", now=NOW)
    assert mdn is not None
    looped = mdn.replace(b"MIME-Version", b"Disposition-Notification-To: " + PATIENT_ADDRESS.encode()
                         + b"\r\nMIME-Version", 1)
    assert build_mdn(mail_of(looped), final_recipient=DOCTOR, disposition=MdnDisposition.PROCESSED,
                     reporting_ua="ua", now=NOW) is None


# -- new messages ------------------------------------------------------------------------------------


def test_patient_reply_threads_and_round_trips(original: bytes) -> None:
    # Given the patient answers the doctor's mail with a PDF
    first = mail_of(original)
    in_reply_to, references = reply_threading(first)
    raw = build_message(from_addr=PATIENT_ADDRESS, to_addrs=[DOCTOR], subject="Re: ma vaccination",
                        text="Merci docteur.\n", now=NOW, in_reply_to=in_reply_to, references=references,
                        mss_headers={"x-mss-ins": "O"}, disposition_notification_to=PATIENT_ADDRESS,
                        attachments=[Attachment("ordonnance.pdf", "application/pdf", b"%PDF-1.4 ordonnance")])

    # Then the doctor's client sees a threaded reply with the attachment intact
    mail = mail_of(raw)
    assert (mail.from_addr, mail.to_addrs, mail.subject) == (PATIENT_ADDRESS, (DOCTOR,), "Re: ma vaccination")
    assert mail.in_reply_to == "<test-1@hopital.mssante.fr>"
    assert mail.references == ("<test-1@hopital.mssante.fr>",)
    assert mail.mss == {"X-MSS-INS": "O"}
    assert mail.disposition_notification_to == PATIENT_ADDRESS
    assert mail.text_body == "Merci docteur.\n"
    assert [(a.filename, a.data) for a in mail.attachments] == [("ordonnance.pdf", b"%PDF-1.4 ordonnance")]
    assert mail.message_id.endswith("@patient.mssante.fr>")
    assert parse(raw)["Date"] == "Fri, 05 Jan 2024 13:00:00 +0000"
    assert b"\n" not in raw.replace(b"\r\n", b"")


def test_only_x_mss_headers_may_be_added() -> None:
    with pytest.raises(ValueError, match="X-MSS"):
        build_message(from_addr=PATIENT_ADDRESS, to_addrs=[DOCTOR], subject="s", text="t", now=NOW,
                      mss_headers={"Bcc": "x@y.fr"})


def test_subject_cannot_inject_headers() -> None:
    raw = build_message(from_addr=PATIENT_ADDRESS, to_addrs=[DOCTOR], subject="Bonjour\r\nBcc: x@evil.example",
                        text="t", now=NOW, message_id="<fixed@patient.mssante.fr>")
    message = parse(raw)
    assert message["Bcc"] is None and message["Message-ID"] == "<fixed@patient.mssante.fr>"


# -- report_id ---------------------------------------------------------------------------------------


def test_report_id_is_a_submission_id_derived_from_what_it_reports() -> None:
    about = "018f2a3b4c5d" + "0" * 20
    one = report_id(about, "dsn:failed", ["A@clinique.fr", "b@clinique.fr"])
    # Same shape as hub.intake.new_submission_id(), sorting beside the mail it reports on
    assert len(one) == 32 and all(c in "0123456789abcdef" for c in one) and one[:12] == about[:12]
    # The same report always gets the same id (recipient order and case do not matter)
    assert one == report_id(about, "dsn:failed", ["b@clinique.fr", "a@clinique.fr"])
    # Another mail, event or recipient set is another report
    others = {report_id("018f2a3b4c5d" + "1" * 20, "dsn:failed", ["a@clinique.fr", "b@clinique.fr"]),
              report_id(about, "dsn:delayed", ["a@clinique.fr", "b@clinique.fr"]),
              report_id(about, "dsn:failed", ["a@clinique.fr"])}
    assert one not in others and len(others) == 3
    # An `about` without a time part still gives the shape
    odd = report_id("not-an-id", "mdn:displayed")
    assert len(odd) == 32 and all(c in "0123456789abcdef" for c in odd)
