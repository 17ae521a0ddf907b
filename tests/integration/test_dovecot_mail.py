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
from pathlib import Path

import aioimaplib
import pytest

from connectors.inbound.imap import REJECTED_KEYWORD, ImapIntake, mail_acceptor
from connectors.outbound.lmtp import LmtpDelivery
from hub.bus import open_connection
from hub.bus.kombu_bus import KombuPublisher, declare
from hub.delivery import Outcome
from hub.envelope import BlobRef
from hub.errors import NotFound, StoreUnavailable
from hub.intake import Intake
from hub.mailqueue import unpack
from hub.retry import RetryPolicy
from hub.topology import Topology
from storage.index import SqlIndex
from storage.objects import MinioBlobStore
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


@pytest.fixture
def hub_side(blob_store: MinioBlobStore, sqlite_url: str, sqlite_bus_url: str) -> Iterator[HubSide]:
    """A real intake: SeaweedFS objects, SQLite index, SQLite bus with a declared topology."""
    topology = Topology(prefix=f"imap-{uuid.uuid4().hex[:10]}")
    with open_connection(sqlite_bus_url) as connection:
        declare(connection, topology)
    index = SqlIndex.connect(sqlite_url)
    index.migrate()
    publisher = KombuPublisher(open_connection(sqlite_bus_url), topology, pool_size=2)
    yield HubSide(Intake(store=blob_store, index=index, publisher=publisher), index, blob_store)
    publisher.close()
    index.dispose()


class Acceptor:
    """The accept function the composition root would pass, recording calls and failing on demand."""

    def __init__(self, hub: HubSide, mailbox: str, *, hub_up: threading.Event | None = None,
                 before_return: Callable[[], None] | None = None) -> None:
        self._accept = mail_acceptor(hub.intake, recipient=mailbox, producer="imap-test")
        self.hub_up = hub_up
        self.before_return = before_return
        self.calls: list[bytes] = []
        self.submissions: list[str] = []

    def __call__(self, raw: bytes) -> str:
        self.calls.append(raw)
        if self.hub_up is not None and not self.hub_up.is_set():
            raise StoreUnavailable("object store down (test)")
        submission = self._accept(raw)
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


def imap_intake(dovecot: Dovecot, user: str, accept: Callable[[bytes], str], **options: object) -> ImapIntake:
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

    def accept(raw: bytes) -> str:
        if b"Subject: refused" in raw:
            raise NotFound("refused for good (test)")
        return good(raw)

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
