"""The lifecycle rules (pure): the transition table, codes and factors, lockouts and every timer at its
exact boundary (6 weeks, 48 hours, 10 years with 29 February, the 18th birthday at Paris midnight)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from hub import codes
from hub.records import PatientStatus
from pipelines.record.core import factors
from pipelines.record.core import lifecycle as lc
from pipelines.record.core.lifecycle import DEFAULT_RULES, Request
from pipelines.record.core.profile import Activation, Profile

S, R = PatientStatus, Request
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
SIX_WEEKS = timedelta(weeks=6)
INS = "279035121518989"
SECRET = b"s" * 32
US = timedelta(microseconds=1)


def counting_random(n: int) -> bytes:
    """A deterministic random source: 0, 1, 2, ..."""
    return bytes(range(n))


def created(**changes: object) -> Profile:
    base = Profile(ins=INS, status=S.CREATED, created_at=NOW, code_expires_at=NOW + SIX_WEEKS, code_generation=1,
                   code_sha256="c" * 64, vitale_sha256="v" * 64)
    return replace(base, **changes)  # type: ignore[arg-type]


# -- the transition table -----------------------------------------------------------------------------

EXPECTED: dict[tuple[PatientStatus, Request], PatientStatus | str] = {
    (S.CREATED, R.ACTIVATE): S.ACTIVE, (S.ACTIVE, R.ACTIVATE): S.ACTIVE, (S.OPPOSED, R.ACTIVATE): S.ACTIVE,
    (S.CLOSED, R.ACTIVATE): "lifecycle.closed", (S.OPENED, R.ACTIVATE): S.ACTIVE,
    (S.OPENED, R.OPPOSE): "lifecycle.not-created", (S.OPENED, R.REISSUE): S.OPENED,
    (S.OPENED, R.CLOSE): S.CLOSED, (S.OPENED, R.AUTO_OPEN): "lifecycle.not-created",
    (S.OPENED, R.INVITE): S.OPENED, (S.OPENED, R.PURGE): "lifecycle.not-closed",
    (S.CREATED, R.REQUEST_CODE): S.CREATED, (S.OPENED, R.REQUEST_CODE): S.OPENED,
    (S.ACTIVE, R.REQUEST_CODE): "lifecycle.not-reissuable", (S.OPPOSED, R.REQUEST_CODE): "lifecycle.opposed",
    (S.CLOSED, R.REQUEST_CODE): "lifecycle.closed",
    (S.CREATED, R.OPPOSE): S.OPPOSED, (S.ACTIVE, R.OPPOSE): "lifecycle.not-created",
    (S.OPPOSED, R.OPPOSE): S.OPPOSED, (S.CLOSED, R.OPPOSE): "lifecycle.closed",
    (S.CREATED, R.REISSUE): S.CREATED, (S.ACTIVE, R.REISSUE): "lifecycle.not-reissuable",
    (S.OPPOSED, R.REISSUE): S.OPPOSED, (S.CLOSED, R.REISSUE): "lifecycle.closed",
    (S.CREATED, R.CLOSE): S.CLOSED, (S.ACTIVE, R.CLOSE): S.CLOSED, (S.OPPOSED, R.CLOSE): "lifecycle.opposed",
    (S.CLOSED, R.CLOSE): S.CLOSED,
    (S.CREATED, R.AUTO_OPEN): S.OPENED, (S.ACTIVE, R.AUTO_OPEN): "lifecycle.not-created",
    (S.OPPOSED, R.AUTO_OPEN): "lifecycle.not-created", (S.CLOSED, R.AUTO_OPEN): "lifecycle.closed",
    (S.CREATED, R.INVITE): S.CREATED, (S.ACTIVE, R.INVITE): S.ACTIVE, (S.OPPOSED, R.INVITE): S.OPPOSED,
    (S.CLOSED, R.INVITE): "lifecycle.closed",
    (S.CREATED, R.PURGE): "lifecycle.not-closed", (S.ACTIVE, R.PURGE): "lifecycle.not-closed",
    (S.OPPOSED, R.PURGE): "lifecycle.not-closed", (S.CLOSED, R.PURGE): S.CLOSED,
}


def test_the_table_covers_every_status_and_request() -> None:
    assert set(lc.TRANSITIONS) == set(itertools.product(PatientStatus, Request)) == set(EXPECTED)


@pytest.mark.parametrize(("status", "request_"), sorted(EXPECTED, key=str))
def test_transition(status: PatientStatus, request_: Request) -> None:
    step = lc.next_status(status, request_)
    expected = EXPECTED[(status, request_)]
    if isinstance(expected, PatientStatus):
        assert step is expected
    else:
        assert isinstance(step, dict)
        assert step["rule"] == expected and step["location"] == "profile"
        assert step["message_en"] and step["message_fr"]


def test_every_rule_has_both_messages() -> None:
    refusals = {s for s in lc.TRANSITIONS.values() if not isinstance(s, PatientStatus)}
    for rule in refusals | {"lifecycle.activation-refused", "lifecycle.expired-code", "lifecycle.no-code"}:
        english, french = lc.MESSAGES[rule]
        assert english and french


# -- codes and factors --------------------------------------------------------------------------------


def test_a_code_is_twelve_unambiguous_symbols_in_three_groups() -> None:
    code = codes.new_code(counting_random)
    assert code == "0123-4567-89AB"
    assert codes.new_code(lambda n: bytes([255]) * n) == "ZZZZ-ZZZZ-ZZZZ"
    assert not set(codes.CODE_ALPHABET) & set("ILOU") and len(set(codes.CODE_ALPHABET)) == 32
    with pytest.raises(ValueError):
        codes.new_code(lambda n: b"\0")


def test_a_code_is_digested_as_read_off_paper() -> None:
    digest = factors.code_digest(SECRET, INS, "0123-4567-89AB")
    for typed in ("0123 4567 89ab", "O123-4567-89AB", "0I23456789AB", "0l23-4567-89ab "):
        assert factors.code_digest(SECRET, INS, typed) == digest
    assert factors.code_digest(SECRET, INS[:-1] + "0", "0123-4567-89AB") != digest  # bound to the INS
    assert factors.code_digest(b"t" * 32, INS, "0123-4567-89AB") != digest          # keyed
    assert "0123" not in digest and len(digest) == 64
    with pytest.raises(ValueError):
        factors.code_digest(b"", INS, "x")


def test_vitale_serial_normalisation_and_digest() -> None:
    assert factors.normalise_vitale(" 1234 5678-90.ab ") == "1234567890AB"
    assert factors.normalise_vitale("1234567") is None and factors.normalise_vitale("12345678#") is None
    assert factors.normalise_vitale("1" * 21) is None
    assert factors.vitale_digest(SECRET, INS, "12345678 90") == factors.vitale_digest(SECRET, INS, "1234567890")
    assert factors.vitale_digest(SECRET, INS, "bad") == ""
    assert not factors.digest_matches("", "") and not factors.digest_matches("a" * 64, "")
    assert factors.digest_matches("a" * 64, "a" * 64)


@pytest.mark.parametrize(("failures", "lock"), [
    (1, None), (4, None), (5, timedelta(minutes=15)), (6, timedelta(minutes=30)), (7, timedelta(hours=1)),
    (11, timedelta(hours=16)), (12, timedelta(hours=24)), (13, timedelta(hours=24)), (500, timedelta(hours=24)),
])
def test_lockout_doubles_from_the_fifth_wrong_attempt_up_to_a_day(failures: int, lock: timedelta | None) -> None:
    assert lc.lockout_for(failures) == lock


def test_right_factors_activate_until_the_last_microsecond_of_the_six_weeks() -> None:
    profile = created()
    assert lc.check_activation(profile, code_ok=True, vitale_ok=True, now=NOW + SIX_WEEKS - US).allowed
    expired = lc.check_activation(profile, code_ok=True, vitale_ok=True, now=NOW + SIX_WEEKS)
    assert not expired.allowed and expired.count_failure  # issue 12: every refused attempt counts
    assert expired.finding is not None and expired.finding["rule"] == "lifecycle.expired-code"


def test_one_refusal_whichever_factor_is_wrong() -> None:
    findings = [lc.check_activation(created(), code_ok=code, vitale_ok=vitale, now=NOW)
                for code, vitale in ((False, True), (True, False), (False, False))]
    assert all(d.count_failure and d.locked_until is None and not d.allowed for d in findings)
    assert findings[0].finding == findings[1].finding == findings[2].finding
    assert findings[0].finding is not None and findings[0].finding["rule"] == "lifecycle.activation-refused"


def test_the_fifth_wrong_attempt_locks_and_says_until_when() -> None:
    decision = lc.check_activation(created(failed_attempts=4), code_ok=False, vitale_ok=True, now=NOW)
    assert decision.count_failure and decision.locked_until == NOW + timedelta(minutes=15)
    assert decision.finding is not None and decision.finding["rule"] == "lifecycle.locked"
    assert decision.finding["retry_after_s"] == 900
    assert "02/03/2026 10:45" in str(decision.finding["message_en"])  # Paris time (CET, UTC+1)


def test_attempts_while_locked_are_neither_checked_nor_counted() -> None:
    until = NOW + timedelta(minutes=15)
    profile = created(failed_attempts=5, locked_until=until)
    during = lc.check_activation(profile, code_ok=True, vitale_ok=True, now=until - US)
    assert not during.allowed and not during.count_failure
    assert during.finding is not None and during.finding["rule"] == "lifecycle.locked"
    assert during.finding["retry_after_s"] == 1
    assert lc.check_activation(profile, code_ok=True, vitale_ok=True, now=until).allowed
    again = lc.check_activation(profile, code_ok=False, vitale_ok=False, now=until)
    assert again.locked_until == until + timedelta(minutes=30)  # the 6th: twice as long


@pytest.mark.parametrize(("profile", "rule"), [
    (created(status=S.CLOSED), "lifecycle.closed"),
    (created(status=S.ACTIVE, code_sha256=""), "lifecycle.not-created"),
    (created(status=S.OPPOSED, code_expires_at=None), "lifecycle.no-code"),
])
def test_activation_refused_by_state_before_any_factor_and_counted(profile: Profile, rule: str) -> None:
    decision = lc.check_activation(profile, code_ok=False, vitale_ok=False, now=NOW)
    assert decision.count_failure and decision.finding is not None and decision.finding["rule"] == rule
    locking = lc.check_activation(replace(profile, failed_attempts=4), code_ok=False, vitale_ok=False, now=NOW)
    assert locking.locked_until == NOW + timedelta(minutes=15)  # the same lockout in every state (issue 12)
    assert locking.finding is not None and locking.finding["rule"] == "lifecycle.locked"


@pytest.mark.parametrize("status", list(PatientStatus))
def test_the_lock_is_checked_first_in_every_state(status: PatientStatus) -> None:
    profile = created(status=status, failed_attempts=5, locked_until=NOW + timedelta(minutes=1))
    for request_ in (Request.ACTIVATE, Request.OPPOSE):
        decision = lc.check_factors(profile, request_, code_ok=False, vitale_ok=False, now=NOW)
        assert decision.finding is not None and decision.finding["rule"] == "lifecycle.locked"
        assert not decision.count_failure
    asked = lc.check_code_request(profile, vitale_ok=True, now=NOW)
    assert not asked.allowed and asked.finding is not None and asked.finding["rule"] == "lifecycle.locked"


def test_an_opened_profile_activates_with_a_requested_code_and_keeps_its_opening() -> None:
    opened = created(status=S.OPENED, activated_at=NOW, activation=Activation.AUTOMATIC,
                     code_expires_at=NOW + timedelta(weeks=7) + SIX_WEEKS)
    later = NOW + timedelta(weeks=7)
    assert lc.check_activation(opened, code_ok=True, vitale_ok=True, now=later).allowed
    no_code = lc.check_activation(replace(opened, code_sha256=""), code_ok=False, vitale_ok=True, now=later)
    assert no_code.finding is not None and no_code.finding["rule"] == "lifecycle.no-code"
    values = lc.activation_values(opened, later)
    assert values["activated_at"] == NOW and values["activation"] is Activation.CODE
    assert lc.reissue_expiry(opened, later, Request.REQUEST_CODE) == later + SIX_WEEKS
    assert lc.reissue_expiry(created(), later, Request.REQUEST_CODE) == NOW + SIX_WEEKS  # a lost letter


@pytest.mark.parametrize(("status", "serial_ok", "allowed"), [
    (S.CREATED, True, True), (S.OPENED, True, True), (S.OPENED, False, False), (S.ACTIVE, True, False),
    (S.OPPOSED, True, False), (S.CLOSED, True, False),
])
def test_a_code_request_counts_one_attempt_whatever_its_outcome(status: PatientStatus, serial_ok: bool,
                                                                allowed: bool) -> None:
    decision = lc.check_code_request(created(status=status), vitale_ok=serial_ok, now=NOW)
    assert decision.allowed is allowed and decision.count_failure
    fifth = lc.check_code_request(created(status=status, failed_attempts=4), vitale_ok=serial_ok, now=NOW)
    assert fifth.allowed is allowed and fifth.locked_until == NOW + timedelta(minutes=15)


def test_a_created_profile_past_its_six_weeks_gets_no_code_until_it_is_opened() -> None:
    late = lc.check_code_request(created(), vitale_ok=True, now=NOW + SIX_WEEKS)
    assert not late.allowed and late.count_failure
    assert late.finding is not None and late.finding["rule"] == "lifecycle.expired-code"


def test_an_unknown_ins_meets_the_same_refusals_and_lockout_as_a_profile() -> None:
    strangers = factors.StrangerAttempts(capacity=2)
    refusals = [strangers.attempt("k1", NOW) for _ in range(5)]
    assert [r["rule"] for r in refusals] == ["lifecycle.activation-refused"] * 4 + ["lifecycle.locked"]
    profile = created()
    for attempt in range(5):
        decision = lc.check_activation(replace(profile, failed_attempts=attempt), code_ok=False, vitale_ok=False,
                                       now=NOW)
        assert decision.finding is not None and decision.finding["rule"] == refusals[attempt]["rule"]
    assert refusals[-1]["retry_after_s"] == 900
    assert strangers.attempt("k1", NOW + timedelta(minutes=14))["rule"] == "lifecycle.locked"  # not counted
    strangers.attempt("k2", NOW)
    strangers.attempt("k3", NOW)  # capacity 2: the oldest (k1) is forgotten
    assert strangers.attempt("k1", NOW)["rule"] == "lifecycle.activation-refused"


def test_a_reversal_code_and_a_young_adults_code_activate() -> None:
    reversal = created(status=S.OPPOSED, opposed_at=NOW, code_expires_at=NOW + SIX_WEEKS)
    invited = created(status=S.ACTIVE, activated_at=NOW, activation=Activation.AUTOMATIC)
    for profile in (reversal, invited):
        assert lc.check_activation(profile, code_ok=True, vitale_ok=True, now=NOW).allowed
    values = lc.activation_values(invited, NOW + timedelta(days=3))
    assert values["activated_at"] == NOW and values["activation"] is Activation.CODE  # the first opening stays


def test_opposing_again_needs_the_factors_but_no_valid_code() -> None:
    opposed = created(status=S.OPPOSED, opposed_at=NOW, code_expires_at=None)
    later = NOW + timedelta(weeks=60)
    assert lc.check_factors(opposed, Request.OPPOSE, code_ok=True, vitale_ok=True, now=later).allowed
    wrong = lc.check_factors(opposed, Request.OPPOSE, code_ok=False, vitale_ok=True, now=later)
    assert wrong.count_failure
    late = lc.check_factors(created(), Request.OPPOSE, code_ok=True, vitale_ok=True, now=NOW + SIX_WEEKS)
    assert late.finding is not None and late.finding["rule"] == "lifecycle.expired-code"
    assert lc.opposition_window_open(created(), NOW + SIX_WEEKS - US)
    assert not lc.opposition_window_open(created(), NOW + SIX_WEEKS)


def test_a_new_code_keeps_the_deadline_of_a_lost_letter_and_gives_a_reversal_six_weeks() -> None:
    later = NOW + timedelta(weeks=2)
    assert lc.reissue_expiry(created(), later, Request.REISSUE) == NOW + SIX_WEEKS
    opposed = created(status=S.OPPOSED, code_expires_at=None)
    assert lc.reissue_expiry(opposed, later, Request.REISSUE) == later + SIX_WEEKS
    assert lc.reissue_expiry(created(), later, Request.INVITE) == later + SIX_WEEKS


# -- timers -------------------------------------------------------------------------------------------


def test_automatic_opening_at_exactly_six_weeks() -> None:
    profile = created()
    assert not lc.auto_open_due(profile, NOW + SIX_WEEKS - US)
    assert lc.auto_open_due(profile, NOW + SIX_WEEKS)
    assert not lc.auto_open_due(replace(profile, status=S.OPPOSED), NOW + SIX_WEEKS)
    values = lc.opening_values(NOW + SIX_WEEKS)
    assert values == {"activated_at": NOW + SIX_WEEKS, "activation": Activation.AUTOMATIC, "code_sha256": ""}


def test_reimbursements_are_released_48_hours_after_any_opening() -> None:
    opened = created(status=S.ACTIVE, activated_at=NOW, activation=Activation.AUTOMATIC)
    assert lc.reimbursement_release_at(opened) == NOW + timedelta(hours=48)
    assert lc.reimbursement_release_at(replace(opened, activation=Activation.CODE)) == NOW + timedelta(hours=48)
    assert lc.reimbursement_release_at(created()) is None
    assert lc.reimbursement_release_at(replace(opened, status=S.CLOSED)) is None
    never_activated = replace(opened, status=S.OPENED)  # issue 12: opened automatically, keyed on the opening
    assert lc.reimbursement_release_at(never_activated) == NOW + timedelta(hours=48)


@pytest.mark.parametrize(("closed_at", "purge_after"), [
    (datetime(2026, 3, 2, 9, 30, tzinfo=UTC), datetime(2036, 3, 2, 9, 30, tzinfo=UTC)),
    (datetime(2028, 2, 29, 23, 0, tzinfo=UTC), datetime(2038, 2, 28, 23, 0, tzinfo=UTC)),  # no 29 Feb in 2038
    (datetime(2024, 2, 29, 12, 0, tzinfo=UTC), datetime(2034, 2, 28, 12, 0, tzinfo=UTC)),
    (datetime(2030, 2, 28, 12, 0, tzinfo=UTC), datetime(2040, 2, 28, 12, 0, tzinfo=UTC)),
])
def test_ten_calendar_years_of_archive(closed_at: datetime, purge_after: datetime) -> None:
    values = lc.closure_values(closed_at)
    assert values["purge_after"] == purge_after and values["closed_at"] == closed_at
    profile = created(status=S.CLOSED, closed_at=closed_at, purge_after=purge_after)
    assert not lc.purge_due(profile, purge_after - US)
    assert lc.purge_due(profile, purge_after)
    assert not lc.purge_due(replace(profile, purged_at=purge_after), purge_after)


def test_the_archive_end_agrees_with_the_restitution_helper() -> None:
    archive_ends = pytest.importorskip("pipelines.record.core.restitution").archive_ends
    for closed in (datetime(2028, 2, 29, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC)):
        assert lc.add_years(closed, DEFAULT_RULES.archive_years) == archive_ends(closed)


@pytest.mark.parametrize(("born", "moment", "adult"), [
    ("2008-06-15", datetime(2026, 6, 14, 21, 59, 59, 999999, tzinfo=UTC), False),  # 23:59:59 in Paris (CEST)
    ("2008-06-15", datetime(2026, 6, 14, 22, 0, tzinfo=UTC), True),                 # Paris midnight
    ("2008-12-15", datetime(2026, 12, 14, 22, 59, 59, tzinfo=UTC), False),          # CET: UTC+1
    ("2008-12-15", datetime(2026, 12, 14, 23, 0, tzinfo=UTC), True),
    ("2008-02-29", datetime(2026, 2, 28, 22, 59, tzinfo=UTC), False),               # 28 Feb in Paris
    ("2008-02-29", datetime(2026, 2, 28, 23, 0, tzinfo=UTC), True),                 # 1 March in Paris
    ("2008-02-29", datetime(2028, 2, 28, 23, 0, tzinfo=UTC), True),                 # 29 Feb 2028 (20 by then)
    ("", NOW, False), ("not a date", NOW, False),
])
def test_the_eighteenth_birthday_at_paris_midnight(born: str, moment: datetime, adult: bool) -> None:
    today = lc.paris_date(moment)
    assert (lc.adult_since(born, today) is not None) is adult
    if born[:2] == "20":
        assert (born <= lc.majority_cutoff(today)) is adult


def test_a_leap_day_birth_comes_of_age_on_the_first_of_march() -> None:
    assert lc.majority_date("2008-02-29") == date(2026, 3, 1)
    assert lc.majority_date("2010-02-29") is None  # not a date
    assert lc.majority_date("2010-02-28") == date(2028, 2, 28)


def test_the_query_bound_agrees_with_adult_since_every_day_of_four_years() -> None:
    day = date(2026, 1, 1)
    while day < date(2030, 1, 1):
        cutoff = lc.majority_cutoff(day)
        anchor = date.fromisoformat(cutoff)
        for offset in range(-3, 4):
            born = (anchor + timedelta(days=offset)).isoformat()
            assert (born <= cutoff) is (lc.adult_since(born, day) is not None), (born, day)
        day += timedelta(days=1)
