"""The person's and the operators' requests on a profile: activation, a code asked for, a new code by
letter, closure and restitution.

Owns: the order of each request's steps: activate() with the letter's factors records a refused
attempt durably before the refusal is raised, and its conditional transition makes one of two
concurrent successes win; request_code() says nothing of the outcome (None, or the lockout) and each
request counts one attempt; an INS without a profile meets the same refusals and the same lockout.
Does not: oppose (pipelines.record.lifecycle.opposition) or decide rules (pipelines.record.core.lifecycle).
"""

from __future__ import annotations

from typing import IO, Any

from hub.actors import Actor, ActorKind
from hub.errors import NotFound, Refused
from hub.notices import Channel
from hub.records import PatientStatus
from pipelines.record.core.factors import digest_matches, vitale_digest
from pipelines.record.core.lifecycle import (
    Request,
    activation_values,
    check_code_request,
    closure_values,
    code_expired,
    finding,
    next_status,
)
from pipelines.record.core.profile import Profile
from pipelines.record.lifecycle.steps import (
    MAX_RACES,
    Steps,
    actor_ref,
    operator_ref,
    raise_if_locked,
    raise_if_refused,
)


class Requests:
    """Activation, code requests, new codes, closure and restitution of one profile."""

    def __init__(self, steps: Steps) -> None:
        self._s = steps

    def activate(self, ins: str, code: str, vitale_serial: str, *, actor: Actor | None = None) -> Profile:
        """Activate with the letter's factors.  Refused (generic, locked, expired, wrong state); an
        unknown INS gets the generic refusal too (no way to probe which INS have a profile)."""
        s, who = self._s, actor_ref(actor or Actor(ActorKind.PATIENT, ins))
        for _ in range(MAX_RACES):
            profile = s.p.profiles.profile(ins)
            if profile is None:
                raise Refused(s.stranger(ins))
            now = s.p.clock()
            decision = s.check(profile, Request.ACTIVATE, code, vitale_serial, now)
            if not decision.allowed:
                s.refuse(profile, decision, now, who)
                continue
            done = s.p.profiles.transition(
                ins, from_statuses=(profile.status,), to_status=PatientStatus.ACTIVE,
                values=activation_values(profile, now), where={"code_sha256": profile.code_sha256})
            if done is not None:
                s.withdraw(ins)
                s.audit(ins, "lifecycle.activated", who)
                s.opened(done)
                return done
        raise Refused(finding("lifecycle.activation-refused"))

    def request_code(self, ins: str, vitale_serial: str, channel: Channel = Channel.POSTAL) -> None:
        """The holder asks for a code (INS + Vitale serial): sent on `channel` (SMS to the phone the insurer
        knows, e-mail, or letter; the letter when that channel cannot be used).  Says nothing of the
        outcome: returns None whether a code was sent or not; Refused only for the lockout (429)."""
        s, who = self._s, actor_ref(Actor(ActorKind.PATIENT, ins))
        for _ in range(MAX_RACES):
            profile = s.p.profiles.profile(ins)
            now = s.p.clock()
            if profile is None:
                raise_if_locked(s.stranger(ins))
                return
            vitale_ok = digest_matches(profile.vitale_sha256, vitale_digest(s.p.secret, ins, vitale_serial))
            decision = check_code_request(profile, vitale_ok=vitale_ok, now=now, rules=s.p.rules)
            if decision.count_failure:
                counted = s.p.profiles.record_failure(ins, now=now, seen=profile.failed_attempts,
                                                      locked_until=decision.locked_until)
                if counted is None:
                    continue  # another attempt was counted meanwhile: decide again
            if not decision.allowed:
                s.audit(ins, "lifecycle.code-request-refused", who)
                raise_if_locked(decision.finding or {})
                return
            if s.new_code(profile, now, Request.REQUEST_CODE, channel=channel) is not None:
                s.audit(ins, "lifecycle.code-requested", who)
            return

    def reissue_code(self, ins: str, *, actor: Actor | None = None) -> Profile:
        """A new code by letter: a lost letter (created: same deadline) or the reversal of an opposition
        (opposed: a full period).  The previous code stops working."""
        s = self._s
        for _ in range(MAX_RACES):
            profile = s.require(ins)
            now = s.p.clock()
            raise_if_refused(next_status(profile.status, Request.REISSUE))
            if profile.status is PatientStatus.CREATED and code_expired(profile, now):
                raise Refused(finding("lifecycle.expired-code"))  # it opens now: no code needed
            done = s.new_code(profile, now, Request.REISSUE)
            if done is not None:
                s.audit(ins, "lifecycle.code-reissued", operator_ref(actor))
                return done
        raise Refused(finding("lifecycle.no-code"))

    def close(self, ins: str, *, actor: Actor | None = None) -> Profile:
        """Close (created, opened or active): the content is no longer reachable (patients.status closed), kept in
        archive until purge_after, then purged by the sweep.  Closing a closed profile returns it."""
        s = self._s
        for _ in range(MAX_RACES):
            profile = s.require(ins)
            raise_if_refused(next_status(profile.status, Request.CLOSE))
            if profile.status is PatientStatus.CLOSED:
                return profile
            now = s.p.clock()
            done = s.p.profiles.transition(ins, from_statuses=(profile.status,), to_status=PatientStatus.CLOSED,
                                           values=closure_values(now, s.p.rules))
            if done is not None:
                s.withdraw(ins)
                s.audit(ins, "lifecycle.closed", operator_ref(actor))
                return done
        raise Refused(finding("lifecycle.closed"))

    def export(self, ins: str, out: IO[bytes], *, actor: Actor | None = None) -> dict[str, Any]:
        """Restitution: the whole record as a ZIP written to `out` (any status but purged)."""
        profile = self._s.require(ins)
        if profile.purged_at is not None or self._s.p.export is None:
            raise NotFound("nothing left to restore for this INS")
        summary = self._s.p.export(ins, out)
        self._s.audit(ins, "lifecycle.exported", operator_ref(actor))
        return summary
