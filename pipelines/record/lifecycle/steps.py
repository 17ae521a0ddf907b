"""The lifecycle's ports and the steps its parts share: factors checked, codes issued and announced, hooks.

Owns: LifecyclePorts (what the lifecycle needs), how an actor is named to the audit hook, and `Steps`:
both factors digested and compared every time, an attempt on an INS without a profile counted in memory
(StrangerAttempts) like a profile's, a wrong attempt counted durably before its refusal is raised, a new
code issued (generation + 1) and announced with an event id derived from the code generation, and the
`opened`, `withdraw_codes` and `audit` hooks.
Does not: decide rules (pipelines.record.core.lifecycle) or order the steps of a request (the other
modules of this package do).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from hub.actors import SYSTEM, Actor
from hub.codes import new_code
from hub.errors import NotFound, Refused
from hub.notices import Channel, Event, EventKind
from hub.ports import BlobStore, Index
from hub.records import PatientStatus
from pipelines.record.core.factors import StrangerAttempts, code_digest, digest_matches, vitale_digest
from pipelines.record.core.lifecycle import (
    DEFAULT_RULES,
    Decision,
    LifecycleRules,
    Request,
    check_factors,
    finding,
    reimbursement_release_at,
    reissue_expiry,
)
from pipelines.record.core.profile import LifecycleStore, Profile, ReceiptPrinter

BATCH = 500
MAX_RACES = 20          # a request that keeps losing races gives up with the generic refusal
SYSTEM_REF = f"{SYSTEM.kind}:{SYSTEM.id}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class LifecyclePorts:
    """What the lifecycle needs.  `announce`: pipelines.notify.service.Notifier.announce; `representatives` /
    `end_representation`: the notification store's list of a minor's legal representatives (read / set
    to none); `purge`: deletes a closed profile's content at the end of its archive (None: the sweep
    skips purges); `secret`: the key of the code and Vitale digests (at least 32 random bytes, kept
    across restarts: a new secret invalidates every pending code)."""

    index: Index
    profiles: LifecycleStore
    announce: Callable[[Event], object]
    representatives: Callable[[str], list[str]]
    end_representation: Callable[[str], None]
    receipts: ReceiptPrinter
    store: BlobStore
    secret: bytes
    rules: LifecycleRules = DEFAULT_RULES
    clock: Callable[[], datetime] = field(default=_utcnow)
    random_bytes: Callable[[int], bytes] = field(default=secrets.token_bytes)
    purge: Callable[[str], None] | None = None
    audit: Callable[[str, str, str], None] | None = None
    export: Callable[[str, IO[bytes]], dict[str, Any]] | None = None  # restitution (pipelines.record.restitution)
    #: a profile opened (activation, automatic opening, imported active): (INS, when its reimbursement
    #: history may be filed), so that what the insurer sent before waits no longer than that
    opened: Callable[[str, datetime], object] | None = None
    #: the notification store's withdraw_codes: codes still waiting to be sent are dead (a new code, an
    #: activation, an opposition, a closure, an automatic opening), so none stays in clear
    withdraw_codes: Callable[[str], object] | None = None


def actor_ref(actor: Actor) -> str:
    """How an actor is named to the audit hook: `kind:id`."""
    return f"{actor.kind}:{actor.id}"


def operator_ref(actor: Actor | None) -> str:
    """An operator's request: the actor when known, else "operator"."""
    return actor_ref(actor) if actor else "operator"


class Steps:
    """The steps the lifecycle's parts share, around its ports."""

    def __init__(self, ports: LifecyclePorts) -> None:
        if not ports.secret:
            raise ValueError("the lifecycle secret must not be empty")
        self.p = ports
        self._strangers = StrangerAttempts(ports.rules)

    def require(self, ins: str) -> Profile:
        profile = self.p.profiles.profile(ins)
        if profile is None:
            raise NotFound("no profile for this INS")
        return profile

    def check(self, profile: Profile, request: Request, code: str, serial: str, now: datetime) -> Decision:
        """Both factors digested and compared every time (no shortcut that would time one of them)."""
        secret, ins = self.p.secret, profile.ins
        code_ok = digest_matches(profile.code_sha256, code_digest(secret, ins, code))
        vitale_ok = digest_matches(profile.vitale_sha256, vitale_digest(secret, ins, serial))
        return check_factors(profile, request, code_ok=code_ok, vitale_ok=vitale_ok, now=now, rules=self.p.rules)

    def stranger(self, ins: str) -> dict[str, object]:
        """An attempt on an INS without a profile: counted like a profile's; the refusal to raise."""
        key = hmac.new(self.p.secret, f"stranger\x1f{ins}".encode(), hashlib.sha256).hexdigest()
        return self._strangers.attempt(key, self.p.clock())

    def refuse(self, profile: Profile, decision: Decision, now: datetime, who: str) -> None:
        """Raise the refusal, after counting the wrong attempt durably; return (decide again) only when
        another attempt was counted meanwhile."""
        if decision.count_failure:
            counted = self.p.profiles.record_failure(profile.ins, now=now, seen=profile.failed_attempts,
                                                     locked_until=decision.locked_until)
            if counted is None:
                return
            self.audit(profile.ins, "lifecycle.wrong-factors", who)
        raise Refused(decision.finding or finding("lifecycle.activation-refused"))

    def new_code(self, profile: Profile, now: datetime, request: Request,
                 channel: Channel | None = None) -> Profile | None:
        """Issue a new code (generation + 1) and announce it (on `channel` when the person chose one);
        None when the profile changed meanwhile."""
        p = self.p
        code = new_code(p.random_bytes)
        issued = p.profiles.reissue(profile.ins, code_sha256=code_digest(p.secret, profile.ins, code),
                                    expires_at=reissue_expiry(profile, now, request, p.rules),
                                    from_statuses=(profile.status,), now=now)
        if issued is not None:
            self.withdraw(profile.ins)  # the previous code stopped working: its letter is not printed
            self.send_code(issued, code, now, channel)
        return issued

    def send_code(self, profile: Profile, code: str, now: datetime, channel: Channel | None = None) -> None:
        """The code's event (id deterministic per code generation), then its mark as handed over."""
        self.p.announce(Event(event_id=self.code_event_id(profile),
                              kind=EventKind.ACTIVATION_CODE, ins=profile.ins, occurred_at=now, urgent=True,
                              code=code, code_expires=profile.code_expires_at,
                              channel=str(channel) if channel else ""))
        self.p.profiles.mark_announced(profile.ins, profile.code_generation)

    def code_event_id(self, profile: Profile) -> str:
        """`activation:<keyed hash of the INS and the profile's creation>:<code generation>`: the same for
        one code however often it is announced, new for each code (and for a profile made again after a
        purge), and no INS in the id."""
        born = profile.created_at.isoformat()
        tag = hmac.new(self.p.secret, f"code-event\x1f{profile.ins}\x1f{born}".encode(), hashlib.sha256)
        return f"activation:{tag.hexdigest()[:24]}:{profile.code_generation}"

    def opened(self, profile: Profile) -> None:
        at = reimbursement_release_at(profile, self.p.rules)
        if self.p.opened is not None and at is not None:
            self.p.opened(profile.ins, at)

    def withdraw(self, ins: str) -> None:
        if self.p.withdraw_codes is not None:
            self.p.withdraw_codes(ins)

    def audit(self, ins: str, action: str, actor: str) -> None:
        if self.p.audit is not None:
            self.p.audit(ins, action, actor)


def raise_if_locked(refusal: dict[str, object]) -> None:
    if refusal.get("retry_after_s") is not None:
        raise Refused(refusal)


def raise_if_refused(step: PatientStatus | dict[str, object]) -> None:
    if isinstance(step, dict):
        raise Refused(step)
