"""Local mailboxes on a real Dovecot: LMTP delivery (connectors.outbound.lmtp) and the IMAP intake
(connectors.inbound.imap) feeding a real hub intake (SeaweedFS, SQLite index, SQLite bus).

Every test uses its own mailbox address, so tests never see each other's mail.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aioimaplib
import pytest
import sqlalchemy as sa

from connectors.inbound.imap import REJECTED_KEYWORD, ImapIntake, imap_submission_id, mail_acceptor
from connectors.outbound.lmtp import LmtpDelivery, stamp
from connectors.outbound.relay import SmtpRelay
from hub.bus import open_connection
from hub.bus.kombu_bus import KombuPublisher, declare
from hub.delivery import Outcome
from hub.envelope import BlobRef, Envelope, Source
from hub.errors import NotFound, StoreUnavailable
from hub.intake import ClaimCheck, Intake, new_submission_id
from hub.mailqueue import MAIL_CONTENT_TYPE, SmtpEnvelope, SmtpRecipient, pack, unpack
from hub.records import DeliveryRecord, DeliveryState
from hub.retry import RetryPolicy
from hub.topology import Topology
from pipelines.mail.core.mss import MssRules
from pipelines.mail.outbound import OutboundPipeline, OutboundPorts
from pipelines.mail.reporting import ReportSender
from storage.memory.bus import MemoryPublisher
from storage.objects import MinioBlobStore
from storage.sql.index import SqlIndex
from storage.sql.mailbox import SqlMailbox
from tests.fixtures_mail import Dovecot
from tests.services import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FAST = RetryPolicy(max_attempts=64, base_delay_s=0.2, max_delay_s=1.0)


def message(n: int, *, subject: str = "Compte rendu") -> bytes:
    return (f"From: Dr A <dr.a@hopital.test.mssante.fr>\r\nTo: pharma@org.test.mssante.fr\r\n"
            f"Subject: {subject} {n}\r\nMessage-ID: <{uuid.uuid4().hex}@test>\r\n\r\n"
            f"Corps du message {n} (résultats)\r\n.ligne qui commence par un point\r\nfin\r\n").encode()


def deliver(dovecot: Dovecot, raw: bytes, *recipients: str) -> None:
    results = LmtpDelivery(dovecot.host, dovecot.lmtp_port, timeout_s=10).deliver(raw, "dr.a@hopital.fr",
                                                                                   list(recipients))
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * len(recipients), results


@dataclass(frozen=True)
class Stored:
    uid: int
    flags: frozenset[str]
    raw: bytes


async def _read_mailbox(dovecot: Dovecot, user: str) -> list[Stored]:
    client = aioimaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=10)
    await client.wait_hello_from_server()
    assert (await client.login(user, dovecot.password)).result == "OK"
    assert (await client.select("INBOX")).result == "OK"
    found = await client.uid_search("ALL", charset=None)
    stored = []
    for uid in (int(t) for t in found.lines[0].split()):
        response = await client.uid("fetch", str(uid), "(UID FLAGS BODY.PEEK[])")
        head = next(line for line in response.lines if isinstance(line, bytes) and b"FETCH" in line)
        flags = re.findall(rb"FLAGS \(([^)]*)\)", head)[0].decode().split()
        raw = next(bytes(line) for line in response.lines if isinstance(line, bytearray))
        stored.append(Stored(uid, frozenset(flags), raw))
    await client.logout()
    return stored


def read_mailbox(dovecot: Dovecot, user: str) -> list[Stored]:
    """Every message of `user`'s INBOX, read with BODY.PEEK[] (so reading changes no flag)."""
    return asyncio.run(_read_mailbox(dovecot, user))


def wait_until(condition: Callable[[], bool], *, timeout_s: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def doveadm(dovecot: Dovecot, *args: str) -> str:
    done = subprocess.run(["doveadm", "-c", str(dovecot.config), *args], capture_output=True, text=True,
                          timeout=10, check=True)
    return done.stdout


def kick(dovecot: Dovecot, user: str) -> None:
    """Close every IMAP connection of `user` (server side), and wait until they are gone."""
    doveadm(dovecot, "kick", user)
    wait_until(lambda: user not in doveadm(dovecot, "who", user), what="kicked sessions to end")


# ---- LMTP delivery -----------------------------------------------------------------------------------


def test_lmtp_delivery_is_read_back_byte_for_byte_over_imap(dovecot: Dovecot) -> None:
    # Given two organisation mailboxes
    first, second = (f"pharma-{uuid.uuid4().hex[:12]}@{dovecot.domain}" for _ in range(2))
    raw = message(1)

    # When one message is delivered to both in one LMTP transaction
    results = LmtpDelivery(dovecot.host, dovecot.lmtp_port, timeout_s=10).deliver(raw, "dr.a@hopital.fr",
                                                                                   [first, second])

    # Then each recipient has its own 2xx reply, and each mailbox holds the exact bytes, unread
    assert [(r.address, r.outcome, r.reply.code, r.reply.status) for r in results] == [
        (first, Outcome.DELIVERED, 250, "2.0.0"), (second, Outcome.DELIVERED, 250, "2.0.0")]
    assert all(r.remote_host == dovecot.host for r in results)
    for user in (first, second):
        [stored] = read_mailbox(dovecot, user)
        assert stored.raw.endswith(raw)  # Dovecot only prepends Return-Path and Received
        assert stored.raw.split(b"\r\n\r\n", 1)[1] == raw.split(b"\r\n\r\n", 1)[1]
        assert stored.raw.startswith(b"Return-Path: <dr.a@hopital.fr>\r\n")
        assert "\\Seen" not in stored.flags


def test_lmtp_bare_line_endings_are_sent_as_crlf(dovecot: Dovecot, mailbox_address: str) -> None:
    deliver(dovecot, b"Subject: bare endings\n\nline 1\nline 2\rline 3\n", mailbox_address)
    [stored] = read_mailbox(dovecot, mailbox_address)
    assert stored.raw.endswith(b"Subject: bare endings\r\n\r\nline 1\r\nline 2\r\nline 3\r\n")


def test_lmtp_unknown_domain_and_bad_addresses_are_permanent(dovecot: Dovecot, mailbox_address: str) -> None:
    # Given a known mailbox, an address of a domain Dovecot has no mailboxes for, and malformed addresses
    recipients = [f"someone@unknown-{uuid.uuid4().hex[:8]}.example", mailbox_address, "no-domain", "user@"]

    # When they share one transaction
    results = LmtpDelivery(dovecot.host, dovecot.lmtp_port, timeout_s=10).deliver(message(1), "", recipients)

    # Then Dovecot refuses the unknown ones at RCPT (550 5.1.1: only listed domains have mailboxes;
    # a static userdb with allow_all_users=yes would have said 250), the malformed one by syntax
    # (501 5.5.4), and the known mailbox still gets the message
    assert [(r.outcome, r.reply.code, r.reply.status) for r in results] == [
        (Outcome.PERMANENT, 550, "5.1.1"), (Outcome.DELIVERED, 250, "2.0.0"),
        (Outcome.PERMANENT, 550, "5.1.1"), (Outcome.PERMANENT, 501, "5.5.4")]
    assert len(read_mailbox(dovecot, mailbox_address)) == 1


def test_lmtp_closed_port_makes_every_recipient_transient() -> None:
    results = LmtpDelivery("127.0.0.1", free_port(), timeout_s=2).deliver(message(1), "", ["a@x.fr", "b@x.fr"])
    assert [(r.outcome, r.reply.code, r.reply.status) for r in results] == [(Outcome.TRANSIENT, 451, "4.4.1")] * 2


def test_lmtp_silent_server_times_out_as_transient() -> None:
    # Given a server that accepts the connection and never says anything
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        started = time.monotonic()
        results = LmtpDelivery("127.0.0.1", port, timeout_s=0.5).deliver(message(1), "", ["a@x.fr"])
    assert time.monotonic() - started < 5
    assert [(r.outcome, r.reply.code) for r in results] == [(Outcome.TRANSIENT, 451)]


def test_lmtp_connection_dropped_at_data_is_transient_for_accepted_recipients_only() -> None:
    # Given a server that accepts one RCPT, refuses another, then hangs up when DATA starts
    with socket.create_server(("127.0.0.1", 0)) as server:
        thread = threading.Thread(target=_drop_at_data, args=(server,), daemon=True)
        thread.start()
        results = LmtpDelivery("127.0.0.1", server.getsockname()[1], timeout_s=5).deliver(
            message(1), "", ["ok@x.fr", "gone@x.fr"])
        thread.join(5)
    assert [(r.outcome, r.reply.code, r.reply.status) for r in results] == [
        (Outcome.TRANSIENT, 451, "4.4.2"), (Outcome.PERMANENT, 550, "5.1.1")]


def _drop_at_data(server: socket.socket) -> None:
    conn, _ = server.accept()
    with conn, conn.makefile("rb") as lines:
        conn.sendall(b"220 fake LMTP\r\n")
        for line in lines:
            verb = line[:4].upper()
            if verb == b"LHLO":
                conn.sendall(b"250-fake\r\n250 PIPELINING\r\n")
            elif verb == b"MAIL" or line.upper().startswith(b"RCPT TO:<OK"):
                conn.sendall(b"250 2.1.0 OK\r\n")
            elif verb == b"RCPT":
                conn.sendall(b"550 5.1.1 no such user\r\n")
            else:
                return  # DATA: hang up


@pytest.fixture
def short_dir() -> Iterator[str]:
    """A folder with a short path (Dovecot's sockets live there: Unix socket paths are limited to 107 bytes)."""
    folder = tempfile.mkdtemp(prefix="meshub-dv-", dir="/tmp")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_lmtp_to_a_stopped_dovecot_is_transient(dovecot: Dovecot, short_dir: str, mailbox_address: str) -> None:
    # Given a second, private Dovecot started by the project's script, on free ports
    env = {"MESHUB_DOVECOT_IMAP_PORT": str(free_port()), "MESHUB_DOVECOT_LMTP_PORT": str(free_port()),
           "MESHUB_DOVECOT_DOMAINS": dovecot.domain, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    script, folder = str(ROOT / "scripts" / "dovecot.sh"), short_dir
    lmtp = LmtpDelivery("127.0.0.1", int(env["MESHUB_DOVECOT_LMTP_PORT"]), timeout_s=5)
    subprocess.run([script, "start", folder], env=env, check=True, timeout=60)
    try:
        assert subprocess.run([script, "status", folder], env=env, timeout=10).returncode == 0
        assert lmtp.deliver(message(1), "", [mailbox_address])[0].outcome is Outcome.DELIVERED
    finally:
        # When it stops
        subprocess.run([script, "stop", folder], env=env, check=True, timeout=30)

    # Then delivery is transient (the caller retries later), and status says it is down
    assert subprocess.run([script, "status", folder], env=env, timeout=10).returncode == 1
    [result] = lmtp.deliver(message(2), "", [mailbox_address])
    assert (result.outcome, result.reply.code, result.reply.status) == (Outcome.TRANSIENT, 451, "4.4.1")


# ---- IMAP intake -------------------------------------------------------------------------------------


@dataclass
class HubSide:
    intake: Intake
    index: SqlIndex
    store: MinioBlobStore
    publisher: KombuPublisher


@pytest.fixture
def hub_side(blob_store: MinioBlobStore, sqlite_url: str, sqlite_bus_url: str) -> Iterator[HubSide]:
    """A real intake: SeaweedFS objects, SQLite index, SQLite bus with a declared topology."""
    topology = Topology(prefix=f"imap-{uuid.uuid4().hex[:10]}")
    with open_connection(sqlite_bus_url) as connection:
        declare(connection, topology)
    index = SqlIndex.connect(sqlite_url)
    index.migrate()
    publisher = KombuPublisher(open_connection(sqlite_bus_url), topology, pool_size=2)
    yield HubSide(Intake(store=blob_store, index=index, publisher=publisher), index, blob_store, publisher)
    publisher.close()
    index.dispose()


class Acceptor:
    """The accept function the composition root would pass, recording calls and failing on demand."""

    def __init__(self, hub: HubSide, mailbox: str, *, hub_up: threading.Event | None = None,
                 before_return: Callable[[], None] | None = None, intake: Intake | None = None) -> None:
        self._accept = mail_acceptor(intake or hub.intake, recipient=mailbox, producer="imap-test")
        self.hub_up = hub_up
        self.before_return = before_return
        self.calls: list[bytes] = []
        self.submissions: list[str] = []

    def __call__(self, raw: bytes, submission_id: str) -> str:
        self.calls.append(raw)
        if self.hub_up is not None and not self.hub_up.is_set():
            raise StoreUnavailable("object store down (test)")
        submission = self._accept(raw, submission_id)
        self.submissions.append(submission)
        if self.before_return is not None:
            self.before_return()
        return submission


@contextmanager
def running(intake: ImapIntake) -> Iterator[ImapIntake]:
    """Run the intake in a thread, as the composition root does (Hub.spawn -> run_blocking)."""
    stop = threading.Event()
    thread = threading.Thread(target=intake.run_blocking, args=(stop,), name="imap-test", daemon=True)
    thread.start()
    try:
        yield intake
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive(), "the IMAP intake did not stop"


def imap_intake(dovecot: Dovecot, user: str, accept: Callable[[bytes, str], str], **options: object) -> ImapIntake:
    return ImapIntake(dovecot.host, dovecot.imap_port, user, dovecot.password, accept=accept,
                      timeout_s=5, backoff=FAST, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("use_idle", [True, False], ids=["idle", "polling"])
def test_imap_intake_accepts_each_message_once_then_flags_it_seen(
        dovecot: Dovecot, mailbox_address: str, hub_side: HubSide, use_idle: bool) -> None:
    # Given one message waiting in an organisation mailbox
    sent = [message(n) for n in range(3)]
    deliver(dovecot, sent[0], mailbox_address)
    accept = Acceptor(hub_side, mailbox_address)
    intake = imap_intake(dovecot, mailbox_address, accept, use_idle=use_idle, poll_s=30.0 if use_idle else 0.3)

    with running(intake):
        # When the intake runs and two more arrive (with IDLE, well before the 30 s poll interval)
        wait_until(lambda: intake.stats.accepted == 1, what="the waiting message")
        deliver(dovecot, sent[1], mailbox_address)
        deliver(dovecot, sent[2], mailbox_address)
        wait_until(lambda: intake.stats.accepted == 3, timeout_s=10, what="the new messages")

    # Then each was accepted exactly once, with its exact bytes stored as a queued mail for the mailbox
    assert len(accept.calls) == 3 and len(set(accept.submissions)) == 3
    for submission, original in zip(accept.submissions, sent, strict=True):
        record = hub_side.index.submission(submission)
        assert record is not None and record.source_kind == "imap"
        packed = hub_side.store.get(BlobRef(bucket=hub_side.store.bucket, key=record.blob_key,
                                            sha256=record.sha256, size=record.size))
        envelope, raw = unpack(packed)
        assert raw.endswith(original)
        assert envelope.mail_from == "dr.a@hopital.fr"
        assert [r.address for r in envelope.recipients] == [mailbox_address]
    # And every message is \Seen on the server
    assert [m.flags >= {"\\Seen"} for m in read_mailbox(dovecot, mailbox_address)] == [True] * 3


def test_imap_intake_leaves_message_unseen_while_the_hub_is_down(
        dovecot: Dovecot, mailbox_address: str, hub_side: HubSide) -> None:
    # Given two messages, and a hub whose object store is down
    sent = [message(1), message(2)]
    for raw in sent:
        deliver(dovecot, raw, mailbox_address)
    hub_up = threading.Event()
    accept = Acceptor(hub_side, mailbox_address, hub_up=hub_up)
    intake = imap_intake(dovecot, mailbox_address, accept, poll_s=30.0)

    with running(intake):
        # When the intake tries (and retries) to accept them
        wait_until(lambda: intake.stats.deferred >= 2, what="two failed attempts")

        # Then each pass stopped at the first refusal, and both messages stay unseen on the server
        assert all(raw.endswith(sent[0]) for raw in accept.calls)
        assert [m.flags & {"\\Seen"} for m in read_mailbox(dovecot, mailbox_address)] == [frozenset()] * 2

        # And once the store is back, a later pass accepts each, once
        hub_up.set()
        wait_until(lambda: intake.stats.accepted == 2, what="the retried messages")
    assert len(accept.submissions) == 2
    assert all(hub_side.index.submission(s) is not None for s in accept.submissions)
    assert all("\\Seen" in m.flags for m in read_mailbox(dovecot, mailbox_address))


def test_imap_intake_flags_a_permanently_refused_message_and_moves_on(
        dovecot: Dovecot, mailbox_address: str, hub_side: HubSide) -> None:
    # Given a message the hub refuses for good, then a good one
    deliver(dovecot, message(1, subject="refused"), mailbox_address)
    deliver(dovecot, message(2), mailbox_address)
    good = Acceptor(hub_side, mailbox_address)

    def accept(raw: bytes, submission_id: str) -> str:
        if b"Subject: refused" in raw:
            raise NotFound("refused for good (test)")
        return good(raw, submission_id)

    intake = imap_intake(dovecot, mailbox_address, accept, poll_s=30.0)
    with running(intake):
        wait_until(lambda: intake.stats.accepted == 1 and intake.stats.rejected == 1, what="both messages")
        time.sleep(0.5)  # a refused message must not be tried again
    assert (intake.stats.rejected, intake.stats.deferred, len(good.calls)) == (1, 0, 1)
    refused, taken = read_mailbox(dovecot, mailbox_address)
    assert refused.flags >= {"\\Seen", REJECTED_KEYWORD}
    assert "\\Seen" in taken.flags and REJECTED_KEYWORD not in taken.flags


def test_imap_intake_reconnects_after_the_server_drops_the_connection(
        dovecot: Dovecot, mailbox_address: str, hub_side: HubSide) -> None:
    # Given an intake idling on an empty mailbox
    accept = Acceptor(hub_side, mailbox_address)
    intake = imap_intake(dovecot, mailbox_address, accept, poll_s=30.0)
    with running(intake):
        wait_until(lambda: intake.stats.sessions == 1, what="the first session")
        time.sleep(0.3)  # let it enter IDLE

        # When the server kicks it out
        kick(dovecot, mailbox_address)

        # Then it logs in again and takes new mail as before
        wait_until(lambda: intake.stats.sessions == 2, what="a new session")
        deliver(dovecot, message(1), mailbox_address)
        wait_until(lambda: intake.stats.accepted == 1, timeout_s=10, what="mail after the reconnect")
    assert len(accept.calls) == 1


def test_imap_intake_keeps_retrying_an_unreachable_server_and_stops_promptly(hub_side: HubSide) -> None:
    accept = Acceptor(hub_side, "nobody@org.test.mssante.fr")
    intake = ImapIntake("127.0.0.1", free_port(), "nobody@org.test.mssante.fr", "x", accept=accept, timeout_s=1,
                        backoff=RetryPolicy(max_attempts=64, base_delay_s=0.05, max_delay_s=0.2))
    started = time.monotonic()
    with running(intake):
        time.sleep(1.0)
    assert time.monotonic() - started < 3
    assert (intake.stats.sessions, accept.calls) == (0, [])


def test_imap_intake_does_not_accept_twice_when_the_connection_drops_before_the_seen_flag(
        dovecot: Dovecot, mailbox_address: str, hub_side: HubSide) -> None:
    # Given a message, and a hub whose accept returns only after the IMAP connection was cut
    deliver(dovecot, message(1), mailbox_address)
    deliver(dovecot, message(2), mailbox_address)
    cut = threading.Event()

    def cut_once() -> None:
        if not cut.is_set():
            cut.set()
            kick(dovecot, mailbox_address)

    accept = Acceptor(hub_side, mailbox_address, before_return=cut_once)
    intake = imap_intake(dovecot, mailbox_address, accept, poll_s=30.0)

    # When the intake runs: the first \Seen store fails with the connection, and it reconnects
    with running(intake):
        wait_until(lambda: intake.stats.accepted == 2, what="both messages")

    # Then each message was accepted exactly once, and both end up \Seen
    assert intake.stats.sessions >= 2
    assert len(accept.calls) == 2 and len(set(accept.submissions)) == 2
    assert all("\\Seen" in m.flags for m in read_mailbox(dovecot, mailbox_address))


# ---- exactly once: LMTP redelivery (Sieve `duplicate`) -------------------------------------------------


@pytest.fixture(scope="module")
def sieve_dovecot(dovecot: Dovecot) -> Iterator[Dovecot]:
    """A private Dovecot that scripts/dovecot.sh renders from config/dovecot/ as it is now (sieve_before
    meshub-delivery.sieve included), on free ports: the shared instance may run an older config."""
    folder = Path(tempfile.mkdtemp(prefix="meshub-sv-", dir="/tmp"))
    env = {"MESHUB_DOVECOT_IMAP_PORT": str(free_port()), "MESHUB_DOVECOT_LMTP_PORT": str(free_port()),
           "MESHUB_DOVECOT_DOMAINS": dovecot.domain, "MESHUB_DOVECOT_PASSWORD": dovecot.password,
           "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    script = str(ROOT / "scripts" / "dovecot.sh")
    subprocess.run([script, "start", str(folder)], env=env, check=True, timeout=120)
    try:
        yield Dovecot(host=dovecot.host, imap_port=int(env["MESHUB_DOVECOT_IMAP_PORT"]),
                      lmtp_port=int(env["MESHUB_DOVECOT_LMTP_PORT"]), password=dovecot.password,
                      base_dir=folder, domain=dovecot.domain)
    finally:
        subprocess.run([script, "stop", str(folder)], env=env, check=False, timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def fresh_mailbox(dovecot: Dovecot) -> str:
    return f"pharma-{uuid.uuid4().hex[:16]}@{dovecot.domain}"


def test_stamp_puts_one_delivery_header_first_and_drops_any_other() -> None:
    forged = (b"X-Meshub-Delivery: forged\r\nSubject: a\r\nx-meshub-delivery :\r\n folded\r\n\r\n"
              b"X-Meshub-Delivery: body\r\n")
    assert stamp(forged, "abc") == b"X-Meshub-Delivery: abc\r\nSubject: a\r\n\r\nX-Meshub-Delivery: body\r\n"
    assert stamp(forged, "") == b"Subject: a\r\n\r\nX-Meshub-Delivery: body\r\n"
    with pytest.raises(ValueError):
        stamp(b"Subject: a\r\n\r\n", "abc\r\nBcc: someone@else.fr")


def test_lmtp_redelivery_with_the_same_delivery_id_files_one_copy_per_mailbox(sieve_dovecot: Dovecot) -> None:
    # Given two mailboxes, and a message that already carries a (forged) delivery header
    first, second = fresh_mailbox(sieve_dovecot), fresh_mailbox(sieve_dovecot)
    raw = b"X-Meshub-Delivery: forged\r\n" + message(1)
    lmtp = LmtpDelivery(sieve_dovecot.host, sieve_dovecot.lmtp_port, timeout_s=10)
    submission = uuid.uuid4().hex

    # When the hub delivers it, then delivers it again with the same id (its first 250s were lost),
    # and once more to the first mailbox only
    for recipients in ([first, second], [first, second], [first]):
        results = lmtp.deliver(raw, "dr.a@hopital.fr", recipients, delivery_id=submission)
        # Then Dovecot says 250 every time (the duplicate is discarded, not refused)
        assert [(r.outcome, r.reply.code) for r in results] == [(Outcome.DELIVERED, 250)] * len(recipients)

    # And each mailbox holds one copy, stamped with our id only
    for user in (first, second):
        [stored] = read_mailbox(sieve_dovecot, user)
        assert stored.raw.count(b"X-Meshub-Delivery:") == 1
        assert f"X-Meshub-Delivery: {submission}\r\n".encode() in stored.raw
        assert stored.raw.endswith(message_body(raw))

    # And another mail (another id) to the same mailbox is filed as usual
    lmtp.deliver(raw, "dr.a@hopital.fr", [first], delivery_id=uuid.uuid4().hex)
    assert len(read_mailbox(sieve_dovecot, first)) == 2


def message_body(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[1]


class Killed(Exception):
    """Stands for the hub process being killed at that point (raised by a test double)."""


class DiesAfterLmtp:
    """SqlMailbox whose first "delivered" record never happens: the hub died right after LMTP said 250."""

    def __init__(self, mailboxes: SqlMailbox) -> None:
        self._mailboxes = mailboxes
        self.died = False

    def record_delivery(self, delivery: DeliveryRecord) -> None:
        if delivery.state is DeliveryState.DELIVERED and not self.died:
            self.died = True
            raise Killed("after LMTP 250, before recording it")
        self._mailboxes.record_delivery(delivery)

    def __getattr__(self, name: str) -> object:
        return getattr(self._mailboxes, name)


def test_outbound_redelivery_after_a_crash_past_lmtp_250_files_one_copy(
        sieve_dovecot: Dovecot, hub_side: HubSide) -> None:
    # Given a queued mail for a local organisational mailbox, on the outbound queue
    pharmacy = fresh_mailbox(sieve_dovecot)
    raw = message(1)
    smtp = SmtpEnvelope(mail_from="dr.a@hopital.mssante.fr", recipients=(SmtpRecipient(pharmacy),),
                        received_at=datetime.now(UTC).isoformat())
    ref = hub_side.store.put(pack(smtp, raw), kind="mail", content_type=MAIL_CONTENT_TYPE)
    envelope = Envelope(submission_id=new_submission_id(), received_at=datetime.now(UTC),
                        source=Source(kind="smtp", producer="test"), raw=ref, content_type=MAIL_CONTENT_TYPE)
    mailboxes = DiesAfterLmtp(SqlMailbox.beside(hub_side.index))
    ports = OutboundPorts(store=hub_side.store, mailboxes=mailboxes, outbound=MemoryPublisher(),  # type: ignore[arg-type]
                          rules=MssRules(local_domains=(sieve_dovecot.domain,), org_mailboxes=(pharmacy,)),
                          reports=ReportSender(ClaimCheck(store=hub_side.store, index=hub_side.index),
                                               hub_side.publisher, hostname="hub.test", domain="hub.test"),
                          relay=SmtpRelay(helo_name="hub.test", timeout_s=5), next_hops={},
                          local=LmtpDelivery(sieve_dovecot.host, sieve_dovecot.lmtp_port, timeout_s=10))
    pipeline = OutboundPipeline(ports)

    # When the hub is killed after Dovecot's 250 but before it recorded "delivered"
    with pytest.raises(Killed):
        pipeline(envelope)
    assert mailboxes.deliveries(envelope.submission_id) == []  # nothing recorded: the bus redelivers
    # And the redelivered envelope goes through the real LMTP path again
    pipeline(envelope)

    # Then the mailbox holds exactly one copy, and the recipient is recorded as delivered
    [stored] = read_mailbox(sieve_dovecot, pharmacy)
    assert stored.raw.endswith(message_body(raw))
    assert f"X-Meshub-Delivery: {envelope.submission_id}".encode() in stored.raw
    assert [(d.recipient, d.state) for d in mailboxes.deliveries(envelope.submission_id)] == [
        (pharmacy, DeliveryState.DELIVERED)]
    # And a third delivery of the same envelope sends nothing at all (already recorded)
    pipeline(envelope)
    assert len(read_mailbox(sieve_dovecot, pharmacy)) == 1


# ---- exactly once: IMAP intake after a crash before \Seen ---------------------------------------------


def submissions_count(index: SqlIndex) -> int:
    with index.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM submissions")).scalar_one())


class CountingPublisher:
    def __init__(self, inner: KombuPublisher) -> None:
        self._inner = inner
        self.published: list[str] = []

    def publish(self, envelope: Envelope, *, delay_s: float = 0.0) -> None:
        self._inner.publish(envelope, delay_s=delay_s)
        self.published.append(envelope.submission_id)


@pytest.mark.parametrize("processed", [True, False], ids=["processed-meanwhile", "still-pending"])
def test_imap_intake_restarted_after_a_crash_before_seen_makes_no_second_submission(
        dovecot: Dovecot, mailbox_address: str, hub_side: HubSide, processed: bool) -> None:
    # Given a message in the polled mailbox, and a hub whose intake process dies right after accepting it
    deliver(dovecot, message(1), mailbox_address)
    publisher = CountingPublisher(hub_side.publisher)
    intake = Intake(store=hub_side.store, index=hub_side.index, publisher=publisher)
    taken: list[str] = []

    def dies_after_accept(raw: bytes, submission_id: str) -> str:
        if not taken:
            taken.append(mail_acceptor(intake, recipient=mailbox_address, producer="imap-test")(raw, submission_id))
        raise Killed("after accept, before \\Seen")

    before = submissions_count(hub_side.index)
    first = imap_intake(dovecot, mailbox_address, dies_after_accept, poll_s=30.0)
    with running(first):
        wait_until(lambda: bool(taken), what="the first accept")
    [stored] = read_mailbox(dovecot, mailbox_address)
    assert "\\Seen" not in stored.flags  # the crash left it unseen
    record = hub_side.index.submission(taken[0])
    assert record is not None
    if processed:  # the mail pipeline finished it meanwhile
        hub_side.index.complete(Envelope(submission_id=record.submission_id, received_at=record.received_at,
                                         source=Source(kind="imap", producer="imap-test"),
                                         raw=BlobRef(bucket=hub_side.store.bucket, key=record.blob_key,
                                                     sha256=record.sha256, size=record.size),
                                         content_type=MAIL_CONTENT_TYPE))

    # When a new intake process starts and finds it unseen
    accept = Acceptor(hub_side, mailbox_address, intake=intake)
    second = imap_intake(dovecot, mailbox_address, accept, poll_s=30.0)
    with running(second):
        wait_until(lambda: second.stats.accepted == 1, what="the message taken again")

    # Then it is the same submission, recorded once; a processed one is not published again, a pending one
    # is handed on again under the same id (processing is idempotent)
    assert accept.submissions == taken
    assert abs(int(taken[0][:12], 16) / 1000 - time.time()) < 600  # time part: the message's INTERNALDATE
    assert submissions_count(hub_side.index) == before + 1
    assert publisher.published == taken * (1 if processed else 2)
    final = hub_side.index.submission(taken[0])
    assert final is not None and final.final is processed
    # And the message is flagged \Seen, still one copy in the mailbox
    [stored] = read_mailbox(dovecot, mailbox_address)
    assert "\\Seen" in stored.flags


def test_imap_submission_id_names_one_message_for_good() -> None:
    at = datetime(2025, 12, 2, 8, 4, 25, tzinfo=UTC)
    key = {"host": "imap.example.fr", "user": "bal@org.fr", "mailbox": "INBOX", "uidvalidity": 1700000000}
    one = imap_submission_id(**key, uid=7, internal_date=at)  # type: ignore[arg-type]
    assert re.fullmatch(r"[0-9a-f]{32}", one) and one[:12] == f"{int(at.timestamp() * 1000):012x}"
    assert one == imap_submission_id(**{**key, "host": "IMAP.example.fr"}, uid=7, internal_date=at)  # type: ignore[arg-type]
    others = {imap_submission_id(**{**key, name: value}, uid=7, internal_date=at)  # type: ignore[arg-type]
              for name, value in (("user", "x@org.fr"), ("mailbox", "Archives"), ("uidvalidity", 1700000001))}
    others.add(imap_submission_id(**key, uid=8, internal_date=at))  # type: ignore[arg-type]
    assert one not in others and len(others) == 4
    assert re.fullmatch(r"[0-9a-f]{32}", imap_submission_id(**key, uid=7))  # type: ignore[arg-type]
