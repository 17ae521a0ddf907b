"""The rules of a profile's life (pure): states and requests, codes, factors, rate limits and timers.

Owns: LifecycleRules (the durations), the transition table (status x request -> new status, or the rule
that refuses it), the factor check with its lockout arithmetic, the values each transition writes, and
the due-date helpers (automatic opening, purge, majority, reimbursement release).  The code and the
Vitale serial themselves (generation, digests) and StrangerAttempts are in pipelines.record.core.factors.
Nothing here reads a clock: every function takes `now` (UTC) or a Paris date.

Decisions (documented here because the service and the API rely on them):
* States: created -> active (activated with the code), created -> opened (opened automatically once the
  code's 6 weeks are over: an open record, never activated by its holder), opened -> active (the holder
  asked for a code with INS + Vitale serial, `request_code`, and activated with it), created -> opposed
  (within the 6 weeks only: once the profile is open, the person closes it instead), opposed -> active
  (reversal: only with a new code, issued by `reissue`), created|opened|active -> closed (then archived
  `archive_years` and purged).  `closed` is final.
* The 6 weeks: a created profile's code is valid while now < code_expires_at; at code_expires_at the code
  is expired and the profile is due to open (the same instant, so there is no gap and no overlap).  A
  lost-letter code (reissue while created) keeps that deadline: it replaces the code, it does not extend
  the period.  A reversal code (opposed) is valid `code_validity` from its issue.
* A minor turning 18 (Europe/Paris date; born on 29 February: adult on 1 March in a common year, as
  pipelines.notify.core.policy.is_minor counts) gets a new code valid `code_validity`; while created, that also
  moves the automatic opening (the young adult gets their own 6 weeks to decide).  An active minor's
  profile stays open; the code lets the young adult activate it themself (activation "code").
* Factors: the code, the INS and the Vitale card serial are checked together; a refusal never says which
  one was wrong.  Every refused attempt of the person counts (wrong factors, but also a state or an expired
  code that refuses it), per profile (activation, opposition and code requests alike), and only a
  successful activation or opposition resets the counter; the lock is checked first, in every state, so
  a series of attempts meets the same lockout whatever the profile's state: the `max_failed_attempts`-th
  counted attempt locks for `lockout`, and each further one (possible once the lock is over) locks for
  twice as long as the previous lock, up to `max_lockout` (5 -> 15 min, 6 -> 30 min, 7 -> 1 h, ...
  11 -> 16 h, 12 and more -> 24 h).  Attempts while locked are refused without being checked or
  counted.  A new code does not reset the counter.  An INS without a profile is counted the same way by
  the service (StrangerAttempts), so a lockout does not tell a known INS from an unknown one.
* A code request (the holder of a created or opened profile, with INS + Vitale serial) counts as one
  attempt even when it succeeds: at most `max_failed_attempts` codes before the first lock.
* Reimbursement history is released `reimbursement_delay` after `activated_at`; opening with the code and
  automatic opening both set it (a profile imported already active or opened: the import time).
  Activating an already open profile later (the young adult, the holder of an opened profile) keeps the
  first `activated_at`: the release stays keyed on the opening.
* Closure: purge_after = closed_at + `archive_years` calendar years, 29 February -> 28 February (as
  pipelines.record.core.restitution.archive_ends counts), in UTC.
Does not: store anything (storage.sql.profiles), send letters (pipelines.notify.service) or render receipts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from hub.records import OPEN_STATUSES, PatientStatus
from pipelines.record.core.profile import Activation, Profile

PARIS = ZoneInfo("Europe/Paris")
#: Crockford's base32: no I, L, O, U (nothing to misread on paper); 32 symbols, so one random byte & 31
#: picks a symbol without bias.
LOCATION = "profile"


class Request(StrEnum):
    """What is asked of a profile: by the person or an operator (the first four) or by the sweep."""

    ACTIVATE = "activate"
    OPPOSE = "oppose"
    REISSUE = "reissue"
    CLOSE = "close"
    AUTO_OPEN = "auto_open"
    INVITE = "invite"        # a minor turned 18: a code for the young adult
    REQUEST_CODE = "request_code"  # the holder asks for a code with INS + Vitale serial
    PURGE = "purge"


@dataclass(frozen=True, slots=True)
class LifecycleRules:
    """The durations and limits of a profile's life (see the module docstring for how they apply)."""

    code_validity: timedelta = timedelta(weeks=6)
    reimbursement_delay: timedelta = timedelta(hours=48)
    archive_years: int = 10
    majority_age: int = 18
    max_failed_attempts: int = 5
    lockout: timedelta = timedelta(minutes=15)
    max_lockout: timedelta = timedelta(hours=24)


DEFAULT_RULES = LifecycleRules()

S, R = PatientStatus, Request
#: status x request -> the new status, or the rule that refuses the request.  Same-status entries are
#: allowed no-ops (opposing twice, closing twice) or steps that change only the code.
TRANSITIONS: dict[tuple[PatientStatus, Request], PatientStatus | str] = {
    (S.CREATED, R.ACTIVATE): S.ACTIVE, (S.OPPOSED, R.ACTIVATE): S.ACTIVE, (S.ACTIVE, R.ACTIVATE): S.ACTIVE,
    (S.OPENED, R.ACTIVATE): S.ACTIVE, (S.CLOSED, R.ACTIVATE): "lifecycle.closed",
    (S.CREATED, R.OPPOSE): S.OPPOSED, (S.OPPOSED, R.OPPOSE): S.OPPOSED,
    (S.ACTIVE, R.OPPOSE): "lifecycle.not-created", (S.OPENED, R.OPPOSE): "lifecycle.not-created",
    (S.CLOSED, R.OPPOSE): "lifecycle.closed",
    (S.CREATED, R.REISSUE): S.CREATED, (S.OPPOSED, R.REISSUE): S.OPPOSED, (S.OPENED, R.REISSUE): S.OPENED,
    (S.ACTIVE, R.REISSUE): "lifecycle.not-reissuable", (S.CLOSED, R.REISSUE): "lifecycle.closed",
    (S.CREATED, R.REQUEST_CODE): S.CREATED, (S.OPENED, R.REQUEST_CODE): S.OPENED,
    (S.ACTIVE, R.REQUEST_CODE): "lifecycle.not-reissuable", (S.OPPOSED, R.REQUEST_CODE): "lifecycle.opposed",
    (S.CLOSED, R.REQUEST_CODE): "lifecycle.closed",
    (S.CREATED, R.CLOSE): S.CLOSED, (S.ACTIVE, R.CLOSE): S.CLOSED, (S.OPENED, R.CLOSE): S.CLOSED,
    (S.CLOSED, R.CLOSE): S.CLOSED, (S.OPPOSED, R.CLOSE): "lifecycle.opposed",
    (S.CREATED, R.AUTO_OPEN): S.OPENED, (S.ACTIVE, R.AUTO_OPEN): "lifecycle.not-created",
    (S.OPENED, R.AUTO_OPEN): "lifecycle.not-created",
    (S.OPPOSED, R.AUTO_OPEN): "lifecycle.not-created", (S.CLOSED, R.AUTO_OPEN): "lifecycle.closed",
    (S.CREATED, R.INVITE): S.CREATED, (S.ACTIVE, R.INVITE): S.ACTIVE, (S.OPPOSED, R.INVITE): S.OPPOSED,
    (S.OPENED, R.INVITE): S.OPENED, (S.CLOSED, R.INVITE): "lifecycle.closed",
    (S.CLOSED, R.PURGE): S.CLOSED, (S.CREATED, R.PURGE): "lifecycle.not-closed",
    (S.ACTIVE, R.PURGE): "lifecycle.not-closed", (S.OPPOSED, R.PURGE): "lifecycle.not-closed",
    (S.OPENED, R.PURGE): "lifecycle.not-closed",
}

#: rule -> (English, French).  The factor refusal never says which factor was wrong.
MESSAGES: dict[str, tuple[str, str]] = {
    "lifecycle.activation-refused": (
        "These details do not match: check the code of your letter, your INS and the serial number of your "
        "Vitale card, then try again. After several wrong attempts, activation is paused for a while.",
        "Ces informations ne correspondent pas : vérifiez le code de votre courrier, votre INS et le numéro "
        "de série de votre carte Vitale, puis réessayez. Après plusieurs essais erronés, l'activation est "
        "suspendue pour un temps."),
    "lifecycle.locked": (
        "Too many wrong attempts: try again after {retry}.",
        "Trop d'essais erronés : réessayez après {retry}."),
    "lifecycle.expired-code": (
        "This code is no longer valid (its 6 weeks are over). Ask for a new code; once the profile is open, "
        "it can be closed at any time.",
        "Ce code n'est plus valable (ses 6 semaines sont écoulées). Demandez un nouveau code ; une fois le "
        "profil ouvert, il peut être clôturé à tout moment."),
    "lifecycle.no-code": (
        "No code is waiting for this profile: ask for a new code (by SMS, e-mail or letter).",
        "Aucun code n'est en attente pour ce profil : demandez un nouveau code (par SMS, e-mail ou courrier)."),
    "lifecycle.not-created": (
        "This profile is already open: it can no longer be opposed or activated with a letter's code; "
        "it can be closed instead.",
        "Ce profil est déjà ouvert : il ne peut plus faire l'objet d'une opposition ni être activé avec le "
        "code d'un courrier ; il peut en revanche être clôturé."),
    "lifecycle.not-reissuable": (
        "This profile is open: it needs no activation code.",
        "Ce profil est ouvert : il n'a pas besoin de code d'activation."),
    "lifecycle.opposed": (
        "The creation of this profile was opposed: there is nothing to close. To reverse the opposition, ask "
        "for a new code.",
        "Ce profil a fait l'objet d'une opposition : il n'y a rien à clôturer. Pour revenir sur "
        "l'opposition, demandez un nouveau code."),
    "lifecycle.closed": (
        "This profile is closed.",
        "Ce profil est clôturé."),
    "lifecycle.not-closed": (
        "Only a closed profile is purged.",
        "Seul un profil clôturé est purgé."),
}


def finding(rule: str, **extra: Any) -> dict[str, object]:
    """The hub.errors.Refused finding for `rule` (`extra` fills the message and is kept in the finding)."""
    english, french = MESSAGES[rule]
    texts = {k: v for k, v in extra.items() if isinstance(v, str)}
    return {"rule": rule, "location": LOCATION, "message_en": english.format(**texts),
            "message_fr": french.format(**texts), **extra}


def next_status(status: PatientStatus, request: Request) -> PatientStatus | dict[str, object]:
    """The status `request` leads to from `status`, or the finding that refuses it."""
    step = TRANSITIONS[(status, request)]
    return step if isinstance(step, PatientStatus) else finding(step)


# -- factors and lockouts --------------------------------------------------------------------------------


def lockout_for(failed_attempts: int, rules: LifecycleRules = DEFAULT_RULES) -> timedelta | None:
    """How long the `failed_attempts`-th consecutive wrong attempt locks activation (None: no lock)."""
    beyond = failed_attempts - rules.max_failed_attempts
    if beyond < 0:
        return None
    if beyond >= 32:  # 2**32 * lockout is far past any cap
        return rules.max_lockout
    return min(rules.lockout * (1 << beyond), rules.max_lockout)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of a factor check.  `count_failure`: record one more wrong attempt (durably, before
    answering) with `locked_until` as the new lock; `finding` is the refusal to raise when not allowed."""

    allowed: bool
    finding: dict[str, object] | None = None
    count_failure: bool = False
    locked_until: datetime | None = None


def check_activation(profile: Profile, *, code_ok: bool, vitale_ok: bool, now: datetime,
                     rules: LifecycleRules = DEFAULT_RULES) -> Decision:
    """May the person activate `profile` with these factors now?"""
    return check_factors(profile, Request.ACTIVATE, code_ok=code_ok, vitale_ok=vitale_ok, now=now, rules=rules)


def check_factors(profile: Profile, request: Request, *, code_ok: bool, vitale_ok: bool, now: datetime,
                  rules: LifecycleRules = DEFAULT_RULES) -> Decision:
    """The person's own ACTIVATE or OPPOSE with the letter's factors.  In order: not locked (checked
    first, whatever the state), the state allows it, a code is there to check, the factors match, the code
    is still valid (an opposed profile opposing again: idempotent, no validity needed).  Any refusal but
    the lock counts one attempt (`refused_attempt`)."""
    if profile.locked_until is not None and now < profile.locked_until:
        return Decision(False, locked(profile.locked_until, now))
    refusal = _factor_refusal(profile, request, code_ok=code_ok, vitale_ok=vitale_ok, now=now)
    if refusal is None:
        return Decision(True)
    return refused_attempt(profile.failed_attempts, refusal, now, rules)


def check_code_request(profile: Profile, *, vitale_ok: bool, now: datetime,
                       rules: LifecycleRules = DEFAULT_RULES) -> Decision:
    """The holder asks for a code with INS + Vitale serial (created: a lost letter; opened: to activate).
    Allowed: not locked, the state allows it, the serial matches.  Allowed or not, the request counts one
    attempt (`count_failure`), so codes cannot be asked for without limit."""
    if profile.locked_until is not None and now < profile.locked_until:
        return Decision(False, locked(profile.locked_until, now))
    step = next_status(profile.status, Request.REQUEST_CODE)
    refusal = step if isinstance(step, dict) else None if vitale_ok else finding("lifecycle.activation-refused")
    if refusal is None and profile.status is PatientStatus.CREATED and code_expired(profile, now):
        refusal = finding("lifecycle.expired-code")  # it opens now; once opened, a code can be asked for
    counted = refused_attempt(profile.failed_attempts, refusal or finding("lifecycle.activation-refused"), now, rules)
    if refusal is None:
        return replace(counted, allowed=True, finding=None)
    return counted


def refused_attempt(failed_attempts: int, refusal: dict[str, object], now: datetime,
                    rules: LifecycleRules = DEFAULT_RULES) -> Decision:
    """One more counted attempt after `failed_attempts`: `refusal`, or the lockout when this one locks."""
    lock = lockout_for(failed_attempts + 1, rules)
    if lock is None:
        return Decision(False, refusal, count_failure=True)
    return Decision(False, locked(now + lock, now), count_failure=True, locked_until=now + lock)


def _factor_refusal(profile: Profile, request: Request, *, code_ok: bool, vitale_ok: bool,
                    now: datetime) -> dict[str, object] | None:
    step = next_status(profile.status, request)
    if isinstance(step, dict):
        return step
    missing = _no_code(profile, request)
    if missing is not None:
        return missing
    if not (code_ok and vitale_ok):
        return finding("lifecycle.activation-refused")
    repeat_opposition = request is Request.OPPOSE and profile.status is PatientStatus.OPPOSED
    if not repeat_opposition and code_expired(profile, now):
        return finding("lifecycle.expired-code")
    return None


def _no_code(profile: Profile, request: Request) -> dict[str, object] | None:
    """Activation needs a pending code; an opposition with factors needs the letter's digest on file."""
    if request is Request.ACTIVATE and not profile.code_pending:
        return finding("lifecycle.not-created" if profile.status is PatientStatus.ACTIVE else "lifecycle.no-code")
    if request is Request.OPPOSE and not profile.code_sha256:
        return finding("lifecycle.no-code")
    return None


def locked(until: datetime, now: datetime) -> dict[str, object]:
    """The lockout refusal: when to retry (Paris time in the texts, ISO UTC and seconds in the finding)."""
    local = until.astimezone(PARIS).strftime("%d/%m/%Y %H:%M")
    seconds = max(1, int((until - now).total_seconds() + 0.999))
    return finding("lifecycle.locked", retry=local, retry_after=until.astimezone(UTC).isoformat(),
                   retry_after_s=seconds)


def code_expired(profile: Profile, now: datetime) -> bool:
    """The code's validity is over (valid while now < code_expires_at)."""
    return profile.code_expires_at is None or now >= profile.code_expires_at


def opposition_window_open(profile: Profile, now: datetime) -> bool:
    """An operator may record an opposition: the profile is created and its code's period is not over."""
    return profile.status is PatientStatus.CREATED and not code_expired(profile, now)


# -- what each transition writes ----------------------------------------------------------------------


def activation_values(profile: Profile, now: datetime) -> dict[str, Any]:
    """Activated with the code: the code is used up, the counters reset; the first opening time stays."""
    return {"activated_at": profile.activated_at or now, "activation": Activation.CODE, "code_sha256": "",
            "failed_attempts": 0, "locked_until": None}


def opening_values(now: datetime) -> dict[str, Any]:
    """Opened automatically after the 6 weeks (status `opened`): the letter's code is dead; the holder
    asks for a new one (request_code) to activate.  `activated_at` is the opening (reimbursements)."""
    return {"activated_at": now, "activation": Activation.AUTOMATIC, "code_sha256": ""}


def opposition_values(now: datetime) -> dict[str, Any]:
    """Opposed: no code pending any more (a reversal needs a new one); the digest stays, so the person can
    ask for their receipt again with the same letter."""
    return {"opposed_at": now, "code_expires_at": None, "failed_attempts": 0, "locked_until": None}


def closure_values(now: datetime, rules: LifecycleRules = DEFAULT_RULES) -> dict[str, Any]:
    """Closed: archived until purge_after; no code any more."""
    return {"closed_at": now, "purge_after": add_years(now, rules.archive_years), "code_sha256": "",
            "code_expires_at": None}


def reissue_expiry(profile: Profile, now: datetime, request: Request,
                   rules: LifecycleRules = DEFAULT_RULES) -> datetime:
    """Until when a new code is valid: a lost letter while created keeps the 6-week deadline; a reversal
    code, a young adult's invitation or an opened profile's code gets a full period from now."""
    keeps_deadline = request in (Request.REISSUE, Request.REQUEST_CODE)
    if keeps_deadline and profile.status is PatientStatus.CREATED and profile.code_expires_at:
        return profile.code_expires_at
    return now + rules.code_validity


# -- timers -------------------------------------------------------------------------------------------


def auto_open_due(profile: Profile, now: datetime) -> bool:
    """A created profile opens automatically once its code's validity is over."""
    return profile.status is PatientStatus.CREATED and profile.code_expires_at is not None \
        and now >= profile.code_expires_at


def purge_due(profile: Profile, now: datetime) -> bool:
    """A closed profile's content is purged once its archive period is over (once)."""
    return profile.status is PatientStatus.CLOSED and profile.purged_at is None \
        and profile.purge_after is not None and now >= profile.purge_after


def add_years(moment: datetime, years: int) -> datetime:
    """`years` calendar years later; 29 February -> 28 February when that year has none."""
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        return moment.replace(year=moment.year + years, day=28)


def paris_date(moment: datetime) -> date:
    """The calendar date in France at `moment` (birth dates are French dates)."""
    return moment.astimezone(PARIS).date()


def majority_date(birth_date: str, age: int = DEFAULT_RULES.majority_age) -> date | None:
    """The day a person born on `birth_date` (YYYY-MM-DD) turns `age`; 29 February -> 1 March in a common
    year (as pipelines.notify.core.policy.is_minor counts).  None when the birth date is not a date."""
    try:
        born = date.fromisoformat(birth_date[:10])
    except ValueError:
        return None
    try:
        return born.replace(year=born.year + age)
    except ValueError:
        return date(born.year + age, 3, 1)


def adult_since(birth_date: str, today_paris: date, rules: LifecycleRules = DEFAULT_RULES) -> date | None:
    """The day the person came of age if they are of age on `today_paris` (a Europe/Paris date); None
    when they are a minor or the birth date is unknown."""
    since = majority_date(birth_date, rules.majority_age)
    return since if since is not None and since <= today_paris else None


def majority_cutoff(today_paris: date, rules: LifecycleRules = DEFAULT_RULES) -> str:
    """The latest birth date (YYYY-MM-DD) of a person of age on `today_paris` (the bound of the query of
    minors turning adult; adult_since still decides each one)."""
    year = today_paris.year - rules.majority_age
    try:
        return today_paris.replace(year=year).isoformat()
    except ValueError:  # today is 29 February and that year has none: born on 28 February, of age today
        return (date(year, 3, 1) - timedelta(days=1)).isoformat()


def reimbursement_release_at(profile: Profile, rules: LifecycleRules = DEFAULT_RULES) -> datetime | None:
    """When the insurer's reimbursement history may be filed: `reimbursement_delay` after the profile was
    opened (with the code or automatically: active or opened); None while it is not open."""
    if profile.activated_at is None or profile.status not in OPEN_STATUSES:
        return None
    return profile.activated_at + rules.reimbursement_delay
