"""The factors of a profile's requests (pure): the provisional code, the Vitale serial, their keyed
digests, and attempts on an INS without a profile.

Owns: the code's alphabet and generation from an injected random source (`XXXX-XXXX-XXXX`, 60 bits, read
back with O -> 0 and I/L -> 1), the Vitale serial's normalisation, the HMAC-SHA256 digests the profile
table keeps (never a code or a serial in clear), their constant-time comparison, and StrangerAttempts:
an INS without a profile counted like a profile's (the lockout arithmetic of
pipelines.record.core.lifecycle), so a lockout does not tell a known INS from an unknown one.
Does not: decide a request (pipelines.record.core.lifecycle) or store anything.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from datetime import datetime

from pipelines.record.core.lifecycle import DEFAULT_RULES, LifecycleRules, finding, locked, refused_attempt

_CODE_READ = str.maketrans({"O": "0", "I": "1", "L": "1"})
_CODE_DROP = re.compile(r"[\s\-_.]+")
_VITALE_DROP = re.compile(r"[\s\-_./]+")
_VITALE_SHAPE = re.compile(r"^[0-9A-Z]{8,20}$")


def normalise_code(text: str) -> str:
    """What the person typed, as the code is digested: no separators, upper case, O -> 0, I/L -> 1."""
    return _CODE_DROP.sub("", text).upper().translate(_CODE_READ)


def _keyed(secret: bytes, purpose: str, ins: str, value: str) -> str:
    if not secret:
        raise ValueError("the lifecycle secret must not be empty")
    return hmac.new(secret, f"{purpose}\x1f{ins}\x1f{value}".encode(), hashlib.sha256).hexdigest()


def code_digest(secret: bytes, ins: str, code: str) -> str:
    """HMAC-SHA256 of (INS, normalised code) under the hub's secret: what the profile table keeps."""
    return _keyed(secret, "activation-code", ins, normalise_code(code))


def normalise_vitale(serial: str) -> str | None:
    """The Vitale card serial without spaces, dashes, dots or slashes, upper case; None unless it is then
    8 to 20 letters or digits."""
    value = _VITALE_DROP.sub("", serial).upper()
    return value if _VITALE_SHAPE.match(value) else None


def vitale_digest(secret: bytes, ins: str, serial: str) -> str:
    """HMAC-SHA256 of (INS, normalised serial); "" when the serial is not a valid one."""
    value = normalise_vitale(serial)
    return _keyed(secret, "vitale-serial", ins, value) if value else ""


def digest_matches(expected: str, actual: str) -> bool:
    """Constant-time comparison; an empty expected digest (nothing on file) never matches."""
    return bool(expected) and bool(actual) and hmac.compare_digest(expected, actual)


class StrangerAttempts:
    """Attempts on an INS that has no profile, counted like a profile's (same lockout arithmetic), so
    that neither the answer nor the lockout tells whether an INS has a profile.  In memory, per process,
    keyed by a digest of the INS, at most `capacity` INS (the oldest entry is dropped first)."""

    def __init__(self, rules: LifecycleRules = DEFAULT_RULES, capacity: int = 100_000) -> None:
        self._rules = rules
        self._capacity = capacity
        self._seen: dict[str, tuple[int, datetime | None]] = {}
        self._lock = threading.Lock()

    def attempt(self, key: str, now: datetime) -> dict[str, object]:
        """Count one attempt on `key`; the refusal to answer (the generic one, or the lockout)."""
        with self._lock:
            failed, until = self._seen.get(key, (0, None))
            if until is not None and now < until:
                return locked(until, now)
            decision = refused_attempt(failed, finding("lifecycle.activation-refused"), now, self._rules)
            self._seen.pop(key, None)
            self._seen[key] = (failed + 1, decision.locked_until)
            while len(self._seen) > self._capacity:
                del self._seen[next(iter(self._seen))]
        assert decision.finding is not None
        return decision.finding
