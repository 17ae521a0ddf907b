"""Idle SMTP sessions kept for the next e-mail to the same smart host (connectors.outbound.notify_channels).

Owns: IdleSessions (a small locked pool: a session is in it only while nobody uses it), `reset` (RSET before a
reuse, the liveness check) and `quit_smtp` (a polite QUIT that ignores a dead peer).
Rule: a session idle for `idle_s` is QUIT at the next take or give-back, or by a daemon sweeper that runs
only while the pool holds a session; at most `size` idle sessions are kept (the oldest go first).
Does not: open sessions or map errors (the channel does).
"""

from __future__ import annotations

import contextlib
import smtplib
import threading
from collections.abc import Callable, Sequence

IDLE_S = 30.0  # an SMTP session idle this long is closed (QUIT)
POOL_SIZE = 8  # idle SMTP sessions kept at most (one per sending thread is enough)


def quit_smtp(smtp: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        smtp.quit()


def reset(smtp: smtplib.SMTP) -> bool:
    """RSET before the next message on a reused session: False when the session is gone (closed here)."""
    try:
        code, _ = smtp.rset()
    except (smtplib.SMTPException, OSError):
        code = 0
    if code == 250:
        return True
    smtp.close()
    return False


class IdleSessions:
    """The open sessions waiting for the next send (at most `size`); one idle for `idle_s` is QUIT at the
    next take or give-back, or by a daemon sweeper while the pool holds any."""

    def __init__(self, *, idle_s: float, size: int, clock: Callable[[], float]) -> None:
        self._idle_s, self._size, self._clock = idle_s, size, clock
        self._lock = threading.Lock()
        self._sessions: list[tuple[float, smtplib.SMTP]] = []  # (last used, session), oldest first
        self._sweeper: threading.Thread | None = None
        self._closed = threading.Event()

    def take(self) -> smtplib.SMTP | None:
        self._quit(self._expired())
        with self._lock:
            return self._sessions.pop()[1] if self._sessions else None

    def give_back(self, smtp: smtplib.SMTP) -> None:
        with self._lock:
            self._sessions.append((self._clock(), smtp))
            extra = self._sessions[:-self._size] if len(self._sessions) > self._size else []
            del self._sessions[:len(extra)]
            start = self._sweeper is None or not self._sweeper.is_alive()
            if start and not self._closed.is_set():
                self._sweeper = threading.Thread(target=self._sweep, name="smtp-idle", daemon=True)
                self._sweeper.start()
        self._quit([s for _, s in extra])

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            sessions, self._sessions = [s for _, s in self._sessions], []
        self._quit(sessions)

    def _expired(self) -> list[smtplib.SMTP]:
        deadline = self._clock() - self._idle_s
        with self._lock:
            old = [s for used, s in self._sessions if used <= deadline]
            self._sessions = [(used, s) for used, s in self._sessions if used > deadline]
        return old

    def _sweep(self) -> None:
        while not self._closed.wait(max(self._idle_s / 2, 0.05)):
            self._quit(self._expired())
            with self._lock:
                if not self._sessions:
                    self._sweeper = None
                    return

    @staticmethod
    def _quit(sessions: Sequence[smtplib.SMTP]) -> None:
        for smtp in sessions:
            quit_smtp(smtp)
            smtp.close()


