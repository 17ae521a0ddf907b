"""The patient lifecycle service: roster registration, activation, opposition, new codes, closure, and the
scheduled sweep (automatic opening, minors coming of age, purge at the end of the archive).

Owns: the order of the steps around the pure rules (pipelines.record.core.lifecycle) and the ports:
* registered(): after a roster import, a new `created` profile gets a provisional code and an
  ACTIVATION_CODE event (the notifications print the letter); the event id is derived from the code
  generation, so a re-import never announces twice; a profile whose letter event was never handed over
  (a crash in between) gets a new code on the next import.  Profiles imported `active`, `opposed` or
  `closed` are registered in that state, without a code.  A profile that exists keeps its status: the
  roster's status column only seeds new profiles (admit() rewrites the records before the upsert and
  registered() re-syncs patients.status after it).
* activate()/oppose() with the letter's factors: a refused attempt is recorded durably before the refusal
  is raised; the conditional transition makes one of two concurrent successes win.  An INS without a
  profile is counted in memory (StrangerAttempts), so it meets the same refusals and the same lockout.
* request_code(): the holder of a created or opened profile asks for a code with INS + Vitale serial, by
  SMS (the phone the insurer knows), e-mail or letter; it says nothing of the outcome (None, or the
  lockout), and each request counts one attempt.
* oppose(): the PDF receipt is rendered (ReceiptPrinter) and stored (BlobStore) BEFORE the transition that
  records its key, so an opposed profile always has its receipt; opposing again returns the same profile
  and receipt.
* sweep(): automatic opening makes a created profile `opened` (never `active`: only its holder's
  activation does that).  Each step pages through what is due and changes each profile in its own transaction, so a
  crash loses nothing and a second run does nothing twice (a purge hook must be idempotent: it is called
  again if the crash falls between the purge and its mark).
Every change calls the `audit(ins, action, actor)` hook (actor "kind:id", e.g. "patient:<INS>",
"system:meshub").  Logs carry counts, never an INS.
Does not: decide rules (pipelines.record.core.lifecycle), send letters (the announce port), build PDFs or ZIPs,
purge content (the purge hook), or authenticate anyone (the API does).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import IO, Any

from hub.actors import SYSTEM, Actor, ActorKind
from hub.envelope import BlobRef
from hub.errors import NotFound, Refused
from hub.notices import Channel, Event, EventKind
from hub.ports import BlobStore, Index
from hub.records import PatientRecord, PatientStatus
from pipelines.record.core.lifecycle import (
    DEFAULT_RULES,
    Decision,
    LifecycleRules,
    Request,
    StrangerAttempts,
    activation_values,
    add_years,
    adult_since,
    auto_open_due,
    check_code_request,
    check_factors,
    closure_values,
    code_digest,
    code_expired,
    digest_matches,
    finding,
    majority_cutoff,
    new_code,
    next_status,
    opening_values,
    opposition_values,
    opposition_window_open,
    paris_date,
    purge_due,
    reimbursement_release_at,
    reissue_expiry,
    vitale_digest,
)
from pipelines.record.core.profile import Activation, LifecycleStore, Profile, ReceiptPrinter

log = logging.getLogger(__name__)
BATCH = 500
MAX_RACES = 20          # a request that keeps losing races gives up with the generic refusal
RECEIPT_KIND = "receipt"
PDF = "application/pdf"
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


class Lifecycle:
    """record.ports.LifecycleService (all but export, which pipelines.record.restitution provides) and the sweep."""

    def __init__(self, ports: LifecyclePorts) -> None:
        if not ports.secret:
            raise ValueError("the lifecycle secret must not be empty")
        self._p = ports
        self._strangers = StrangerAttempts(ports.rules)

    # -- reads -----------------------------------------------------------------------------------------

    def profile(self, ins: str) -> Profile | None:
        return self._p.profiles.profile(ins)

    def reimbursement_release_at(self, ins: str) -> datetime | None:
        """When the insurer's reimbursement history for `ins` may be filed (None: not open)."""
        profile = self._p.profiles.profile(ins)
        return reimbursement_release_at(profile, self._p.rules) if profile is not None else None

    def receipt(self, ins: str) -> bytes:
        """The PDF receipt of the opposition (NotFound: no profile, or never opposed)."""
        ref = self._require(ins).receipt
        if ref is None:
            raise NotFound("no opposition receipt for this profile")
        return self._p.store.get(ref)

    # -- roster ----------------------------------------------------------------------------------------

    def admit(self, patients: Sequence[PatientRecord]) -> list[PatientRecord]:
        """The roster's records with the status of each existing profile instead of the roster's (the
        profile is the truth once it exists; call before Index.upsert_patients)."""
        known = self._p.profiles.statuses([p.ins for p in patients])
        return [replace(p, status=known[p.ins]) if p.ins in known and known[p.ins] != p.status else p
                for p in patients]

    def registered(self, patients: Sequence[PatientRecord], vitale: Mapping[str, str] | None = None) -> dict[str, int]:
        """Profiles for upserted roster records (`vitale`: INS -> normalised card serial, from the roster).
        Counts by outcome: created (a code sent), active, opposed, closed, existing, recovered (a letter
        event that had never been handed over, sent now with a new code), status_synced."""
        serials = vitale or {}
        counts: Counter[str] = Counter()
        for patient in patients:
            counts[self._register(patient, serials.get(patient.ins, ""))] += 1
        counts["status_synced"] = self._p.profiles.sync_status([p.ins for p in patients])
        log.info("roster registration: %s", dict(counts))
        return dict(counts)

    def _register(self, patient: PatientRecord, serial: str) -> str:
        p, now, ins = self._p, self._p.clock(), patient.ins
        vitale = vitale_digest(p.secret, ins, serial) if serial else ""
        code = new_code(p.random_bytes) if patient.status is PatientStatus.CREATED else ""
        profile = p.profiles.register(
            ins, status=patient.status, code_sha256=code_digest(p.secret, ins, code) if code else "",
            vitale_sha256=vitale, created_at=now, expires_at=now + p.rules.code_validity if code else None,
            values=self._imported(patient.status, now))
        if profile is None:
            return self._refresh(ins, vitale, now)
        self._audit(ins, "lifecycle.registered", SYSTEM_REF)
        if code:
            self._send_code(profile, code, now)
        self._opened(profile)
        return str(profile.status)

    def _imported(self, status: PatientStatus, now: datetime) -> dict[str, Any]:
        """The dates of a profile the roster brings in a state other than created."""
        if status is PatientStatus.ACTIVE:
            return {"activated_at": now}
        if status is PatientStatus.OPENED:
            return {"activated_at": now, "activation": Activation.AUTOMATIC}
        if status is PatientStatus.OPPOSED:
            return {"opposed_at": now}
        if status is PatientStatus.CLOSED:
            return {"closed_at": now, "purge_after": add_years(now, self._p.rules.archive_years)}
        return {}

    def _refresh(self, ins: str, vitale: str, now: datetime) -> str:
        """An existing profile: a renewed Vitale card; a letter event never handed over."""
        profile = self._p.profiles.profile(ins)
        if profile is None:
            return "existing"
        if vitale and vitale != profile.vitale_sha256:
            self._p.profiles.set_vitale(ins, vitale)
        unannounced = profile.code_pending and profile.announced_generation < profile.code_generation
        if unannounced and not code_expired(profile, now) and self._new_code(profile, now, Request.REISSUE):
            self._audit(ins, "lifecycle.code-reissued", SYSTEM_REF)
            return "recovered"
        return "existing"

    # -- the person's and the operators' requests ------------------------------------------------------

    def activate(self, ins: str, code: str, vitale_serial: str, *, actor: Actor | None = None) -> Profile:
        """Activate with the letter's factors.  Refused (generic, locked, expired, wrong state); an
        unknown INS gets the generic refusal too (no way to probe which INS have a profile)."""
        who = actor_ref(actor or Actor(ActorKind.PATIENT, ins))
        for _ in range(MAX_RACES):
            profile = self._p.profiles.profile(ins)
            if profile is None:
                raise Refused(self._stranger(ins))
            now = self._p.clock()
            decision = self._check(profile, Request.ACTIVATE, code, vitale_serial, now)
            if not decision.allowed:
                self._refuse(profile, decision, now, who)
                continue
            done = self._p.profiles.transition(
                ins, from_statuses=(profile.status,), to_status=PatientStatus.ACTIVE,
                values=activation_values(profile, now), where={"code_sha256": profile.code_sha256})
            if done is not None:
                self._withdraw(ins)
                self._audit(ins, "lifecycle.activated", who)
                self._opened(done)
                return done
        raise Refused(finding("lifecycle.activation-refused"))

    def oppose(self, ins: str, *, code: str | None = None, vitale_serial: str | None = None,
               actor: Actor | None = None) -> Profile:
        """Oppose the profile's creation (within the code's 6 weeks).  With `code` and `vitale_serial`: the
        person themself, checked and rate-limited like an activation; without: an operator recording a
        written request (NotFound for an unknown INS).  Opposing an opposed profile returns it as it is."""
        person = code is not None or vitale_serial is not None
        who = actor_ref(actor or Actor(ActorKind.PATIENT, ins)) if person or actor else "operator"
        for _ in range(MAX_RACES):
            profile = self._p.profiles.profile(ins)
            if profile is None:
                raise Refused(self._stranger(ins)) if person else NotFound("no profile")
            now = self._p.clock()
            if person:
                decision = self._check(profile, Request.OPPOSE, code or "", vitale_serial or "", now)
                if not decision.allowed:
                    self._refuse(profile, decision, now, who)
                    continue
            else:
                self._operator_may_oppose(profile, now)
            done = self._receipted(profile) if profile.status is PatientStatus.OPPOSED \
                else self._opposed(profile, now, who)
            if done is not None:
                return done
        raise Refused(finding("lifecycle.activation-refused"))

    def request_code(self, ins: str, vitale_serial: str, channel: Channel = Channel.POSTAL) -> None:
        """The holder asks for a code (INS + Vitale serial): sent on `channel` (SMS to the phone the insurer
        knows, e-mail, or letter; the letter when that channel cannot be used).  Says nothing of the
        outcome: returns None whether a code was sent or not; Refused only for the lockout (429)."""
        who = actor_ref(Actor(ActorKind.PATIENT, ins))
        for _ in range(MAX_RACES):
            profile = self._p.profiles.profile(ins)
            now = self._p.clock()
            if profile is None:
                _raise_if_locked(self._stranger(ins))
                return
            vitale_ok = digest_matches(profile.vitale_sha256, vitale_digest(self._p.secret, ins, vitale_serial))
            decision = check_code_request(profile, vitale_ok=vitale_ok, now=now, rules=self._p.rules)
            if decision.count_failure:
                counted = self._p.profiles.record_failure(ins, now=now, seen=profile.failed_attempts,
                                                          locked_until=decision.locked_until)
                if counted is None:
                    continue  # another attempt was counted meanwhile: decide again
            if not decision.allowed:
                self._audit(ins, "lifecycle.code-request-refused", who)
                _raise_if_locked(decision.finding or {})
                return
            if self._new_code(profile, now, Request.REQUEST_CODE, channel=channel) is not None:
                self._audit(ins, "lifecycle.code-requested", who)
            return

    def reissue_code(self, ins: str, *, actor: Actor | None = None) -> Profile:
        """A new code by letter: a lost letter (created: same deadline) or the reversal of an opposition
        (opposed: a full period).  The previous code stops working."""
        for _ in range(MAX_RACES):
            profile = self._require(ins)
            now = self._p.clock()
            _raise_if_refused(next_status(profile.status, Request.REISSUE))
            if profile.status is PatientStatus.CREATED and code_expired(profile, now):
                raise Refused(finding("lifecycle.expired-code"))  # it opens now: no code needed
            done = self._new_code(profile, now, Request.REISSUE)
            if done is not None:
                self._audit(ins, "lifecycle.code-reissued", actor_ref(actor) if actor else "operator")
                return done
        raise Refused(finding("lifecycle.no-code"))

    def close(self, ins: str, *, actor: Actor | None = None) -> Profile:
        """Close (created, opened or active): the content is no longer reachable (patients.status closed), kept in
        archive until purge_after, then purged by the sweep.  Closing a closed profile returns it."""
        for _ in range(MAX_RACES):
            profile = self._require(ins)
            _raise_if_refused(next_status(profile.status, Request.CLOSE))
            if profile.status is PatientStatus.CLOSED:
                return profile
            now = self._p.clock()
            done = self._p.profiles.transition(ins, from_statuses=(profile.status,), to_status=PatientStatus.CLOSED,
                                               values=closure_values(now, self._p.rules))
            if done is not None:
                self._withdraw(ins)
                self._audit(ins, "lifecycle.closed", actor_ref(actor) if actor else "operator")
                return done
        raise Refused(finding("lifecycle.closed"))

    def export(self, ins: str, out: IO[bytes], *, actor: Actor | None = None) -> dict[str, Any]:
        """Restitution: the whole record as a ZIP written to `out` (any status but purged)."""
        profile = self._require(ins)
        if profile.purged_at is not None or self._p.export is None:
            raise NotFound("nothing left to restore for this INS")
        summary = self._p.export(ins, out)
        self._audit(ins, "lifecycle.exported", actor_ref(actor) if actor else "operator")
        return summary

    # -- the scheduled sweep ---------------------------------------------------------------------------

    def sweep(self, now: datetime | None = None) -> dict[str, int]:
        """Everything due at `now` (default: the clock): automatic openings, minors who came of age
        (representation ended, the young adult invited with a new code), purges.  Counts only."""
        moment = now or self._p.clock()
        counts = {"opened": self._open_due(moment), **self._adults(moment), "purged": self._purge_due(moment)}
        log.info("lifecycle sweep: %s", counts)
        return counts

    def _open_due(self, now: datetime) -> int:
        opened = 0
        while True:
            due = self._p.profiles.due_auto_open(now, BATCH)
            before = opened
            for profile in due:
                done = self._p.profiles.transition(
                    profile.ins, from_statuses=(PatientStatus.CREATED,), to_status=PatientStatus.OPENED,
                    values=opening_values(now), where={"code_generation": profile.code_generation},
                ) if auto_open_due(profile, now) else None
                if done is not None:
                    self._withdraw(profile.ins)
                    self._audit(profile.ins, "lifecycle.opened-automatically", SYSTEM_REF)
                    self._opened(done)
                    opened += 1
            if len(due) < BATCH or opened == before:
                return opened

    def _adults(self, now: datetime) -> dict[str, int]:
        today = paris_date(now)
        cutoff, after = majority_cutoff(today, self._p.rules), ""
        counts = {"came_of_age": 0, "invited": 0}
        while True:
            page = self._p.profiles.minors_turning_adult(cutoff, BATCH, after)
            for ins, born in page:
                if adult_since(born, today, self._p.rules) is not None:
                    counts["invited"] += self._invite(ins, now)
                    self._end_representation(ins)
                    counts["came_of_age"] += 1
            if len(page) < BATCH:
                return counts
            after = page[-1][0]

    def _invite(self, ins: str, now: datetime) -> int:
        """A young adult's own code (announced before the representation ends, so the letter is theirs)."""
        profile = self._p.profiles.profile(ins)
        if profile is None or isinstance(next_status(profile.status, Request.INVITE), dict):
            return 0
        if self._new_code(profile, now, Request.INVITE) is None:
            return 0
        self._audit(ins, "lifecycle.adult-invited", SYSTEM_REF)
        return 1

    def _end_representation(self, ins: str) -> None:
        former = self._p.representatives(ins)
        self._p.end_representation(ins)
        self._audit(ins, "lifecycle.representation-ended", SYSTEM_REF)
        for representative in former:
            self._audit(representative, "lifecycle.representation-ended", SYSTEM_REF)

    def _purge_due(self, now: datetime) -> int:
        if self._p.purge is None:
            return 0
        purged = 0
        while True:
            due = self._p.profiles.due_purge(now, BATCH)
            for profile in due:
                if purge_due(profile, now):
                    self._p.purge(profile.ins)
                    if self._p.profiles.mark_purged(profile.ins, now) is not None:
                        self._audit(profile.ins, "lifecycle.purged", SYSTEM_REF)
                        purged += 1
            if len(due) < BATCH:
                return purged

    # -- steps -----------------------------------------------------------------------------------------

    def _require(self, ins: str) -> Profile:
        profile = self._p.profiles.profile(ins)
        if profile is None:
            raise NotFound("no profile for this INS")
        return profile

    def _check(self, profile: Profile, request: Request, code: str, serial: str, now: datetime) -> Decision:
        """Both factors digested and compared every time (no shortcut that would time one of them)."""
        secret, ins = self._p.secret, profile.ins
        code_ok = digest_matches(profile.code_sha256, code_digest(secret, ins, code))
        vitale_ok = digest_matches(profile.vitale_sha256, vitale_digest(secret, ins, serial))
        return check_factors(profile, request, code_ok=code_ok, vitale_ok=vitale_ok, now=now, rules=self._p.rules)

    def _stranger(self, ins: str) -> dict[str, object]:
        """An attempt on an INS without a profile: counted like a profile's; the refusal to raise."""
        key = hmac.new(self._p.secret, f"stranger\x1f{ins}".encode(), hashlib.sha256).hexdigest()
        return self._strangers.attempt(key, self._p.clock())

    def _refuse(self, profile: Profile, decision: Decision, now: datetime, who: str) -> None:
        """Raise the refusal, after counting the wrong attempt durably; return (decide again) only when
        another attempt was counted meanwhile."""
        if decision.count_failure:
            counted = self._p.profiles.record_failure(profile.ins, now=now, seen=profile.failed_attempts,
                                                      locked_until=decision.locked_until)
            if counted is None:
                return
            self._audit(profile.ins, "lifecycle.wrong-factors", who)
        raise Refused(decision.finding or finding("lifecycle.activation-refused"))

    def _operator_may_oppose(self, profile: Profile, now: datetime) -> None:
        _raise_if_refused(next_status(profile.status, Request.OPPOSE))
        if profile.status is PatientStatus.CREATED and not opposition_window_open(profile, now):
            raise Refused(finding("lifecycle.expired-code"))

    def _opposed(self, profile: Profile, now: datetime, who: str) -> Profile | None:
        """created -> opposed, with its receipt stored first (None: the profile changed meanwhile)."""
        values = opposition_values(now)
        ref = self._store_receipt(replace(profile, status=PatientStatus.OPPOSED, **values))
        done = self._p.profiles.transition(
            profile.ins, from_statuses=(PatientStatus.CREATED,), to_status=PatientStatus.OPPOSED,
            values={**values, **_receipt_values(ref)}, where={"code_generation": profile.code_generation})
        if done is not None:
            self._withdraw(profile.ins)
            self._audit(profile.ins, "lifecycle.opposed", who)
        return done

    def _receipted(self, profile: Profile) -> Profile | None:
        """An opposed profile, with a receipt (made now for one imported opposed from the roster)."""
        if profile.receipt_key:
            return profile
        ref = self._store_receipt(profile)
        done = self._p.profiles.transition(profile.ins, from_statuses=(PatientStatus.OPPOSED,),
                                           to_status=PatientStatus.OPPOSED, values=_receipt_values(ref),
                                           where={"receipt_key": ""})
        return done or self._p.profiles.profile(profile.ins)

    def _store_receipt(self, profile: Profile) -> BlobRef:
        patient = self._p.index.patient(profile.ins)
        if patient is None:
            raise NotFound("the patient is not in the registry")
        pdf = self._p.receipts.render(patient, profile)
        return self._p.store.put(pdf, kind=RECEIPT_KIND, content_type=PDF)

    def _new_code(self, profile: Profile, now: datetime, request: Request,
                  channel: Channel | None = None) -> Profile | None:
        """Issue a new code (generation + 1) and announce it (on `channel` when the person chose one);
        None when the profile changed meanwhile."""
        p = self._p
        code = new_code(p.random_bytes)
        issued = p.profiles.reissue(profile.ins, code_sha256=code_digest(p.secret, profile.ins, code),
                                    expires_at=reissue_expiry(profile, now, request, p.rules),
                                    from_statuses=(profile.status,), now=now)
        if issued is not None:
            self._withdraw(profile.ins)  # the previous code stopped working: its letter is not printed
            self._send_code(issued, code, now, channel)
        return issued

    def _send_code(self, profile: Profile, code: str, now: datetime, channel: Channel | None = None) -> None:
        """The code's event (id deterministic per code generation), then its mark as handed over."""
        self._p.announce(Event(event_id=self.code_event_id(profile),
                               kind=EventKind.ACTIVATION_CODE, ins=profile.ins, occurred_at=now, urgent=True,
                               code=code, code_expires=profile.code_expires_at,
                               channel=str(channel) if channel else ""))
        self._p.profiles.mark_announced(profile.ins, profile.code_generation)

    def code_event_id(self, profile: Profile) -> str:
        """`activation:<keyed hash of the INS and the profile's creation>:<code generation>`: the same for
        one code however often it is announced, new for each code (and for a profile made again after a
        purge), and no INS in the id."""
        born = profile.created_at.isoformat()
        tag = hmac.new(self._p.secret, f"code-event\x1f{profile.ins}\x1f{born}".encode(), hashlib.sha256)
        return f"activation:{tag.hexdigest()[:24]}:{profile.code_generation}"

    def _opened(self, profile: Profile) -> None:
        at = reimbursement_release_at(profile, self._p.rules)
        if self._p.opened is not None and at is not None:
            self._p.opened(profile.ins, at)

    def _withdraw(self, ins: str) -> None:
        if self._p.withdraw_codes is not None:
            self._p.withdraw_codes(ins)

    def _audit(self, ins: str, action: str, actor: str) -> None:
        if self._p.audit is not None:
            self._p.audit(ins, action, actor)


def _receipt_values(ref: BlobRef) -> dict[str, Any]:
    return {"receipt_key": ref.key, "receipt_bucket": ref.bucket, "receipt_sha256": ref.sha256,
            "receipt_size": ref.size}


def _raise_if_locked(refusal: dict[str, object]) -> None:
    if refusal.get("retry_after_s") is not None:
        raise Refused(refusal)


def _raise_if_refused(step: PatientStatus | dict[str, object]) -> None:
    if isinstance(step, dict):
        raise Refused(step)
