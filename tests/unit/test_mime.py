"""parse_mail(), find_xdm(), find_pdfs(): real MSSanté-shaped mails, broken MIME, hostile headers."""

from __future__ import annotations

import time
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.findings import Severity
from pipelines.mail.core.mime import MailLimits, MailReport, ParsedMail, find_pdfs, find_xdm, parse_mail
from pipelines.mail.core.xdm import read_xdm
from tests.mail_builders import PATIENT_ADDRESS, fixture_cda, make_mail_with_xdm

CDA = "BIO-CR-BIO_2024.01_TSH_1.xml"


def rules_of(report: MailReport) -> list[str]:
    return [f.rule for f in report.findings]


def parsed(raw: bytes) -> ParsedMail:
    report = parse_mail(raw)
    assert report.mail is not None, report.findings
    return report.mail


@pytest.fixture(scope="module")
def mail_bytes() -> bytes:
    return make_mail_with_xdm(
        [fixture_cda(CDA)], to=[PATIENT_ADDRESS, "secretariat@hopital.mssante.fr"],
        from_="Dr Test <dr.test@hopital.mssante.fr>", subject="XDM/1.0/DDM+CR de biologie TEST Jeanne 01/03/1979",
        pdf=b"%PDF-1.4 test",
        headers={"X-MSS-MES": "FIN", "x-mss-codecda": "11502-2",
                 "Disposition-Notification-To": "Dr <dr.test@hopital.mssante.fr>",
                 "In-Reply-To": "<first@hopital.mssante.fr>", "References": "<a@x.fr> <first@hopital.mssante.fr>",
                 "Cc": "copie@hopital.mssante.fr", "Original-Recipient": "rfc822;279035121518989@patient.mssante.fr"})


def test_a_mssante_mail_is_read_with_its_xdm(mail_bytes: bytes) -> None:
    report = parse_mail(mail_bytes)
    assert report.ok and report.findings == ()
    mail = report.mail
    assert mail is not None
    assert mail.from_addr == "dr.test@hopital.mssante.fr"
    assert mail.to_addrs == (PATIENT_ADDRESS, "secretariat@hopital.mssante.fr")
    assert mail.cc_addrs == ("copie@hopital.mssante.fr",)
    assert mail.subject == "XDM/1.0/DDM+CR de biologie TEST Jeanne 01/03/1979"
    assert mail.message_id == "<test-1@hopital.mssante.fr>"
    assert mail.in_reply_to == "<first@hopital.mssante.fr>"
    assert mail.references == ("<a@x.fr>", "<first@hopital.mssante.fr>")
    assert mail.disposition_notification_to == "dr.test@hopital.mssante.fr"
    assert mail.original_recipient == "rfc822;279035121518989@patient.mssante.fr"
    assert mail.mss == {"X-MSS-MES": "FIN", "X-MSS-CODECDA": "11502-2"}
    assert mail.text_body.startswith("Bonjour")
    assert mail.content_type == "multipart/mixed"
    assert [a.filename for a in mail.attachments] == ["IHE_XDM.ZIP", "document.pdf"]

    xdm = find_xdm(mail)
    assert xdm is not None and xdm.content_type == "application/zip"
    assert read_xdm(xdm.data).documents[0].data == fixture_cda(CDA)
    assert [p.data for p in find_pdfs(mail)] == [b"%PDF-1.4 test"]


@pytest.mark.parametrize("filename", ["ihe_xdm.zip", "IHE_XDM.zip", "dossier/IHE_XDM.ZIP", "C:\\tmp\\IHE_XDM.ZIP"])
def test_xdm_is_found_whatever_the_case_or_folder(filename: str) -> None:
    msg = _message()
    msg.add_attachment(b"PK\x05\x06" + bytes(18), maintype="application", subtype="octet-stream", filename=filename)
    mail = parsed(msg.as_bytes())
    found = find_xdm(mail)
    assert found is not None and found.filename == filename


def test_no_xdm_gives_none() -> None:
    msg = _message()
    msg.add_attachment(b"x", maintype="application", subtype="zip", filename="other.zip")
    assert find_xdm(parsed(msg.as_bytes())) is None


def test_hops_are_the_received_headers() -> None:
    raw = b"Received: from a\r\nReceived: from b\r\nreceived: from c\r\nFrom: x@y.fr\r\n\r\nhi\r\n"
    assert parsed(raw).hop_count == 3


def test_html_body_is_kept_apart() -> None:
    msg = _message()
    msg.add_alternative("<p>Bonjour</p>", subtype="html")
    mail = parsed(msg.as_bytes())
    assert (mail.text_body.strip(), mail.html_body.strip()) == ("Bonjour", "<p>Bonjour</p>")
    assert mail.attachments == ()


# -- bad input is data ------------------------------------------------------------------------------


def test_mail_without_from_is_an_error_but_still_read() -> None:
    report = parse_mail(b"To: a@b.fr\r\nSubject: x\r\n\r\nbody\r\n")
    assert rules_of(report) == ["mime.no-from"]
    assert not report.ok and report.mail is not None and report.mail.text_body == "body\n"


def test_unusable_from_counts_as_no_from() -> None:
    report = parse_mail(b"From: <<>>@@, \"x\r\nSubject: x\r\n\r\nbody\r\n")
    assert "mime.no-from" in rules_of(report)


def test_multipart_without_boundary_is_malformed() -> None:
    report = parse_mail(b"From: a@b.fr\r\nContent-Type: multipart/mixed\r\n\r\n--x\r\n\r\nhi\r\n--x--\r\n")
    assert "mime.malformed" in rules_of(report)
    assert not report.ok


def test_undecodable_base64_is_reported_on_its_part() -> None:
    raw = (b"From: a@b.fr\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
           b"Content-Type: text/plain\r\n\r\nhello\r\n--zz\r\nContent-Type: application/zip; name=IHE_XDM.ZIP\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nUEsDB!!!Ag=\r\n--zz--\r\n")
    report = parse_mail(raw)
    assert [(f.rule, f.location, f.severity) for f in report.findings] == [
        ("mime.bad-encoding", "/2", Severity.ERROR)]


def test_too_many_parts_stops_the_walk() -> None:
    msg = _message()
    for i in range(10):
        msg.add_attachment(b"x", maintype="application", subtype="octet-stream", filename=f"f{i}.bin")
    report = parse_mail(msg.as_bytes(), limits=MailLimits(max_parts=5))
    assert "mime.too-many-parts" in rules_of(report)
    assert report.mail is not None and len(report.mail.attachments) < 5


def test_deep_nesting_is_refused_before_the_parser_recurses() -> None:
    # Given 2000 nested multiparts (the stdlib parser would hit the recursion limit)
    raw = _nested(2000)
    started = time.perf_counter()
    report = parse_mail(raw)
    assert time.perf_counter() - started < 0.5
    assert rules_of(report) == ["mime.too-many-parts"] and report.mail is None


def test_nesting_beyond_the_depth_cap_is_reported() -> None:
    report = parse_mail(_nested(10), limits=MailLimits(max_depth=4))
    assert "mime.too-deep" in rules_of(report)
    assert report.mail is not None and report.mail.text_body == ""


def test_oversized_mail_is_refused_unparsed() -> None:
    report = parse_mail(b"From: a@b.fr\r\n\r\n" + b"x" * 2000, limits=MailLimits(max_bytes=1000))
    assert rules_of(report) == ["mime.too-large"] and report.mail is None


def test_header_that_breaks_the_stdlib_parser_is_a_warning() -> None:
    # Given a Message-ID that makes email.headerregistry raise IndexError
    report = parse_mail(b"From: a@b.fr\r\nMessage-ID: <<a\r\nSubject: x\r\n\r\nbody\r\n")
    assert [(f.rule, f.location, f.severity) for f in report.findings] == [
        ("mime.bad-header", "/header/Message-ID", Severity.WARNING)]
    assert report.ok and report.mail is not None and report.mail.message_id == ""


def test_unknown_charset_is_read_as_utf8() -> None:
    report = parse_mail(b"From: a@b.fr\r\nContent-Type: text/plain; charset=x-nope\r\n\r\nbonjour\r\n")
    assert rules_of(report) == ["mime.charset"]
    assert report.mail is not None and report.mail.text_body.startswith("bonjour")


def test_findings_never_echo_header_values() -> None:
    raw = b"From: DUPONT Jeanne <<<\r\nSubject: =?utf-8?b?zz?= DUPONT\r\nMessage-ID: <<DUPONT\r\n\r\nx\r\n"
    for finding in parse_mail(raw).findings:
        assert "DUPONT" not in finding.message_fr + finding.message_en + finding.location


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(raw: bytes) -> None:
    assert isinstance(parse_mail(raw), MailReport)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_mails_never_raise(data: st.DataObject) -> None:
    raw = bytearray(_SMALL_MAIL)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.sampled_from(b"<>@\":;,=\r\n\\()[]-\x00\xff "))
    assert isinstance(parse_mail(bytes(raw)), MailReport)


# -- helpers ----------------------------------------------------------------------------------------


def _message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "dr.test@hopital.mssante.fr"
    msg["To"] = PATIENT_ADDRESS
    msg["Subject"] = "test"
    msg.set_content("Bonjour")
    return msg


def _nested(depth: int) -> bytes:
    head, tail = b"", b""
    for i in range(depth):
        head += b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
        tail = b"\r\n--b%d--\r\n" % (i + 1) + tail
    leaf = b"--b%d\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b%d--\r\n" % (depth, depth)
    return b"From: a@b.fr\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n" + head + leaf + tail + b"--b0--\r\n"


def _small_mail() -> bytes:
    msg = _message()
    msg["Cc"] = "Name <c@d.fr>"
    msg["Message-ID"] = "<m@x.fr>"
    msg["X-MSS-MES"] = "FIN"
    msg.add_attachment(b"PK\x05\x06" + bytes(18), maintype="application", subtype="zip", filename="IHE_XDM.ZIP")
    return msg.as_bytes()


_SMALL_MAIL = _small_mail()
