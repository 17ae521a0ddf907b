"""LMTP delivery into the local IMAP store (Dovecot): one result per recipient (blocking, stdlib smtplib).

Owns: one LMTP transaction per call over TCP (LHLO, MAIL, RCPT for each recipient, DATA) and the
translation of what the server answered into RecipientResult: 2xx delivered, 4xx transient, 5xx
permanent.  LMTP (RFC 2033) answers DATA once per accepted recipient, in RCPT order, so each
recipient gets its own final reply.  When the server cannot be reached, times out or drops the
connection, every recipient without a final reply yet is TRANSIENT with a local 451 reply
(4.4.1 no answer, 4.4.2 connection lost), so the caller retries later.
Rule: a recipient whose reply was lost after DATA may have been delivered; it is reported TRANSIENT
(at-least-once: a retry can deliver it twice, never zero times).
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

NO_ANSWER = (451, "4.4.1 No answer from the LMTP server")
CONNECTION_LOST = (451, "4.4.2 Connection to the LMTP server lost")
_EOL = re.compile(rb"\r\n|\r|\n")


def crlf(message: bytes) -> bytes:
    """`message` with every line ending made CRLF (LMTP, as SMTP, takes no bare CR or LF in DATA)."""
    return _EOL.sub(b"\r\n", message)


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

    def deliver(self, message: bytes, mail_from: str, recipients: Sequence[str]) -> list[RecipientResult]:
        """Deliver `message` to each of `recipients`; one result per recipient, in the same order.

        `mail_from` is the envelope sender ("" for the null sender).  Never raises for network or
        protocol failures: they become TRANSIENT (or PERMANENT, when the server said 5xx) results."""
        if not recipients:
            return []
        results: dict[int, RecipientResult] = {}
        connected = False
        try:
            with smtplib.LMTP(self._host, self._port, local_hostname=self._local_hostname,
                              timeout=self._timeout_s) as lmtp:
                connected = True
                self._transact(lmtp, crlf(message), mail_from, recipients, results)
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
