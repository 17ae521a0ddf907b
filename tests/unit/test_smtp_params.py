"""The SMTP gateway's pure parts: ESMTP parameter parsing (RFC 3461 DSN, SIZE, BODY, SMTPUTF8), xtext,
hop counting, the trace header and log redaction.  No sockets."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.inbound.smtp_params import (
    MailParams,
    RcptParams,
    Refused,
    count_received,
    parse_mail_params,
    parse_rcpt_params,
    received_header,
    redact,
    split_params,
    with_protocol,
    xtext_decode,
)
from connectors.inbound.smtp_server import quiet_mail_log


def xtext_encode(text: str) -> str:
    return "".join(ch if "!" <= ch <= "~" and ch not in "+=" else f"+{ord(ch):02X}" for ch in text)


@pytest.mark.parametrize(("xtext", "text"), [
    ("AbC+2Bx", "AbC+x"), ("Jean+2BDupont@example.org", "Jean+Dupont@example.org"), ("a+3Db", "a=b"),
    ("a+20b", "a b"), ("a+2bx", "a+x"), ("", ""), ("<>", "<>"),
])
def test_xtext_decodes(xtext: str, text: str) -> None:
    assert xtext_decode(xtext) == text


@pytest.mark.parametrize("bad", ["a+2", "a+zz", "a=b", "a b", "a+0Ab", "a+7Fb", "a+C3+A9", "é"])
def test_xtext_refuses_malformed_or_non_printable(bad: str) -> None:
    with pytest.raises(ValueError):
        xtext_decode(bad)


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)))
def test_xtext_round_trips_printable_ascii(text: str) -> None:
    assert xtext_decode(xtext_encode(text)) == text


def test_split_params_upper_cases_keywords_and_keeps_values() -> None:
    assert split_params("ret=Hdrs  ENVID=AbC SMTPUTF8") == {"RET": "Hdrs", "ENVID": "AbC", "SMTPUTF8": None}


@pytest.mark.parametrize(("text", "reply"), [
    ("=x", "501 5.5.4"), ("RE_T=1", "501 5.5.4"), ("RET=", "501 5.5.4"), ("RET=A=B", "501 5.5.4"),
    ("RET=FULL ret=HDRS", "501 5.5.4 Duplicate RET"),
])
def test_split_params_refuses_bad_syntax(text: str, reply: str) -> None:
    with pytest.raises(Refused) as refused:
        split_params(text)
    assert refused.value.reply.startswith(reply)


def test_mail_params() -> None:
    assert parse_mail_params("") == MailParams()
    assert parse_mail_params("SIZE=1024 BODY=8bitmime SMTPUTF8 RET=hdrs ENVID=AbC+2Bx AUTH=<>") == MailParams(
        size=1024, body="8BITMIME", smtputf8=True, ret="HDRS", envid="AbC+x")


@pytest.mark.parametrize(("text", "code"), [
    ("SIZE=big", "501"), ("SIZE", "501"), ("SIZE=²", "501"), ("BODY=BINARYMIME", "501"), ("SMTPUTF8=yes", "501"),
    ("RET=BODY", "501"), ("ENVID", "501"), ("ENVID=" + "x" * 101, "501"), ("ENVID=a+0D+0Ab", "501"),
    ("AUTH=a+zz", "501"), ("NOTIFY=NEVER", "555"), ("XFORWARD=1", "555"),
])
def test_mail_params_refused(text: str, code: str) -> None:
    with pytest.raises(Refused) as refused:
        parse_mail_params(text)
    assert refused.value.reply.startswith(f"{code} 5.5.4 ")


def test_rcpt_params() -> None:
    assert parse_rcpt_params("") == RcptParams()
    assert parse_rcpt_params("NOTIFY=never") == RcptParams(notify=("NEVER",))
    assert parse_rcpt_params("notify=Delay,failure,DELAY ORCPT=rfc822;Jean+2BDupont@example.org") == RcptParams(
        notify=("DELAY", "FAILURE"), orcpt="rfc822;Jean+Dupont@example.org")
    assert parse_rcpt_params("ORCPT=utf-8;x@y") == RcptParams(orcpt="utf-8;x@y")


@pytest.mark.parametrize(("text", "code"), [
    ("NOTIFY=SOMETIMES", "501"), ("NOTIFY=NEVER,SUCCESS", "501"), ("NOTIFY=SUCCESS,", "501"), ("NOTIFY", "501"),
    ("ORCPT=x@y", "501"), ("ORCPT=;x@y", "501"), ("ORCPT=rfc822;", "501"), ("ORCPT=rfc822;a+2", "501"),
    ("ORCPT=rfc822;" + "a" * 500, "501"), ("RET=FULL", "555"), ("SIZE=1", "555"),
])
def test_rcpt_params_refused(text: str, code: str) -> None:
    with pytest.raises(Refused) as refused:
        parse_rcpt_params(text)
    assert refused.value.reply.startswith(f"{code} 5.5.4 ")


def test_count_received_reads_the_header_section_only() -> None:
    head = b"Received: a\r\n\tfolded\r\nRECEIVED : b\r\nX-Received: no\r\nSubject: Received: no\r\n"
    assert count_received(head + b"\r\nReceived: in the body\r\n") == 2
    assert count_received(head.replace(b"\r\n", b"\n") + b"\nReceived: body\n") == 2
    assert count_received(b"\r\nReceived: body only\r\n") == 0
    assert count_received(b"Received: x\r\n") == 1


def test_with_protocol_table() -> None:
    assert with_protocol(extended=False, tls=True, auth=True, utf8=False) == "SMTP"
    assert with_protocol(extended=True, tls=False, auth=False, utf8=False) == "ESMTP"
    assert with_protocol(extended=True, tls=True, auth=False, utf8=False) == "ESMTPS"
    assert with_protocol(extended=True, tls=True, auth=True, utf8=False) == "ESMTPSA"
    assert with_protocol(extended=True, tls=False, auth=True, utf8=True) == "UTF8SMTPA"


def test_received_header() -> None:
    when = datetime(2024, 6, 3, 10, 0, tzinfo=UTC)
    header = received_header(helo="relay.example.org (evil)\r\nX: y", peer_ip="192.0.2.1", hostname="mx.hub",
                             protocol="ESMTPS", trace_id="abc", recipient="p@patient.mssante.fr",
                             tls="using TLSv1.3 with cipher X (256 bits)", when=when)
    assert header == (b"Received: from relay.example.orgevilX:y ([192.0.2.1])\r\n"
                      b"\t(using TLSv1.3 with cipher X (256 bits))\r\n"
                      b"\tby mx.hub (MES Hub) with ESMTPS id abc\r\n"
                      b"\tfor <p@patient.mssante.fr>; Mon, 03 Jun 2024 10:00:00 +0000\r\n")
    shared = received_header(helo="", peer_ip="2001:db8::1", hostname="mx.hub", protocol="ESMTP", trace_id="abc",
                             recipient=None, tls="", when=when)
    assert shared == (b"Received: from unknown ([IPv6:2001:db8::1])\r\n"
                      b"\tby mx.hub (MES Hub) with ESMTP id abc; Mon, 03 Jun 2024 10:00:00 +0000\r\n")


def test_redact_keeps_only_the_domain() -> None:
    assert redact("279035121518989@Patient.MSSante.fr") == "*@patient.mssante.fr"
    assert redact("") == "<>"


def test_mail_log_is_quieted_unless_configured() -> None:
    mail_log = logging.getLogger("mail.log")
    saved = mail_log.level
    try:
        mail_log.setLevel(logging.NOTSET)
        quiet_mail_log()
        assert mail_log.level == logging.WARNING
        mail_log.setLevel(logging.DEBUG)
        quiet_mail_log()
        assert mail_log.level == logging.DEBUG
    finally:
        mail_log.setLevel(saved)
