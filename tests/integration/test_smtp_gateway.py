"""The SMTP gateway over real sockets: stdlib smtplib as the sending MTA, trustme certificates for
STARTTLS, a real spool on disk drained into a real Intake (SeaweedFS, an SQLite index, the SQLite
bus).  What the sender is told is what the hub did: 250 only once the mail is in the spool, 4xx when
the spool cannot take it, and the exact admission reply when a recipient is refused."""

from __future__ import annotations

import base64
import smtplib
import ssl
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trustme

from connectors.inbound.smtp_server import SmtpGateway, make_dev_certificate
from hub.auth import Authenticator, token_sha256
from hub.bus import open_connection
from hub.bus.kombu_bus import KombuPublisher, declare
from hub.credentials import Credential
from hub.envelope import BlobRef
from hub.intake import Intake
from hub.mailqueue import Reply, SmtpEnvelope, SmtpRecipient, unpack
from hub.records import SubmissionRecord, SubmissionStatus
from hub.topology import Topology
from storage.objects import MinioBlobStore
from storage.spool import SpoolDrainer, SpoolWriter
from storage.sql.index import SqlIndex
from tests.fixtures_s3 import store_on

pytestmark = pytest.mark.integration

PATIENT = "279035121518989@patient.mssante.fr"
OPPOSED = "224027511583555@patient.mssante.fr"
CLOSED = "222127505611201@patient.mssante.fr"
BUSY = "246037433000291@patient.mssante.fr"
UNKNOWN = "288091234567823@patient.mssante.fr"
SENDER = "dr.martin@hopital-exemple.mssante.fr"
BLOCKED_SENDER = "spam@example.net"
LOGIN, TOKEN = "lab-sender", "lab-sender-token-0123456789"
HOSTNAME = "mx.hub.test"


@dataclass
class TableAdmission:
    """Stands for the real MailAdmission (pipelines): patients' states and blocked senders as tables."""

    patients: Mapping[str, str]
    blocked: frozenset[str] = frozenset()
    calls: list[tuple[str, str, str]] = field(default_factory=list)

    REPLIES: ClassVar[Mapping[str, Reply]] = {
        "opposed": Reply(550, "5.7.1", "Recipient refuses MSSante exchanges"),
        "closed": Reply(550, "5.2.1", "Mailbox closed"),
        "busy": Reply(450, "4.2.1", "Mailbox busy, try later"),
    }

    def check_sender(self, mail_from: str, *, auth: str) -> Reply | None:
        self.calls.append(("sender", mail_from, auth))
        return Reply(550, "5.7.1", "Sender not allowed") if mail_from in self.blocked else None

    def check_recipient(self, address: str, *, mail_from: str, auth: str) -> Reply | None:
        self.calls.append(("recipient", address, auth))
        state = self.patients.get(address)
        return Reply(550, "5.1.1", "Unknown recipient") if state is None else self.REPLIES.get(state)

    def check_message(self, content: bytes, *, mail_from: str, auth: str) -> Reply | None:
        self.calls.append(("message", mail_from, auth))
        return None


@dataclass
class Parts:
    store: MinioBlobStore
    index: SqlIndex
    publisher: KombuPublisher
    intake: Intake


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path]:
    issued = ca.issue_cert("localhost", "127.0.0.1")
    cert, key = tmp_path / "smtp.crt", tmp_path / "smtp.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    return cert, key


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def admission() -> TableAdmission:
    return TableAdmission({PATIENT: "active", OPPOSED: "opposed", CLOSED: "closed", BUSY: "busy",
                           "second@patient.mssante.fr": "active", "third@patient.mssante.fr": "active"},
                          blocked=frozenset({BLOCKED_SENDER}))


@pytest.fixture
def bus_publisher(sqlite_bus_url: str) -> Iterator[KombuPublisher]:
    topology = Topology(prefix=f"smtp-{uuid.uuid4().hex[:8]}")
    with open_connection(sqlite_bus_url) as connection:
        declare(connection, topology)
    publisher = KombuPublisher(open_connection(sqlite_bus_url), topology)
    yield publisher
    publisher.close()


@pytest.fixture
def parts(blob_store: MinioBlobStore, index: SqlIndex, bus_publisher: KombuPublisher) -> Parts:
    return Parts(store=blob_store, index=index, publisher=bus_publisher,
                 intake=Intake(store=blob_store, index=index, publisher=bus_publisher))


@pytest.fixture
def gateway_factory(parts: Parts, admission: TableAdmission, tls_files: tuple[Path, Path],
                    tmp_path: Path) -> Iterator[Callable[..., SmtpGateway]]:
    """Gateways spooling to their own folder, each drained into `intake` (default: parts.intake)
    by a thread, as `meshub run` does."""
    started: list[tuple[SmtpGateway, SpoolWriter, threading.Event, threading.Thread]] = []
    authenticator = Authenticator([Credential(name=LOGIN, role="producer", token_sha256=token_sha256(TOKEN))])

    def make(*, intake: Intake | None = None, spool_bytes: int = 1 << 30, **options: Any) -> SmtpGateway:
        spool_dir = tmp_path / f"spool-{len(started)}"
        spool = SpoolWriter(spool_dir, max_backlog_bytes=spool_bytes, backlog_check_s=0)
        spool.start()
        drainer = SpoolDrainer(spool_dir, (intake or parts.intake).accept_spooled, poll_s=0.01, retry_s=(0.1, 0.5))
        stop = threading.Event()
        thread = threading.Thread(target=drainer.run, args=(stop,), daemon=True)
        thread.start()
        options = {"host": "127.0.0.1", "port": 0, "hostname": HOSTNAME, "cert_path": tls_files[0],
                   "key_path": tls_files[1], **options}
        gateway = SmtpGateway(spool=spool, admission=admission, authenticator=authenticator, **options)
        started.append((gateway, spool, stop, thread))
        gateway.start()
        return gateway

    yield make
    for gateway, spool, stop, thread in started:
        gateway.stop()
        stop.set()
        thread.join(10)
        spool.close()


@pytest.fixture
def gateway(gateway_factory: Callable[..., SmtpGateway]) -> SmtpGateway:
    return gateway_factory()


@contextmanager
def session(gateway: SmtpGateway, context: ssl.SSLContext | None = None, *,
            login: bool = False) -> Iterator[smtplib.SMTP]:
    """An EHLO'd session; with `context`, after STARTTLS (and AUTH when `login`)."""
    with smtplib.SMTP("127.0.0.1", gateway.port, local_hostname="relay.example.org", timeout=30) as smtp:
        smtp.ehlo()
        if context is not None:
            smtp.starttls(context=context)
            smtp.ehlo()
        if login:
            smtp.login(LOGIN, TOKEN)
        yield smtp


def message(*, received: int = 0, body_bytes: int = 0) -> bytes:
    trace = b"".join(b"Received: from hop%d.example.org by relay%d.example.org; Mon, 3 Jun 2024 10:00:00 +0000\r\n"
                     % (n, n) for n in range(received))
    return (trace + b"From: Dr Martin <" + SENDER.encode() + b">\r\nTo: <" + PATIENT.encode() + b">\r\n"
            b"Subject: Compte rendu\r\nMessage-ID: <" + uuid.uuid4().hex.encode() + b"@example.org>\r\n\r\n"
            b"Bonjour,\r\n.leading dot\r\n" + (b"x" * 78 + b"\r\n") * (body_bytes // 80))


def send(smtp: smtplib.SMTP, *, to: tuple[str, ...] = (PATIENT,), body: bytes | None = None,
         mail_options: tuple[str, ...] = ()) -> tuple[int, bytes]:
    assert smtp.mail(SENDER, list(mail_options))[0] == 250
    for recipient in to:
        assert smtp.rcpt(recipient)[0] == 250
    return smtp.data(body if body is not None else message())


def queued(parts: Parts, reply: tuple[int, bytes], *,
           timeout_s: float = 20.0) -> tuple[SubmissionRecord, SmtpEnvelope, bytes]:
    """The submission a `250 2.0.0 Ok: queued as <id>` names once the spool is drained into intake, and
    the queued mail read back from S3."""
    code, text = reply
    assert code == 250 and text.startswith(b"2.0.0 Ok: queued as "), reply
    deadline = time.monotonic() + timeout_s
    while (record := parts.index.submission(text.decode().rsplit(" ", 1)[1])) is None:
        assert time.monotonic() < deadline, "the spooled mail never reached intake"
        time.sleep(0.02)
    ref = BlobRef(bucket=parts.store.bucket, key=record.blob_key, sha256=record.sha256, size=record.size)
    envelope, mail = unpack(parts.store.get(ref))
    return record, envelope, mail


def error_text(error: smtplib.SMTPResponseException) -> bytes:
    text: object = error.smtp_error  # typeshed says str; smtplib gives the server's bytes
    assert isinstance(text, bytes)
    return text


def pending(index: SqlIndex) -> list[SubmissionRecord]:
    return index.stale_pending(datetime.now(UTC) + timedelta(days=1))


# -- EHLO, STARTTLS, AUTH ---------------------------------------------------------------------------------


def test_ehlo_advertises_starttls_size_dsn_8bitmime_then_auth_after_tls(gateway: SmtpGateway,
                                                                       client_tls: ssl.SSLContext) -> None:
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=30) as smtp:
        assert smtp.ehlo()[0] == 250
        features = smtp.esmtp_features
        assert {"starttls", "size", "dsn", "8bitmime", "smtputf8"} <= features.keys()
        assert features["size"] == str(25 * 1024 * 1024)
        assert "auth" not in features, "AUTH is only offered over TLS"
        smtp.starttls(context=client_tls)
        smtp.ehlo()
        assert set(smtp.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}
        assert "starttls" not in smtp.esmtp_features and "dsn" in smtp.esmtp_features


def test_auth_before_tls_is_refused(gateway: SmtpGateway) -> None:
    with session(gateway) as smtp:
        code, text = smtp.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0{LOGIN}\0{TOKEN}".encode()).decode())
    assert (code, text[:6]) == (538, b"5.7.11")


def test_wrong_password_is_535(gateway: SmtpGateway, client_tls: ssl.SSLContext) -> None:
    with session(gateway, client_tls) as smtp, pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        smtp.login(LOGIN, "not-the-token")
    assert refused.value.smtp_code == 535 and error_text(refused.value).startswith(b"5.7.8")


def test_auth_login_mechanism_names_the_principal(gateway: SmtpGateway, client_tls: ssl.SSLContext,
                                                  parts: Parts) -> None:
    with session(gateway, client_tls) as smtp:
        smtp.user, smtp.password = LOGIN, TOKEN
        assert smtp.auth("LOGIN", smtp.auth_login)[0] == 235
        record, envelope, mail = queued(parts, send(smtp))
    assert (record.producer, envelope.auth) == (LOGIN, LOGIN) and b" with ESMTPSA id " in mail


def test_require_tls_refuses_mail_before_starttls(gateway_factory: Callable[..., SmtpGateway],
                                                  client_tls: ssl.SSLContext, parts: Parts) -> None:
    gateway = gateway_factory(require_tls=True)
    with session(gateway) as smtp:
        code, text = smtp.mail(SENDER)
    assert (code, text[:5]) == (530, b"5.7.0")
    with session(gateway, client_tls) as smtp:
        queued(parts, send(smtp))


# -- DSN parameters -------------------------------------------------------------------------------------


def test_dsn_parameters_are_kept_exactly_in_the_queued_mail(gateway: SmtpGateway, client_tls: ssl.SSLContext,
                                                            parts: Parts, admission: TableAdmission) -> None:
    # Given an authenticated producer asking for DSNs with a mixed-case ENVID and ORCPT
    body = message()
    with session(gateway, client_tls, login=True) as smtp:
        assert smtp.mail(SENDER, ["RET=HDRS", "ENVID=AbC+2Bx"])[0] == 250
        assert smtp.rcpt(PATIENT, ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Jean+2BDupont@example.org"])[0] == 250
        # When the message is sent
        reply = smtp.data(body)
    # Then the 250 names a pending submission whose stored object holds exactly what the sender said
    record, envelope, mail = queued(parts, reply)
    assert record.status is SubmissionStatus.PENDING
    assert (record.source_kind, record.producer) == ("smtp", LOGIN)
    assert envelope.recipients == (SmtpRecipient(address=PATIENT, notify=("SUCCESS", "FAILURE"),
                                                 orcpt="rfc822;Jean+Dupont@example.org"),)
    assert (envelope.mail_from, envelope.ret, envelope.envid, envelope.auth) == (SENDER, "HDRS", "AbC+x", LOGIN)
    assert (envelope.helo, envelope.peer) == ("relay.example.org", "127.0.0.1")
    # And the message is the original behind one trace header naming the single recipient
    trace = mail[:-len(body)]
    assert mail.endswith(body) and trace.endswith(b"\r\n") and trace.count(b"Received:") == 1
    assert trace.startswith(b"Received: from relay.example.org ([127.0.0.1])")
    assert b"by mx.hub.test (MES Hub) with ESMTPSA id " in trace and f"for <{PATIENT}>".encode() in trace
    assert ("recipient", PATIENT, LOGIN) in admission.calls


def test_unauthenticated_peer_is_the_mx_and_null_sender_is_accepted(gateway: SmtpGateway, parts: Parts) -> None:
    with session(gateway) as smtp:
        assert smtp.mail("<>")[0] == 250
        assert smtp.rcpt(PATIENT)[0] == 250
        record, envelope, mail = queued(parts, smtp.data(message()))
    assert (record.producer, envelope.mail_from, envelope.auth) == ("mx", "", "")
    assert envelope.recipients == (SmtpRecipient(address=PATIENT),) and envelope.ret == envelope.envid == ""
    assert b" with ESMTP id " in mail.split(b"\r\n\r\n", 1)[0]


@pytest.mark.parametrize(("verb", "options", "expected"), [
    ("rcpt", ["NOTIFY=SOMETIMES"], 501),
    ("rcpt", ["NOTIFY=NEVER,SUCCESS"], 501),
    ("rcpt", ["NOTIFY="], 501),
    ("rcpt", ["ORCPT=Jean@example.org"], 501),
    ("rcpt", ["ORCPT=rfc822;Jean+2GDupont@example.org"], 501),
    ("rcpt", ["ORCPT=rfc822;a+0Ab@example.org"], 501),
    ("rcpt", ["NOTIFY=FAILURE", "notify=DELAY"], 501),
    ("rcpt", ["ENVID=x"], 555),
    ("mail", ["RET=BODY"], 501),
    ("mail", ["ENVID=AbC+2"], 501),
    ("mail", ["ENVID=" + "x" * 101], 501),
    ("mail", ["BODY=BINARYMIME"], 501),
    ("mail", ["X-UNKNOWN=1"], 555),
])
def test_bad_dsn_parameters_are_refused_with_5_5_4(gateway: SmtpGateway, verb: str, options: list[str],
                                                   expected: int) -> None:
    with session(gateway) as smtp:
        if verb == "rcpt":
            assert smtp.mail(SENDER)[0] == 250
            code, text = smtp.rcpt(PATIENT, options)
        else:
            code, text = smtp.mail(SENDER, options)
    assert (code, text[:5]) == (expected, b"5.5.4")


def test_dsn_keywords_are_case_insensitive_and_values_normalised(gateway: SmtpGateway, parts: Parts) -> None:
    with session(gateway) as smtp:
        assert smtp.mail(SENDER, ["ret=full", "envid=q+3Dz", "body=8bitmime"])[0] == 250
        assert smtp.rcpt(PATIENT, ["notify=delay,failure"])[0] == 250
        _, envelope, _ = queued(parts, smtp.data(message()))
    assert (envelope.ret, envelope.envid, envelope.extra["body"]) == ("FULL", "q=z", "8BITMIME")
    assert envelope.recipients[0].notify == ("DELAY", "FAILURE")


def test_smtputf8_allows_non_ascii_addresses_and_is_required_for_them(gateway: SmtpGateway, parts: Parts,
                                                                        admission: TableAdmission) -> None:
    sender = "jérôme.dupré@hôpital.example.org"
    with session(gateway) as smtp:
        assert smtp.mail(sender, ["SMTPUTF8", "BODY=8BITMIME"])[0] == 250
        assert smtp.rcpt(PATIENT)[0] == 250
        _, envelope, mail = queued(parts, smtp.data(message()))
        smtp.command_encoding = "utf-8"  # a client that sends UTF-8 without asking for SMTPUTF8
        code, text = smtp.mail(sender)
    assert (envelope.mail_from, envelope.extra["smtputf8"]) == (sender, "yes")
    assert b" with UTF8SMTP id " in mail.split(b"\r\n\r\n", 1)[0]
    assert (code, text[:5]) == (553, b"5.6.7")


# -- admission and limits -------------------------------------------------------------------------------


@pytest.mark.parametrize(("recipient", "expected"), [
    (OPPOSED, (550, b"5.7.1 Recipient refuses MSSante exchanges")),
    (CLOSED, (550, b"5.2.1 Mailbox closed")),
    (UNKNOWN, (550, b"5.1.1 Unknown recipient")),
    (BUSY, (450, b"4.2.1 Mailbox busy, try later")),
])
def test_recipient_refused_with_the_admission_reply(gateway: SmtpGateway, parts: Parts, recipient: str,
                                                    expected: tuple[int, bytes]) -> None:
    with session(gateway) as smtp:
        assert smtp.mail(SENDER)[0] == 250
        assert smtp.rcpt(recipient) == expected
        # and with no recipient left, DATA is refused and nothing is queued
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.data(message())
    assert refused.value.smtp_code == 554 and error_text(refused.value).startswith(b"5.5.1")
    assert pending(parts.index) == []


def test_sender_refused_with_the_admission_reply(gateway: SmtpGateway) -> None:
    with session(gateway) as smtp:
        assert smtp.mail(BLOCKED_SENDER) == (550, b"5.7.1 Sender not allowed")


def test_refused_recipients_do_not_stop_the_others(gateway: SmtpGateway, parts: Parts) -> None:
    with session(gateway) as smtp:
        assert smtp.mail(SENDER)[0] == 250
        assert smtp.rcpt(PATIENT)[0] == 250
        assert smtp.rcpt(OPPOSED)[0] == 550
        assert smtp.rcpt("second@patient.mssante.fr")[0] == 250
        _, envelope, mail = queued(parts, smtp.data(message()))
    assert [r.address for r in envelope.recipients] == [PATIENT, "second@patient.mssante.fr"]
    trace = mail.split(b"\r\nFrom: ", 1)[0]
    assert b" for <" not in trace and b"patient.mssante.fr" not in trace, "no recipient in a shared trace"


def test_recipient_limit_is_452(gateway_factory: Callable[..., SmtpGateway], parts: Parts) -> None:
    gateway = gateway_factory(max_recipients=2)
    with session(gateway) as smtp:
        assert smtp.mail(SENDER)[0] == 250
        assert smtp.rcpt(PATIENT)[0] == 250
        assert smtp.rcpt("second@patient.mssante.fr")[0] == 250
        code, text = smtp.rcpt("third@patient.mssante.fr")
        assert (code, text[:5]) == (452, b"4.5.3")
        _, envelope, _ = queued(parts, smtp.data(message()))
    assert len(envelope.recipients) == 2


def test_oversized_message_is_552(gateway_factory: Callable[..., SmtpGateway], parts: Parts) -> None:
    gateway = gateway_factory(max_message_bytes=10_000)
    with session(gateway) as smtp:
        assert smtp.esmtp_features["size"] == "10000"
        code, text = smtp.mail(SENDER, ["SIZE=20000"])
        assert (code, text[:5]) == (552, b"5.3.4")
        assert smtp.mail(SENDER, ["SIZE=9000"])[0] == 250
        assert smtp.rcpt(PATIENT)[0] == 250
        code, text = smtp.data(message(body_bytes=20_000))
    assert (code, text[:5]) == (552, b"5.3.4")
    assert pending(parts.index) == []


def test_mail_loop_is_554_5_4_6_above_max_hops(gateway: SmtpGateway, parts: Parts) -> None:
    with session(gateway) as smtp:
        code, text = send(smtp, body=message(received=31))
        assert (code, text[:5]) == (554, b"5.4.6")
        _, _, mail = queued(parts, send(smtp, body=message(received=30)))
    assert mail.count(b"\nReceived: ") + mail.startswith(b"Received: ") == 31


# -- durability -----------------------------------------------------------------------------------------


def test_object_store_down_still_250_and_the_spooled_mail_is_accepted_once_s3_is_back(
        seaweed_factory: Callable[[], Any], index: SqlIndex, bus_publisher: KombuPublisher,
        gateway_factory: Callable[..., SmtpGateway]) -> None:
    # Given a gateway whose spool drains into an S3 server the test can kill
    server = seaweed_factory()
    store = store_on(server, timeout_s=2.0)
    intake = Intake(store=store, index=index, publisher=bus_publisher)
    gateway = gateway_factory(intake=intake)
    body = message()
    server.kill()
    # When a message comes while S3 is down
    with session(gateway) as smtp:
        reply = send(smtp, body=body)
    # Then the sender gets its 250 (the mail is on disk in the spool) and nothing reached the index yet
    assert reply[0] == 250
    time.sleep(0.5)
    assert pending(index) == []
    # And once S3 is back, the drain hands it to intake under the id the 250 named, once
    server.start()
    record, _, mail = queued(Parts(store=store, index=index, publisher=bus_publisher, intake=intake), reply)
    assert mail.endswith(body) and [r.submission_id for r in pending(index)] == [record.submission_id]


def test_spool_over_its_backlog_limit_is_452_4_3_1(
        seaweed_factory: Callable[[], Any], index: SqlIndex, bus_publisher: KombuPublisher,
        gateway_factory: Callable[..., SmtpGateway]) -> None:
    # Given a spool that may hold 20 KB undrained, and a drain stuck behind a dead S3
    server = seaweed_factory()
    intake = Intake(store=store_on(server, timeout_s=1.0), index=index, publisher=bus_publisher)
    server.kill()
    gateway = gateway_factory(intake=intake, spool_bytes=20_000)
    with session(gateway) as smtp:
        # When mail keeps coming
        replies = [send(smtp, body=message(body_bytes=8_000)) for _ in range(3)]
        code, text = smtp.mail(SENDER)[0], b""
        assert code == 250 and smtp.rcpt(PATIENT)[0] == 250
        code, text = smtp.data(message(body_bytes=8_000))
    # Then what fits is taken, and the rest is told to come back later: 452 4.3.1
    assert [r[0] for r in replies] == [250, 250, 250]
    assert (code, text[:5]) == (452, b"4.3.1")


def test_start_raises_when_the_port_is_taken(gateway: SmtpGateway,
                                             gateway_factory: Callable[..., SmtpGateway]) -> None:
    with pytest.raises(OSError):
        gateway_factory(port=gateway.port)
    gateway.stop()
    gateway.stop()  # idempotent


# -- development certificate ----------------------------------------------------------------------------


def test_dev_certificate_is_made_once_private_and_serves_starttls(
        tmp_path: Path, parts: Parts, admission: TableAdmission) -> None:
    cert, key = make_dev_certificate(tmp_path / "tls", "localhost")
    first = cert.read_bytes()
    assert make_dev_certificate(tmp_path / "tls", "localhost") == (cert, key) and cert.read_bytes() == first
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    client = ssl.create_default_context(cafile=str(cert))
    spool = SpoolWriter(tmp_path / "spool")
    spool.start()
    with SmtpGateway(spool=spool, admission=admission, authenticator=Authenticator([]), port=0,
                     hostname="localhost", cert_path=cert, key_path=key) as gateway, \
            smtplib.SMTP("localhost", gateway.port, timeout=30) as smtp:
        smtp.starttls(context=client)
        assert smtp.ehlo()[0] == 250 and "auth" in smtp.esmtp_features
