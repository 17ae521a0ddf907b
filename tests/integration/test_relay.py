"""The SMTP relay against a real SMTP server on loopback (aiosmtpd), with real STARTTLS (trustme CA).

The sink plays the next hop: it answers from a script per recipient (RCPT) and per attempt (DATA),
advertises DSN or not, and records what it was told, so each test checks what an operator would:
the bytes arrived once, the DSN parameters went through (or not), and each recipient's outcome.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from connectors.outbound.relay import SmtpRelay, crlf, xtext
from hub.delivery import Outcome, RecipientResult
from hub.mailqueue import SmtpRecipient
from pipelines.mail.core.relay_schedule import NextHop
from tests.services import free_port
from tests.smtp_sink import DSN_PARAMS, Received, Running, Sink, start_sink

pytestmark = pytest.mark.integration

PATIENT = "279035121518989@patient.mssante.fr"
DOCTOR = "dr.martin@hopital.mssante.fr"
OTHER = "secretariat@clinique.mssante.fr"
MESSAGE = (b"From: dr.martin@hopital.mssante.fr\r\nTo: 279035121518989@patient.mssante.fr\r\n"
           b"Subject: compte rendu\r\nMessage-ID: <1@hopital.mssante.fr>\r\n\r\n"
           b"Bonjour,\r\n.leading dot stays\r\nfin\r\n")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def cafile(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Running]:
    """A plain sink; `@pytest.mark.parametrize("server", [{...Sink kwargs}], indirect=True)` scripts it."""
    yield from start_sink(Sink(**getattr(request, "param", {})))


@pytest.fixture
def tls_server(server_tls: ssl.SSLContext) -> Iterator[Running]:
    sink = Sink()
    yield from start_sink(sink, tls_context=server_tls, require_starttls=True, authenticator=sink.authenticate)


@pytest.fixture
def relay() -> SmtpRelay:
    return SmtpRelay(helo_name="mes-hub.test", timeout_s=5)


def statuses(results: list[RecipientResult]) -> list[tuple[str, Outcome, int, str]]:
    return [(r.address, r.outcome, r.reply.code, r.reply.status) for r in results]


# -- delivery ----------------------------------------------------------------------------------------------


def test_delivers_the_exact_bytes_once(server: Running, relay: SmtpRelay) -> None:
    # When one message goes to two recipients
    results = relay.deliver(server.hop(), MESSAGE, DOCTOR, [SmtpRecipient(PATIENT), SmtpRecipient(OTHER)])
    # Then both are delivered, with the server's reply, and the sink holds the bytes once
    assert statuses(results) == [(PATIENT, Outcome.DELIVERED, 250, "2.0.0"), (OTHER, Outcome.DELIVERED, 250, "2.0.0")]
    assert results[0].reply.text == "queued as 42" and results[0].remote_host == "127.0.0.1"
    assert server.sink.received == [Received(DOCTOR, [PATIENT, OTHER], MESSAGE, tls=False)]


def test_bare_line_feeds_become_crlf(server: Running, relay: SmtpRelay) -> None:
    sloppy = b"Subject: x\n\nline\rline\n"
    relay.deliver(server.hop(), sloppy, DOCTOR, [SmtpRecipient(OTHER)])
    assert server.sink.received[0].content == b"Subject: x\r\n\r\nline\r\nline\r\n" == crlf(sloppy)


def test_null_sender(server: Running, relay: SmtpRelay) -> None:
    # Given a bounce (null reverse-path)
    results = relay.deliver(server.hop(), MESSAGE, "", [SmtpRecipient(DOCTOR)])
    # Then MAIL FROM:<> went out and the bounce is delivered
    assert results[0].outcome is Outcome.DELIVERED
    assert server.sink.mail_args[0].startswith("FROM:<>")


def test_no_recipient_no_connection(server: Running, relay: SmtpRelay) -> None:
    assert relay.deliver(server.hop(), MESSAGE, DOCTOR, []) == []
    assert server.sink.mail_args == []


# -- DSN parameters ----------------------------------------------------------------------------------------


def test_dsn_parameters_are_relayed_when_advertised(server: Running, relay: SmtpRelay) -> None:
    # Given a mail whose sender asked for DSNs
    recipients = [SmtpRecipient(PATIENT, notify=("SUCCESS", "FAILURE"), orcpt=f"rfc822;{PATIENT}"),
                  SmtpRecipient(OTHER, notify=("NEVER",)), SmtpRecipient(DOCTOR)]
    # When the next hop advertises DSN
    results = relay.deliver(server.hop(), MESSAGE, DOCTOR, recipients, ret="HDRS", envid="id+1=a b")
    # Then RET, ENVID (xtext), NOTIFY and ORCPT reach it as given; nothing is invented for the third one
    assert all(r.outcome is Outcome.DELIVERED for r in results)
    assert server.sink.dsn_seen == [{"RET": "HDRS", "ENVID": "id+2B1+3Da+20b"},
                                    {"NOTIFY": "SUCCESS,FAILURE", "ORCPT": f"rfc822;{PATIENT}"},
                                    {"NOTIFY": "NEVER"}, {}]
    assert xtext("id+1=a b") == "id+2B1+3Da+20b"


@pytest.mark.parametrize("server", [{"dsn": False}], indirect=True)
def test_dsn_parameters_are_not_sent_when_not_advertised(server: Running, relay: SmtpRelay) -> None:
    recipients = [SmtpRecipient(PATIENT, notify=("SUCCESS",), orcpt=f"rfc822;{PATIENT}")]
    results = relay.deliver(server.hop(), MESSAGE, DOCTOR, recipients, ret="FULL", envid="abc")
    # Then the mail is delivered and no DSN keyword went on the wire (aiosmtpd would have said 555)
    assert results[0].outcome is Outcome.DELIVERED
    sent = " ".join(server.sink.mail_args + server.sink.rcpt_args).upper()
    assert not any(f"{p}=" in sent for p in DSN_PARAMS)


# -- 4xx, 5xx, mixed ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("server", [{"rcpt_script": {PATIENT: ["450 4.2.1 Mailbox busy, try later"]}}],
                         indirect=True)
def test_4xx_at_rcpt_then_250(server: Running, relay: SmtpRelay) -> None:
    # When the first attempt gets 450 at RCPT
    first = relay.deliver(server.hop(), MESSAGE, DOCTOR, [SmtpRecipient(PATIENT)])
    # Then it is transient and nothing was delivered (no DATA without an accepted recipient)
    assert statuses(first) == [(PATIENT, Outcome.TRANSIENT, 450, "4.2.1")]
    assert server.sink.received == []
    # When the retry is accepted, Then it is delivered, once
    second = relay.deliver(server.hop(), MESSAGE, DOCTOR, [SmtpRecipient(PATIENT)])
    assert statuses(second) == [(PATIENT, Outcome.DELIVERED, 250, "2.0.0")]
    assert [r.content for r in server.sink.received] == [MESSAGE]


@pytest.mark.parametrize("server", [{"data_script": ["451 4.3.0 Queue full"]}], indirect=True)
def test_4xx_at_data_then_250(server: Running, relay: SmtpRelay) -> None:
    first = relay.deliver(server.hop(), MESSAGE, DOCTOR, [SmtpRecipient(PATIENT), SmtpRecipient(OTHER)])
    assert [r.outcome for r in first] == [Outcome.TRANSIENT, Outcome.TRANSIENT]
    assert first[0].reply.text == "Queue full"
    second = relay.deliver(server.hop(), MESSAGE, DOCTOR, [SmtpRecipient(PATIENT), SmtpRecipient(OTHER)])
    assert [r.outcome for r in second] == [Outcome.DELIVERED, Outcome.DELIVERED]
    assert len(server.sink.received) == 1


@pytest.mark.parametrize("server", [{"rcpt_script": {PATIENT: ["550 5.1.1 Unknown INS, patient has no mailbox"]}}],
                         indirect=True)
def test_5xx_at_rcpt_is_permanent_with_the_remote_text(server: Running, relay: SmtpRelay) -> None:
    results = relay.deliver(server.hop(), MESSAGE, DOCTOR, [SmtpRecipient(PATIENT)])
    assert statuses(results) == [(PATIENT, Outcome.PERMANENT, 550, "5.1.1")]
    assert results[0].reply.text == "Unknown INS, patient has no mailbox"
    assert server.sink.received == []


@pytest.mark.parametrize("server", [{"data_script": ["554 5.6.0 Content rejected"]}], indirect=True)
def test_5xx_at_data_is_permanent(server: Running, relay: SmtpRelay) -> None:
    results = relay.deliver(server.hop(), MESSAGE, DOCTOR, [SmtpRecipient(PATIENT)])
    assert statuses(results) == [(PATIENT, Outcome.PERMANENT, 554, "5.6.0")]
    assert results[0].reply.text == "Content rejected"


@pytest.mark.parametrize("server", [{"rcpt_script": {PATIENT: ["550 5.1.1 No such user"]}}], indirect=True)
def test_mixed_recipients(server: Running, relay: SmtpRelay) -> None:
    # When one recipient is refused and the other accepted
    results = relay.deliver(server.hop(), MESSAGE, DOCTOR, [SmtpRecipient(PATIENT), SmtpRecipient(OTHER)])
    # Then each keeps its own outcome, and the message went once, to the accepted one only
    assert statuses(results) == [(PATIENT, Outcome.PERMANENT, 550, "5.1.1"), (OTHER, Outcome.DELIVERED, 250, "2.0.0")]
    assert [r.rcpt_tos for r in server.sink.received] == [[OTHER]]


def test_server_down_is_transient(relay: SmtpRelay) -> None:
    hop = NextHop("127.0.0.1", free_port(), starttls="off")
    results = relay.deliver(hop, MESSAGE, DOCTOR, [SmtpRecipient(PATIENT), SmtpRecipient(OTHER)])
    assert [(r.outcome, r.reply.code, r.reply.status) for r in results] == [(Outcome.TRANSIENT, 451, "4.4.1")] * 2
    assert "Connection refused" in results[0].reply.text


@pytest.fixture
def raw_server() -> Iterator[tuple[int, list[bytes]]]:
    """A bare TCP listener: it greets with whatever the test puts in the list (nothing: it stays silent)."""
    listener = socket.create_server(("127.0.0.1", 0))
    greeting: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                if greeting:
                    conn.sendall(greeting[0])
                stop.wait(2)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], greeting
    stop.set()
    listener.close()
    thread.join(5)


def test_silent_server_times_out_transient(raw_server: tuple[int, list[bytes]]) -> None:
    # Given a server that accepts the connection but never greets
    port, _ = raw_server
    relay = SmtpRelay(helo_name="mes-hub.test", timeout_s=0.3)
    results = relay.deliver(NextHop("127.0.0.1", port, starttls="off"), MESSAGE, DOCTOR, [SmtpRecipient(PATIENT)])
    # Then the mail is deferred as a bad connection (Postfix: 4.4.2 "timed out while receiving the greeting")
    assert statuses(results) == [(PATIENT, Outcome.TRANSIENT, 451, "4.4.2")]
    assert "timed out" in results[0].reply.text


def test_5xx_greeting_is_transient_with_the_remote_text(raw_server: tuple[int, list[bytes]],
                                                        relay: SmtpRelay) -> None:
    port, greeting = raw_server
    greeting.append(b"554 5.7.1 go away\r\n")
    results = relay.deliver(NextHop("127.0.0.1", port, starttls="off"), MESSAGE, DOCTOR, [SmtpRecipient(PATIENT)])
    assert statuses(results) == [(PATIENT, Outcome.TRANSIENT, 451, "4.4.2")]
    assert results[0].reply.text.endswith("refused to talk to me: 554 5.7.1 go away")


def test_malformed_addresses_are_permanent_without_sending(server: Running, relay: SmtpRelay) -> None:
    results = relay.deliver(server.hop(), MESSAGE, DOCTOR, [SmtpRecipient("a@b>\r\nRSET"), SmtpRecipient(OTHER)])
    assert statuses(results) == [("a@b>\r\nRSET", Outcome.PERMANENT, 553, "5.1.3"),
                                 (OTHER, Outcome.DELIVERED, 250, "2.0.0")]
    bad_sender = relay.deliver(server.hop(), MESSAGE, "x y@z", [SmtpRecipient(OTHER)])
    assert statuses(bad_sender) == [(OTHER, Outcome.PERMANENT, 553, "5.1.7")]


# -- 8BITMIME and SMTPUTF8 ---------------------------------------------------------------------------------

BODY_8BIT = "Subject: résultats\r\n\r\nRésultats d'analyse.\r\n".encode()


def test_8bit_and_utf8_are_announced(server: Running, relay: SmtpRelay) -> None:
    results = relay.deliver(server.hop(), BODY_8BIT, DOCTOR, [SmtpRecipient("réception@clinique.mssante.fr")])
    assert results[0].outcome is Outcome.DELIVERED
    assert "BODY=8BITMIME" in server.sink.mail_args[0] and "SMTPUTF8" in server.sink.mail_args[0]
    assert server.sink.received[0].content == BODY_8BIT
    assert server.sink.received[0].rcpt_tos == ["réception@clinique.mssante.fr"]


@pytest.fixture
def ascii_only_server() -> Iterator[Running]:
    yield from start_sink(Sink(), enable_SMTPUTF8=False)


def test_utf8_without_smtputf8_is_permanent(ascii_only_server: Running, relay: SmtpRelay) -> None:
    results = relay.deliver(ascii_only_server.hop(), BODY_8BIT, DOCTOR, [SmtpRecipient(OTHER)])
    assert statuses(results) == [(OTHER, Outcome.PERMANENT, 553, "5.6.7")]
    assert ascii_only_server.sink.mail_args == []  # refused before MAIL: nothing half-sent


def test_8bit_body_without_smtputf8_uses_8bitmime(ascii_only_server: Running, relay: SmtpRelay) -> None:
    message = "Subject: ok\r\n\r\nRésultats\r\n".encode()
    results = relay.deliver(ascii_only_server.hop(), message, DOCTOR, [SmtpRecipient(OTHER)])
    assert results[0].outcome is Outcome.DELIVERED
    assert ascii_only_server.sink.mail_args[0].endswith("BODY=8BITMIME")


@pytest.fixture
def small_server() -> Iterator[Running]:
    yield from start_sink(Sink(), data_size_limit=100)


def test_too_big_for_the_server_is_permanent(small_server: Running, relay: SmtpRelay) -> None:
    results = relay.deliver(small_server.hop(), MESSAGE + b"x" * 200, DOCTOR, [SmtpRecipient(OTHER)])
    assert statuses(results) == [(OTHER, Outcome.PERMANENT, 552, "5.3.4")]
    assert small_server.sink.received == []


# -- STARTTLS, certificates, AUTH --------------------------------------------------------------------------


def test_starttls_required_and_verified(tls_server: Running, cafile: str) -> None:
    relay = SmtpRelay(helo_name="mes-hub.test", timeout_s=5, cafile=cafile)
    results = relay.deliver(tls_server.hop(starttls="require"), MESSAGE, DOCTOR, [SmtpRecipient(PATIENT)])
    assert results[0].outcome is Outcome.DELIVERED
    assert tls_server.sink.received == [Received(DOCTOR, [PATIENT], MESSAGE, tls=True)]


def test_wrong_ca_is_a_transient_tls_failure(tls_server: Running, tmp_path: Path) -> None:
    # Given a relay that trusts another CA
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    relay = SmtpRelay(helo_name="mes-hub.test", timeout_s=5, cafile=str(other))
    # When it delivers with certificate verification
    results = relay.deliver(tls_server.hop(starttls="require"), MESSAGE, DOCTOR, [SmtpRecipient(PATIENT)])
    # Then the mail is deferred with a TLS status and never reached the server
    assert statuses(results) == [(PATIENT, Outcome.TRANSIENT, 451, "4.7.5")]
    assert "certificate verify failed" in results[0].reply.text
    assert tls_server.sink.received == [] and tls_server.sink.mail_args == []


def test_unverified_tls_accepts_any_certificate(tls_server: Running, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    relay = SmtpRelay(helo_name="mes-hub.test", timeout_s=5, cafile=str(other))
    hop = tls_server.hop(starttls="require", verify_tls=False)
    assert relay.deliver(hop, MESSAGE, DOCTOR, [SmtpRecipient(PATIENT)])[0].outcome is Outcome.DELIVERED


def test_tls_required_but_not_offered(server: Running, relay: SmtpRelay) -> None:
    results = relay.deliver(server.hop(starttls="require"), MESSAGE, DOCTOR, [SmtpRecipient(PATIENT)])
    assert statuses(results) == [(PATIENT, Outcome.TRANSIENT, 451, "4.7.4")]
    assert server.sink.mail_args == []


def test_opportunistic_without_tls_offered_delivers_in_clear(server: Running, relay: SmtpRelay) -> None:
    results = relay.deliver(server.hop(starttls="opportunistic"), MESSAGE, DOCTOR, [SmtpRecipient(PATIENT)])
    assert results[0].outcome is Outcome.DELIVERED and server.sink.received[0].tls is False


def test_opportunistic_uses_tls_when_offered(tls_server: Running, cafile: str) -> None:
    relay = SmtpRelay(helo_name="mes-hub.test", timeout_s=5, cafile=cafile)
    results = relay.deliver(tls_server.hop(starttls="opportunistic"), MESSAGE, DOCTOR, [SmtpRecipient(PATIENT)])
    assert results[0].outcome is Outcome.DELIVERED and tls_server.sink.received[0].tls is True


def test_auth_over_tls(tls_server: Running, cafile: str) -> None:
    relay = SmtpRelay(helo_name="mes-hub.test", timeout_s=5, cafile=cafile)
    hop = tls_server.hop(starttls="require", username="hub", password="pw")
    assert relay.deliver(hop, MESSAGE, DOCTOR, [SmtpRecipient(PATIENT)])[0].outcome is Outcome.DELIVERED
    assert tls_server.sink.logins == ["hub"]


def test_bad_credentials_are_transient(tls_server: Running, cafile: str) -> None:
    relay = SmtpRelay(helo_name="mes-hub.test", timeout_s=5, cafile=cafile)
    hop = tls_server.hop(starttls="require", username="hub", password="wrong")
    results = relay.deliver(hop, MESSAGE, DOCTOR, [SmtpRecipient(PATIENT)])
    assert statuses(results) == [(PATIENT, Outcome.TRANSIENT, 451, "4.7.0")]
    assert tls_server.sink.received == []


def test_credentials_never_go_in_clear(server: Running, relay: SmtpRelay) -> None:
    hop = server.hop(starttls="off", username="hub", password="pw")
    results = relay.deliver(hop, MESSAGE, DOCTOR, [SmtpRecipient(PATIENT)])
    assert statuses(results) == [(PATIENT, Outcome.TRANSIENT, 451, "4.7.0")]
    assert server.sink.logins == [] and server.sink.mail_args == []


# -- logging -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("server", [{"rcpt_script": {PATIENT: [f"550 5.1.1 <{PATIENT}>: unknown"]}}], indirect=True)
def test_logs_carry_no_address_or_body(server: Running, relay: SmtpRelay, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="connectors.outbound.relay")
    relay.deliver(server.hop(), MESSAGE, PATIENT, [SmtpRecipient(PATIENT), SmtpRecipient(OTHER)])
    relay.deliver(NextHop("127.0.0.1", free_port(), starttls="off"), MESSAGE, PATIENT, [SmtpRecipient(PATIENT)])
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "connectors.outbound.relay")
    assert "127.0.0.1" in logged and "550" in logged
    assert "279035121518989" not in logged and "compte rendu" not in logged and "secretariat" not in logged
