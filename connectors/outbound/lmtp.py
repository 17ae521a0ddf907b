"""LMTP delivery into the local IMAP store (Dovecot): one result per recipient (blocking, stdlib smtplib).

Owns: one LMTP transaction per call over TCP (LHLO, MAIL, RCPT for each recipient, DATA) and the
translation of what the server answered into RecipientResult: 2xx delivered, 4xx transient, 5xx
permanent.  LMTP (RFC 2033) answers DATA once per accepted recipient, in RCPT order, so each
recipient gets its own final reply.  When the server cannot be reached, times out or drops the
connection, every recipient without a final reply yet is TRANSIENT with a local 451 reply
(4.4.1 no answer, 4.4.2 connection lost), so the caller retries later.
Rule 1: a recipient whose reply was lost after DATA may have been delivered; it is reported TRANSIENT
(at-least-once: a retry delivers it again, never zero times).
Rule 2: with a `delivery_id` (the outbound pipeline passes the submission id), every copy carries
`X-Meshub-Delivery: <id>` as its first header; any such header the message already had is removed,
with or without an id (a sender cannot forge or pre-empt one).  Dovecot's sieve_before script
config/dovecot/meshub-delivery.sieve (Sieve `duplicate`, RFC 7352) discards a second copy with the
same id in the same mailbox and still answers 250, so a retry after a lost reply, or after the hub died
between 250 and recording it, files the message once: delivery is idempotent per (mailbox, id).
Does not: decide retries or bounces (pipelines), pick recipients, or log addresses (they may carry an INS).
Thread-safe: every call opens its own connection; call it from worker threads, not from an event loop.
"""

from __future__ import annotations

import logging
import re
import smtplib
from collections.abc import Sequence

from hub.delivery import Outcome, RecipientResult
from hub.errors import ConfigError

log = logging.getLogger(__name__)

DELIVERY_HEADER = "X-Meshub-Delivery"
NO_ANSWER = (451, "4.4.1 No answer from the LMTP server")
CONNECTION_LOST = (451, "4.4.2 Connection to the LMTP server lost")
_EOL = re.compile(rb"\r\n|\r|\n")
_DELIVERY_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_OUR_HEADER = re.compile(re.escape(DELIVERY_HEADER.encode()) + rb"[ \t]*:", re.IGNORECASE)  # obs-syntax: WSP before ":"


def crlf(message: bytes) -> bytes:
    """`message` with every line ending made CRLF (LMTP, as SMTP, takes no bare CR or LF in DATA)."""
    return _EOL.sub(b"\r\n", message)


def stamp(message: bytes, delivery_id: str) -> bytes:
    """`message` (CRLF) without any `X-Meshub-Delivery` header of its own, and with ours first if
    `delivery_id` is given ("" only removes: a forged or copied id never reaches the sieve script).

    ValueError for an id that is not 1 to 128 of [A-Za-z0-9._-] (a programming error: no header injection)."""
    if delivery_id and not _DELIVERY_ID.fullmatch(delivery_id):
        raise ValueError("a delivery id is 1 to 128 characters of [A-Za-z0-9._-]")
    end = message.find(b"\r\n\r\n")
    head, body = (message, b"") if end < 0 else (message[:end + 2], message[end + 2:])
    kept: list[bytes] = []
    dropping = False
    for line in head.splitlines(keepends=True):
        folded = line[:1] in (b" ", b"\t")  # a continuation line belongs to the header above it
        dropping = dropping if folded else _OUR_HEADER.match(line) is not None
        if not dropping:
            kept.append(line)
    ours = f"{DELIVERY_HEADER}: {delivery_id}\r\n".encode() if delivery_id else b""
    return ours + b"".join(kept) + body


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split("\n"))


class LmtpDelivery:
    """Delivers to an LMTP server over TCP (Dovecot's `inet_listener lmtp`); an absolute path as `host`
    selects a Unix socket instead (smtplib's LMTP does that, `port` is then ignored)."""

    def __init__(self, host: str, port: int, *, timeout_s: float = 30.0,
                 local_hostname: str = "mes-hub.localhost") -> None:
        if not host:
            raise ConfigError("LMTP delivery needs a host ([lmtp] host)")
        self._host = host
        self._port = port
        self._timeout_s = timeout_s
        self._local_hostname = local_hostname

    def deliver(self, message: bytes, mail_from: str, recipients: Sequence[str], *,
                delivery_id: str = "") -> list[RecipientResult]:
        """Deliver `message` to each of `recipients`; one result per recipient, in the same order.

        `mail_from` is the envelope sender ("" for the null sender).  `delivery_id` stamps the copy
        (Rule 2), so delivering it again is a no-op in the mailboxes that already have it.  Never raises
        for network or protocol failures: they become TRANSIENT (or PERMANENT, when the server said 5xx)
        results."""
        if not recipients:
            return []
        data = stamp(crlf(message), delivery_id)
        results: dict[int, RecipientResult] = {}
        connected = False
        try:
            with smtplib.LMTP(self._host, self._port, local_hostname=self._local_hostname,
                              timeout=self._timeout_s) as lmtp:
                connected = True
                self._transact(lmtp, data, mail_from, recipients, results)
        except smtplib.SMTPResponseException as exc:
            self._settle_rest(results, recipients, exc.smtp_code, _text(exc.smtp_error))
        except OSError as exc:  # refused, reset, timed out, SMTPServerDisconnected
            code, text = CONNECTION_LOST if connected else NO_ANSWER
            self._settle_rest(results, recipients, code, f"{text} ({type(exc).__name__})")
        outcomes = [results[i] for i in range(len(recipients))]
        log.info("lmtp %s:%d: %s", self._host, self._port, _summary(outcomes))
        return outcomes

    def _transact(self, lmtp: smtplib.LMTP, message: bytes, mail_from: str, recipients: Sequence[str],
                  results: dict[int, RecipientResult]) -> None:
        """One LMTP transaction; fills `results` as final replies arrive, raises on a refused step."""
        _expect(lmtp.ehlo(), 250)
        eight_bit = lmtp.has_extn("8bitmime") and not message.isascii()
        _expect(lmtp.mail(mail_from, ["BODY=8BITMIME"] if eight_bit else []), 250)
        accepted: list[int] = []
        for i, address in enumerate(recipients):
            code, reply = lmtp.rcpt(address)
            if 200 <= code < 300:
                accepted.append(i)
            else:
                results[i] = self._result(address, code, reply)
        if not accepted:
            return
        code, reply = lmtp.data(message)  # SMTPDataError (a refused DATA) settles every accepted recipient
        results[accepted[0]] = self._result(recipients[accepted[0]], code, reply)
        for i in accepted[1:]:
            results[i] = self._result(recipients[i], *lmtp.getreply())

    def _result(self, address: str, code: int, reply: bytes | str) -> RecipientResult:
        return RecipientResult.from_reply(address, code, _text(reply), remote_host=self._host)

    def _settle_rest(self, results: dict[int, RecipientResult], recipients: Sequence[str], code: int,
                     text: str) -> None:
        """Give every recipient without a final reply yet the reply that ended the transaction."""
        for i, address in enumerate(recipients):
            if i not in results:
                results[i] = self._result(address, code, text)


def _expect(reply: tuple[int, bytes], code: int) -> None:
    if reply[0] != code:
        raise smtplib.SMTPResponseException(reply[0], reply[1])


def _summary(results: Sequence[RecipientResult]) -> str:
    counts = {outcome: sum(r.outcome is outcome for r in results) for outcome in Outcome}
    return ", ".join(f"{count} {outcome}" for outcome, count in counts.items() if count)
