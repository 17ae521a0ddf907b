"""IMAP intake: take every unseen message of one mailbox into the hub, then mark it \\Seen (aioimaplib).

Owns: one long-lived IMAP session per mailbox (LOGIN, SELECT, UID SEARCH UNSEEN, UID FETCH BODY.PEEK[],
UID STORE), waiting for new mail (IDLE when the server has it, else polling), and reconnecting with
capped exponential backoff whenever the session ends.
Rule 1: a message is flagged \\Seen only after `accept(raw)` returned, so a message is never lost.
Rule 2: a message is one submission, however often it is taken: its submission id derives from where
it lives (host, user, mailbox, UIDVALIDITY, UID; imap_submission_id), and intake takes an id once.  A
process killed between accept returning and the server confirming \\Seen finds the message unseen
after restart and accepts it again: intake returns the submission already recorded (final) or hands
that same submission on again (pending; processing is idempotent), and the message is then flagged.
Within a process, the id of a message accepted but not yet flagged is also kept until its \\Seen store
succeeds, so a reconnect between the two flags it without fetching it again.
Rule 3: `accept` raising a TransientError (hub down) leaves the message unseen and ends the pass (the
other messages wait too); the next pass comes after a backoff.  A PermanentError flags the message
`\\Seen $MeshubRejected`: retrying cannot help; a human finds it with `SEARCH KEYWORD $MeshubRejected`
and clears both flags to have it taken again.  Any other exception is retried like a transient one:
a bug must not lose mail.
Running it: `await ImapIntake(...).run(stop)` inside an event loop, or, from the synchronous composition
root, `hub.spawn("imap-<name>", intake.run_blocking)` (its own thread and event loop, ends when the
hub's stop event is set).  `accept` runs in the loop's default executor, so it may block.
Does not: parse messages beyond the Return-Path header (mail_acceptor), pick adapters, or log
addresses or contents (logs name the server and mailbox folder, and exception class names only:
aioimaplib's exception texts may quote the LOGIN command).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.utils import parseaddr
from enum import Enum
from typing import Any, TypeVar

import aioimaplib  # type: ignore[import-untyped]

from hub.envelope import Source
from hub.errors import PermanentError, TransientError
from hub.intake import Intake
from hub.mailqueue import MAIL_CONTENT_TYPE, SmtpEnvelope, SmtpRecipient, pack
from hub.retry import RetryPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")

REJECTED_KEYWORD = "$MeshubRejected"
DEFAULT_BACKOFF = RetryPolicy(max_attempts=64, base_delay_s=1.0, max_delay_s=60.0)
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_FETCH_LITERAL = re.compile(rb"\d+ FETCH \((.*)\{(\d+)\}$")
_UID = re.compile(rb"\bUID (\d+)\b")
_INTERNALDATE = re.compile(rb'\bINTERNALDATE "([^"]+)"')


class _Take(Enum):
    DONE = "done"  # accepted (or refused for good) and flagged, or gone
    RETRY = "retry"  # this message failed unexpectedly: try it again later, go on with the others
    HUB_DOWN = "hub-down"  # the hub is unavailable: try again later, leave the others for then too


class ImapSessionError(Exception):
    """The server refused a command, or the connection ended: the poller logs it and reconnects."""


@dataclass
class ImapIntakeStats:
    """Counters since start (read them from any thread)."""

    sessions: int = 0  # sessions that reached SELECT
    accepted: int = 0  # messages accepted and flagged \Seen
    deferred: int = 0  # accept attempts that raised a transient error (the message stays unseen)
    rejected: int = 0  # messages flagged $MeshubRejected


class _Session:
    """One connected IMAP session; every call fails fast with ImapSessionError once the connection is lost."""

    def __init__(self, client: Any, lost: asyncio.Event) -> None:
        self.client = client
        self.lost = lost

    async def call(self, awaitable: Awaitable[T], *, stop: asyncio.Event | None = None) -> T | None:
        """The awaitable's result; None if `stop` was set first; ImapSessionError if the connection dropped."""
        task = asyncio.ensure_future(awaitable)
        watchers = [asyncio.ensure_future(self.lost.wait())]
        if stop is not None:
            watchers.append(asyncio.ensure_future(stop.wait()))
        try:
            done, _ = await asyncio.wait({task, *watchers}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for watcher in watchers:
                watcher.cancel()
            if not task.done():
                task.cancel()
        if task in done:
            return task.result()
        if self.lost.is_set():
            raise ImapSessionError("connection lost")
        return None

    async def ok(self, name: str, awaitable: Awaitable[Any]) -> Any:
        """Run an IMAP command; ImapSessionError unless the server answered OK."""
        response = await self.call(awaitable)
        if response is None or response.result != "OK":
            result = "no answer" if response is None else response.result
            raise ImapSessionError(f"{name} failed: {result}")
        return response


class ImapIntake:
    """Polls one mailbox folder and hands each unseen message to `accept(raw, submission_id)`, which
    accepts it under that id (imap_submission_id: the same message always gets the same one) and
    returns the submission id."""

    def __init__(self, host: str, port: int, user: str, password: str, *, mailbox: str = "INBOX",
                 accept: Callable[[bytes, str], str], poll_s: float = 30.0, use_idle: bool = True,
                 ssl_context: ssl.SSLContext | None = None, timeout_s: float = 30.0,
                 backoff: RetryPolicy = DEFAULT_BACKOFF) -> None:
        self._host, self._port = host, port
        self._user, self._password = user, password
        self._mailbox = mailbox
        self._accept = accept
        self._poll_s = poll_s
        self._use_idle = use_idle
        self._ssl_context = ssl_context
        self._timeout_s = timeout_s
        self._backoff = backoff
        self._unflagged: dict[tuple[int, int], str] = {}  # (uidvalidity, uid) -> submission id
        self._retry_round = 0
        self.stats = ImapIntakeStats()

    def __repr__(self) -> str:
        return f"ImapIntake({self._host}:{self._port}/{self._mailbox})"

    def run_blocking(self, stop: threading.Event) -> None:
        """Run in the calling thread (its own event loop) until `stop` is set: the shape Hub.spawn expects."""
        asyncio.run(self._run_until(stop))

    async def _run_until(self, stop: threading.Event) -> None:
        stopped = asyncio.Event()
        runner = asyncio.ensure_future(self.run(stopped))
        while not stop.is_set() and not runner.done():
            await asyncio.sleep(0.2)
        stopped.set()
        await runner

    async def run(self, stop: asyncio.Event) -> None:
        """Take unseen mail until `stop` is set, reconnecting after any failure (never raises for I/O)."""
        failures = 0
        while not stop.is_set():
            sessions = self.stats.sessions
            try:
                await self._session(stop)
            except Exception as exc:  # any failure ends the session only; the loop reconnects
                failures = 0 if self.stats.sessions > sessions else failures
                delay = self._delay(failures)
                failures += 1
                log.warning("%r: session ended (%s: %s), reconnecting in %.1f s", self, type(exc).__name__,
                            exc if isinstance(exc, ImapSessionError) else "-", delay)
                await _sleep(delay, stop)

    def _delay(self, attempt: int) -> float:
        delay = self._backoff.next_delay(min(attempt, self._backoff.max_attempts - 1))
        return self._backoff.max_delay_s if delay is None else delay

    async def _session(self, stop: asyncio.Event) -> None:
        lost = asyncio.Event()
        client = aioimaplib.IMAP4(host=self._host, port=self._port, timeout=self._timeout_s,
                                  conn_lost_cb=lambda _exc: lost.set(), ssl_context=self._ssl_context)
        session = _Session(client, lost)
        try:
            await session.call(client.wait_hello_from_server())
            await session.ok("LOGIN", client.login(self._user, self._password))
            uidvalidity = _uidvalidity(await session.ok("SELECT", client.select(self._mailbox)))
            self.stats.sessions += 1
            idle = self._use_idle and client.has_capability("IDLE")
            log.info("%r: selected (%s)", self, "idle" if idle else f"polling every {self._poll_s:g} s")
            while not stop.is_set():
                taken, deferred = await self._drain(session, uidvalidity, stop)
                if taken and not deferred:
                    continue  # new mail may have come while we worked: search again before waiting
                await self._wait_for_mail(session, stop, idle=idle, deferred=deferred)
        finally:
            await _close(session)

    async def _drain(self, session: _Session, uidvalidity: int, stop: asyncio.Event) -> tuple[int, bool]:
        """Take every unseen message once: (how many were taken, whether some must be retried later).

        The pass ends at the first TransientError: the hub is down, the other messages wait with it."""
        uids = await self._unseen(session)
        self._unflagged = {k: v for k, v in self._unflagged.items() if k[0] == uidvalidity and k[1] in uids}
        taken, deferred = 0, False
        for uid in uids:
            if stop.is_set():
                break
            result = await self._take(session, uidvalidity, uid)
            taken += result is _Take.DONE
            deferred = deferred or result is not _Take.DONE
            if result is _Take.HUB_DOWN:
                break
        self._retry_round = self._retry_round + 1 if deferred else 0
        return taken, deferred

    async def _unseen(self, session: _Session) -> list[int]:
        response = await session.ok("SEARCH", session.client.uid_search("UNSEEN", charset=None))
        return [int(token) for line in response.lines[:-1] for token in bytes(line).split() if token.isdigit()]

    async def _take(self, session: _Session, uidvalidity: int, uid: int) -> _Take:
        """Accept one message and flag it, or say why it stays unseen for a later attempt."""
        key = (uidvalidity, uid)
        if key not in self._unflagged:  # else: accepted before a reconnect, only the flag is missing
            fetched = await self._fetch(session, uid)
            if fetched is None:
                return _Take.DONE  # expunged meanwhile by another client: nothing left to take
            raw, internal_date = fetched
            submission_id = imap_submission_id(host=self._host, user=self._user, mailbox=self._mailbox,
                                               uidvalidity=uidvalidity, uid=uid, internal_date=internal_date)
            try:
                self._unflagged[key] = await asyncio.get_running_loop().run_in_executor(
                    None, self._accept, raw, submission_id)
            except PermanentError as exc:
                await self._flag(session, uid, f"\\Seen {REJECTED_KEYWORD}")
                self.stats.rejected += 1
                log.error("%r: uid %d rejected by the hub (%s), flagged %s", self, uid, type(exc).__name__,
                          REJECTED_KEYWORD)
                return _Take.DONE
            except TransientError as exc:
                self.stats.deferred += 1
                log.warning("%r: uid %d not accepted (%s), will retry", self, uid, type(exc).__name__)
                return _Take.HUB_DOWN
            except Exception as exc:  # a bug must not lose mail: keep the message, retry later
                self.stats.deferred += 1
                log.error("%r: uid %d not accepted (unexpected %s), will retry", self, uid, type(exc).__name__)
                return _Take.RETRY
        await self._flag(session, uid, "\\Seen")
        log.info("%r: uid %d accepted as submission=%s", self, uid, self._unflagged.pop(key))
        self.stats.accepted += 1
        return _Take.DONE

    async def _fetch(self, session: _Session, uid: int) -> tuple[bytes, datetime | None] | None:
        """The message's exact bytes (BODY.PEEK[] leaves \\Seen unset) and its INTERNALDATE, or None if
        it is gone."""
        response = await session.ok("FETCH", session.client.uid("fetch", str(uid), "(UID INTERNALDATE BODY.PEEK[])"))
        found = _literal(response.lines, uid)
        return None if found is None else (found[0], _internal_date(found[1]))

    async def _flag(self, session: _Session, uid: int, flags: str) -> None:
        await session.ok("STORE", session.client.uid("store", str(uid), "+FLAGS.SILENT", f"({flags})"))

    async def _wait_for_mail(self, session: _Session, stop: asyncio.Event, *, idle: bool, deferred: bool) -> None:
        """Until new mail may be there: the retry backoff after a deferral, else IDLE or the poll interval."""
        if deferred:
            await session.call(asyncio.sleep(self._delay(self._retry_round - 1)), stop=stop)
        elif idle:
            await self._idle(session, stop)
        else:
            await session.call(asyncio.sleep(self._poll_s), stop=stop)

    async def _idle(self, session: _Session, stop: asyncio.Event) -> None:
        """IDLE until the server reports EXISTS, poll_s passes, or `stop` is set."""
        client = session.client
        idle: Any = await session.call(asyncio.wait_for(client.idle_start(timeout=self._poll_s), self._timeout_s))
        try:
            await session.call(_until_exists(client, self._poll_s + self._timeout_s), stop=stop)
        finally:
            if client.has_pending_idle() and not session.lost.is_set():
                client.idle_done()
                await session.call(asyncio.wait_for(idle, self._timeout_s))


async def _until_exists(client: Any, timeout_s: float) -> None:
    """Return on EXISTS (new mail) or at the IDLE timeout; ImapSessionError on BYE."""
    while True:
        push = await client.wait_server_push(timeout=timeout_s)
        if push == aioimaplib.STOP_WAIT_SERVER_PUSH:
            return
        lines = [bytes(line) for line in push]
        if any(line.startswith(b"BYE") for line in lines):
            raise ImapSessionError("server said BYE")
        if any(line.endswith(b"EXISTS") for line in lines):
            return


async def _sleep(delay_s: float, stop: asyncio.Event) -> None:
    """Sleep `delay_s`, or less if `stop` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay_s)


async def _close(session: _Session) -> None:
    """LOGOUT if the connection is still up, then close the socket whatever happened."""
    client = session.client
    try:
        if not session.lost.is_set() and client.get_state() in ("AUTH", "SELECTED"):
            await session.call(asyncio.wait_for(client.logout(), 2.0))
    except Exception as exc:  # closing is best effort
        log.debug("logout failed: %s", type(exc).__name__)
    transport = client.protocol.transport
    if transport is not None:
        transport.close()


def _uidvalidity(response: Any) -> int:
    for line in response.lines:
        match = _UIDVALIDITY.search(bytes(line))
        if match:
            return int(match.group(1))
    raise ImapSessionError("SELECT gave no UIDVALIDITY")


def _literal(lines: list[Any], uid: int) -> tuple[bytes, bytes] | None:
    """The literal of `uid`'s FETCH response among aioimaplib's response lines (UID before or after it),
    with the response's other items (UID, INTERNALDATE...) as one line."""
    for i, line in enumerate(lines[:-1]):
        match = _FETCH_LITERAL.match(line) if isinstance(line, bytes) else None
        if match is None or not isinstance(lines[i + 1], bytearray):
            continue
        trailer = lines[i + 2] if i + 2 < len(lines) and isinstance(lines[i + 2], bytes) else b""
        found = _UID.search(match.group(1)) or _UID.search(trailer)
        if found and int(found.group(1)) == uid:
            literal = bytes(lines[i + 1])
            if len(literal) != int(match.group(2)):
                raise ImapSessionError("FETCH literal truncated")
            return literal, match.group(1) + b" " + trailer
    return None


def _internal_date(items: bytes) -> datetime | None:
    """The INTERNALDATE among a FETCH response's items ("17-Jul-1996 02:44:25 -0700"), None if absent or odd."""
    found = _INTERNALDATE.search(items)
    try:
        return datetime.strptime(found.group(1).decode("ascii").strip(), "%d-%b-%Y %H:%M:%S %z") if found else None
    except ValueError:
        return None


def imap_submission_id(*, host: str, user: str, mailbox: str, uidvalidity: int, uid: int,
                       internal_date: datetime | None = None) -> str:
    """The submission id of one IMAP message: the same message always gets the same id, another never.

    Shape of hub.intake.new_submission_id() (32 lowercase hex, time-ordered): 12 hex of the message's
    INTERNALDATE in ms (of the digest when unknown), then 20 hex of SHA-256 over (host, user, mailbox,
    UIDVALIDITY, UID), which name a message for good (RFC 3501 §2.3.1.1).  No address appears in the id."""
    identity = "\n".join((host.lower(), user, mailbox, str(uidvalidity), str(uid)))
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()
    time_part = f"{max(0, int(internal_date.timestamp() * 1000)) % 16**12:012x}" if internal_date else digest[-12:]
    return time_part + digest[:20]


def mail_acceptor(intake: Intake, *, recipient: str, producer: str,
                  clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Callable[[bytes, str], str]:
    """An `accept` for ImapIntake: each message becomes a queued mail for `recipient` (the polled mailbox),
    under the submission id ImapIntake derived for it (so taking it again is no new submission).

    The envelope sender is the message's Return-Path (what the delivering MTA recorded), "" if absent."""

    def accept(raw: bytes, submission_id: str) -> str:
        envelope = SmtpEnvelope(mail_from=_return_path(raw), recipients=(SmtpRecipient(recipient),),
                                received_at=clock().isoformat())
        record = intake.accept(pack(envelope, raw), Source(kind="imap", producer=producer),
                               content_type=MAIL_CONTENT_TYPE, kind="mail", submission_id=submission_id)
        return record.submission_id

    return accept


def _return_path(raw: bytes) -> str:
    header = BytesHeaderParser().parsebytes(raw).get("Return-Path", "")
    return parseaddr(str(header))[1]
