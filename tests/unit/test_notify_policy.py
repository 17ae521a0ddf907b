"""The notification policy (pipelines.notify.core.policy) against the shipped table (config/notifications.toml).

Table-driven: each row states what a patient (or their legal representative) is told, on which
channel and address, and when; and that no text says anything about the document itself.
"""

from __future__ import annotations

import copy
import itertools
import re
import tomllib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from config.tables import NOTIFICATIONS, load_notify_policy
from hub.errors import ConfigError
from hub.notices import Addressee, Channel, Event, EventKind, Notice, Outgoing, Preferences
from hub.records import PatientRecord, PatientStatus
from pipelines.notify.core.policy import (
    INVISIBLE_PATIENT,
    INVISIBLE_REPRESENTANTS_LEGAUX,
    NotifyPolicy,
    Reach,
    audience,
    digest_id,
    fallback,
    next_month,
    notice_id,
    parse_quiet_hours,
    plan,
    policy_from_mapping,
    quiet_end,
    render,
)

K, S, C = EventKind, PatientStatus, Channel

POLICY = load_notify_policy()
NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)          # 11:00 in Paris: outside quiet hours
NIGHT = datetime(2026, 12, 2, 22, 30, tzinfo=UTC)       # 23:30 in Paris
NIGHT_END = datetime(2026, 12, 3, 7, 0, tzinfo=UTC)     # 08:00 in Paris the next morning
LINK = "https://www.monespacesante.fr/notifications"

EMAIL = "j.d@example.fr"
POSTAL = "M. J D\n1 rue de la Paix\n75002 PARIS"
PHONE = "+33612345678"
DEVICES = ("push:device-a", "push:device-b")
CODE = "482913"
CODE_EXPIRES = datetime(2027, 1, 13, 10, 0, tzinfo=UTC)

SECRET_ID = "1.2.250.1.213.1.1.9^SECRET-TITLE"
SECRET_NAMES = ("Jeannette", "SECRETNAME")
PATIENT_INS = "1840375123456"
REP_INS = "2690175123457"


def _event(kind: EventKind, *, ins: str = PATIENT_INS, at: datetime = NOW, confidentiality: tuple[str, ...] = (),
           subject_id: str = SECRET_ID) -> Event:
    codes = kind in (K.ACTIVATION_CODE, K.ONE_TIME_CODE, K.CONTACT_CHECK)
    return Event(event_id=f"{kind}:{subject_id}", kind=kind, ins=ins, occurred_at=at, subject_id=subject_id,
                 confidentiality=confidentiality, urgent=codes, code=CODE if codes else "",
                 code_expires=CODE_EXPIRES if codes else None)


def _patient(ins: str = PATIENT_INS, *, status: PatientStatus = S.ACTIVE, birth_date: str = "1984-03-15",
             email: str = EMAIL, phone: str = PHONE, postal: str = POSTAL) -> PatientRecord:
    return PatientRecord(ins=ins, oid="1.2.250.1.213.1.4.8", birth_name=SECRET_NAMES[1],
                         given_names=f"{SECRET_NAMES[0]} Marie", birth_date=birth_date, sex="F",
                         email=email, phone=phone, postal_address=postal, status=status)


def _reach(status: PatientStatus = S.ACTIVE, *, email: str = EMAIL, postal: str = POSTAL, phone: str = PHONE,
           devices: tuple[str, ...] = DEVICES, prefs: Preferences | None = None,
           last_email_at: datetime | None = None, ins: str = PATIENT_INS, representative_of: str = "") -> Reach:
    who = Addressee(ins=ins, email=email, phone=phone, postal_address=postal,
                    display_name=" ".join(SECRET_NAMES), representative_of=representative_of)
    return Reach(addressee=who, status=status, preferences=prefs or Preferences(), devices=devices,
                 last_email_at=last_email_at)


def _pairs(notices: list[Notice]) -> set[tuple[Channel, str]]:
    return {(n.channel, n.address) for n in notices}


def _one(notices: list[Notice], channel: Channel) -> Notice:
    [notice] = [n for n in notices if n.channel is channel]
    return notice


# --- plan(): event kind x status x contacts x preferences -> (channel, address) ------------------

def _expected_code(status: PatientStatus, *, email: bool, postal: bool, phone: bool) -> set[tuple[Channel, str]]:
    """The provisional code, by letter: a new profile, a lost letter, a reversal, 18; never activated and no
    postal address known: the e-mail, else an SMS (issue 12)."""
    if status in (S.CREATED, S.OPENED) and not postal:
        return {(C.EMAIL, EMAIL)} if email else {(C.SMS, PHONE)} if phone else set()
    return {(C.POSTAL, POSTAL)} if status is not S.CLOSED and postal else set()


def _expected(kind: EventKind, status: PatientStatus, *, email: bool, postal: bool, phone: bool, devices: bool,
              email_on: bool, push_on: bool) -> set[tuple[Channel, str]]:
    """The rules, as the hub's users state them (independently of how the TOML is laid out)."""
    if kind is K.ACTIVATION_CODE:
        return _expected_code(status, email=email and email_on, postal=postal, phone=phone)
    if status in (S.OPPOSED, S.CLOSED):
        return set()
    if kind is K.CONTACT_CHECK:                       # a code to confirm an address: active profiles only
        if status is not S.ACTIVE:
            return set()
        return ({(C.EMAIL, EMAIL)} if email and email_on else set()) | ({(C.SMS, PHONE)} if phone else set())
    if kind is K.ONE_TIME_CODE:                       # SMS, codes only, whatever the preferences
        return {(C.SMS, PHONE)} if phone else set()
    if status in (S.CREATED, S.OPENED):               # not activated: e-mail, else the postal relevé
        if email and email_on:
            return {(C.EMAIL, EMAIL)}
        return {(C.POSTAL, POSTAL)} if postal else set()
    out: set[tuple[Channel, str]] = set()
    if email and email_on:
        out.add((C.EMAIL, EMAIL))
    if kind is K.REMINDER:                            # a reminder is an e-mail only
        return out
    out.add((C.INAPP, ""))
    if kind is not K.PROFESSIONAL_ACTION and push_on and devices:
        out |= {(C.PUSH, device) for device in DEVICES}
    return out


_FLAGS = ("email", "postal", "phone", "devices", "email_on", "push_on")
MATRIX = [
    pytest.param(kind, status, dict(zip(_FLAGS, flags, strict=True)),
                 id=f"{kind}-{status}-" + "-".join(f"{'+' if on else '-'}{name}"
                                                   for name, on in zip(_FLAGS, flags, strict=True)))
    for kind in K for status in S for flags in itertools.product((True, False), repeat=len(_FLAGS))
]


@pytest.mark.parametrize(("kind", "status", "flags"), MATRIX)
def test_plan_matrix(kind: EventKind, status: PatientStatus, flags: dict[str, bool]) -> None:
    reach = _reach(status, email=EMAIL if flags["email"] else "", postal=POSTAL if flags["postal"] else "",
                   phone=PHONE if flags["phone"] else "", devices=DEVICES if flags["devices"] else (),
                   prefs=Preferences(email=flags["email_on"], push=flags["push_on"]))
    notices = plan(_event(kind), reach, POLICY, now=NOW)
    assert _pairs(notices) == _expected(kind, status, **flags)
    assert len(notices) == len(_pairs(notices))        # no announcement made twice


@pytest.mark.parametrize(("kind", "status", "reach", "expected"), [
    (K.NEW_DOCUMENT, S.ACTIVE, _reach(),
     {(C.INAPP, ""), (C.EMAIL, EMAIL), (C.PUSH, DEVICES[0]), (C.PUSH, DEVICES[1])}),
    (K.NEW_DOCUMENT, S.ACTIVE, _reach(email="", devices=()), {(C.INAPP, "")}),
    (K.NEW_DOCUMENT, S.ACTIVE, _reach(prefs=Preferences(email=False, push=False)), {(C.INAPP, "")}),
    (K.NEW_MESSAGE, S.ACTIVE, _reach(devices=DEVICES[:1]), {(C.INAPP, ""), (C.EMAIL, EMAIL), (C.PUSH, DEVICES[0])}),
    (K.PROFESSIONAL_ACTION, S.ACTIVE, _reach(), {(C.INAPP, ""), (C.EMAIL, EMAIL)}),
    (K.REMINDER, S.ACTIVE, _reach(), {(C.EMAIL, EMAIL)}),
    (K.NEW_DOCUMENT, S.CREATED, _reach(), {(C.EMAIL, EMAIL)}),
    (K.NEW_DOCUMENT, S.CREATED, _reach(email=""), {(C.POSTAL, POSTAL)}),
    (K.FIRST_ACCESS, S.CREATED, _reach(prefs=Preferences(email=False)), {(C.POSTAL, POSTAL)}),
    (K.NEW_DOCUMENT, S.CREATED, _reach(email="", postal="  \n "), set()),
    (K.ACTIVATION_CODE, S.CREATED, _reach(), {(C.POSTAL, POSTAL)}),
    (K.ACTIVATION_CODE, S.ACTIVE, _reach(), {(C.POSTAL, POSTAL)}),
    (K.ACTIVATION_CODE, S.OPPOSED, _reach(), {(C.POSTAL, POSTAL)}),
    (K.ACTIVATION_CODE, S.CLOSED, _reach(), set()),
    (K.ONE_TIME_CODE, S.ACTIVE, _reach(), {(C.SMS, PHONE)}),
    (K.ONE_TIME_CODE, S.CREATED, _reach(phone=""), set()),
    (K.NEW_DOCUMENT, S.OPPOSED, _reach(), set()),
    (K.ONE_TIME_CODE, S.CLOSED, _reach(), set()),
], ids=lambda v: str(v) if isinstance(v, str) else None)
def test_plan_examples(kind: EventKind, status: PatientStatus, reach: Reach, expected: set[Any]) -> None:
    reach = Reach(addressee=reach.addressee, status=status, preferences=reach.preferences, devices=reach.devices)
    assert _pairs(plan(_event(kind), reach, POLICY, now=NOW)) == expected


@pytest.mark.parametrize("kind", [k for k in K if k not in (K.ONE_TIME_CODE, K.ACTIVATION_CODE, K.CONTACT_CHECK)])
@pytest.mark.parametrize("status", list(S))
def test_no_sms_except_codes(kind: EventKind, status: PatientStatus) -> None:
    reach = _reach(status, email="", postal="", devices=())      # only a phone number is known
    assert all(n.channel is not C.SMS for n in plan(_event(kind), reach, POLICY, now=NOW))


@pytest.mark.parametrize(("asked", "known", "expected"), [
    ("", {"email", "postal", "phone"}, C.POSTAL),      # the roster's letter, an operator's new code
    ("sms", {"email", "postal", "phone"}, C.SMS),      # the holder asked: the phone the insurer knows
    ("email", {"email", "postal", "phone"}, C.EMAIL),
    ("postal", {"email", "postal", "phone"}, C.POSTAL),
    ("sms", {"email", "postal"}, C.POSTAL),            # no phone known: the letter
    ("email", {"postal", "phone"}, C.POSTAL),
    ("sms", {"email"}, C.EMAIL),                       # nothing else: the next channel of the row
])
@pytest.mark.parametrize("status", [S.CREATED, S.OPENED])
def test_a_requested_code_goes_on_the_channel_asked_for_else_by_letter(asked: str, known: set[str], expected: Channel,
                                                                      status: PatientStatus) -> None:
    reach = _reach(status, email=EMAIL if "email" in known else "", postal=POSTAL if "postal" in known else "",
                   phone=PHONE if "phone" in known else "")
    event = Event(event_id="activation:x:2", kind=K.ACTIVATION_CODE, ins=PATIENT_INS, occurred_at=NOW, urgent=True,
                  code=CODE, code_expires=CODE_EXPIRES, channel=asked)
    [notice] = plan(event, reach, POLICY, now=NOW)
    assert notice.channel is expected and notice.code == CODE and notice.due_at == NOW


def test_an_opened_profile_is_notified_like_a_created_one() -> None:
    for kind in K:
        assert POLICY.kinds[kind].by_status.get(S.OPENED) == POLICY.kinds[kind].by_status.get(S.CREATED) \
            or kind is K.ACTIVATION_CODE
    mapping = {"events": {k.value: {"created": ["email|postal"], "active": ["email"]} for k in K}}
    policy = policy_from_mapping(mapping)
    assert policy.kinds[K.NEW_DOCUMENT].by_status[S.OPENED] == ((C.EMAIL, C.POSTAL),)


def test_a_contact_check_goes_to_the_given_address_only_and_e_mails_carry_the_legal_notice() -> None:
    reach = _reach(S.ACTIVE, prefs=Preferences(email=False))    # even with e-mails switched off
    event = Event(event_id="contact:t:email", kind=K.CONTACT_CHECK, ins=PATIENT_INS, occurred_at=NIGHT, urgent=True,
                  code=CODE, code_expires=CODE_EXPIRES, channel="email", address="new@example.org")
    [notice] = plan(event, reach, POLICY, now=NIGHT)
    assert (notice.channel, notice.address, notice.code, notice.due_at) == (C.EMAIL, "new@example.org", CODE, NIGHT)
    out = render([notice], link=LINK)
    assert CODE in out.text and "monespacesante.fr/protection-donnees-personnelles" in out.text
    assert "traitement de données du service dénommé « Mon espace santé »" in out.text
    assert out.html is not None and "protection-donnees-personnelles" in out.html
    assert plan(event, _reach(S.CREATED), POLICY, now=NOW) == []   # only an active profile changes contacts
    sms = render(plan(replace(event, channel="sms", address="+33700000000"), reach, POLICY, now=NOW), link=LINK)
    assert sms.channel is C.SMS and CODE in sms.text and "protection" not in sms.text


def test_activation_code_letter_carries_code_and_expiry() -> None:
    [letter] = plan(_event(K.ACTIVATION_CODE), _reach(S.CREATED), POLICY, now=NOW)
    assert (letter.channel, letter.address) == (C.POSTAL, POSTAL)
    assert (letter.code, letter.code_expires) == (CODE, CODE_EXPIRES)
    assert letter.due_at == NOW                                   # urgent: not kept for the monthly relevé


def test_only_code_kinds_carry_a_code() -> None:
    event = Event(event_id="document:x", kind=K.NEW_DOCUMENT, ins=PATIENT_INS, occurred_at=NOW,
                  code=CODE, code_expires=CODE_EXPIRES)
    assert all(n.code == "" and n.code_expires is None for n in plan(event, _reach(), POLICY, now=NOW))


# --- audience(): who hears of it -----------------------------------------------------------------

MINOR_BORN = "2008-03-15"
REP_A = _patient(REP_INS, birth_date="1979-01-02", email="rep.a@example.fr")
REP_B = _patient("1750275123458", birth_date="1975-02-03", email="rep.b@example.fr")


@pytest.mark.parametrize(("patient", "confidentiality", "reps", "expected_ins", "representative_of"), [
    pytest.param(_patient(), (), [], [PATIENT_INS], "", id="adult"),
    pytest.param(_patient(), (INVISIBLE_PATIENT,), [], [], "", id="invisible-patient-adult"),
    pytest.param(_patient(birth_date=MINOR_BORN), (INVISIBLE_PATIENT,), [REP_A], [], "",
                 id="invisible-patient-minor"),
    pytest.param(_patient(birth_date=MINOR_BORN), (), [REP_A, REP_B], [REP_A.ins, REP_B.ins], PATIENT_INS,
                 id="minor-to-representatives"),
    pytest.param(_patient(birth_date=MINOR_BORN), (INVISIBLE_REPRESENTANTS_LEGAUX,), [REP_A], [], "",
                 id="invisible-representatives-minor"),
    pytest.param(_patient(), (INVISIBLE_REPRESENTANTS_LEGAUX,), [REP_A], [PATIENT_INS], "",
                 id="invisible-representatives-adult"),
    pytest.param(_patient(birth_date=MINOR_BORN), (), [], [PATIENT_INS], "", id="minor-without-representatives"),
    pytest.param(_patient(birth_date=MINOR_BORN), (),
                 [_patient(REP_INS, status=S.OPPOSED), REP_B, _patient("1", status=S.CLOSED)], [REP_B.ins],
                 PATIENT_INS, id="opposed-closed-representatives-skipped"),
    pytest.param(_patient(birth_date=MINOR_BORN), (), [_patient(REP_INS, status=S.CLOSED)], [], "",
                 id="no-reachable-representative"),
    pytest.param(_patient(status=S.OPPOSED), (), [], [], "", id="patient-opposed"),
    pytest.param(_patient(status=S.CLOSED), (), [], [], "", id="patient-closed"),
    pytest.param(_patient(status=S.CREATED), (), [], [PATIENT_INS], "", id="patient-created"),
    pytest.param(None, (), [], [], "", id="unknown-patient"),
])
def test_audience(patient: PatientRecord | None, confidentiality: tuple[str, ...], reps: list[PatientRecord],
                  expected_ins: list[str], representative_of: str) -> None:
    event = _event(K.NEW_DOCUMENT, at=datetime(2026, 1, 10, 12, 0, tzinfo=UTC), confidentiality=confidentiality)
    who = audience(event, patient, reps)
    assert [a.ins for a in who.addressees] == expected_ins
    assert all(a.representative_of == representative_of for a in who.addressees)
    assert (who.reason == "") == bool(expected_ins)          # nobody told -> a reason is given


def test_representatives_get_their_own_contacts() -> None:
    who = audience(_event(K.NEW_DOCUMENT, at=datetime(2026, 1, 10, tzinfo=UTC)),
                   _patient(birth_date=MINOR_BORN), [REP_A])
    [rep] = who.addressees
    assert (rep.ins, rep.email, rep.representative_of) == (REP_INS, "rep.a@example.fr", PATIENT_INS)


@pytest.mark.parametrize(("occurred_at", "to_representatives"), [
    pytest.param(datetime(2026, 3, 14, 12, 0, tzinfo=UTC), True, id="day-before-18th-birthday"),
    pytest.param(datetime(2026, 3, 14, 22, 59, tzinfo=UTC), True, id="23:59-paris-day-before"),
    pytest.param(datetime(2026, 3, 14, 23, 0, tzinfo=UTC), False, id="00:00-paris-on-18th-birthday"),
    pytest.param(datetime(2026, 3, 15, 12, 0, tzinfo=UTC), False, id="18th-birthday"),
    pytest.param(datetime(2025, 3, 15, 12, 0, tzinfo=UTC), True, id="17th-birthday"),
    pytest.param(datetime(2026, 3, 16, 12, 0, tzinfo=UTC), False, id="day-after-18th-birthday"),
])
def test_minor_until_18th_birthday(occurred_at: datetime, to_representatives: bool) -> None:
    who = audience(_event(K.NEW_DOCUMENT, at=occurred_at), _patient(birth_date=MINOR_BORN), [REP_A])
    assert [a.ins for a in who.addressees] == ([REP_INS] if to_representatives else [PATIENT_INS])


# --- when: quiet hours, the monthly relevé --------------------------------------------------------

def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(("hours", "now", "expected"), [
    # winter, Paris = UTC+1: 22:00-08:00 Paris = 21:00-07:00 UTC
    pytest.param("22:00-08:00", _utc(2026, 1, 15, 20, 59), None, id="winter-21:59-outside"),
    pytest.param("22:00-08:00", _utc(2026, 1, 15, 21, 0), _utc(2026, 1, 16, 7, 0), id="winter-22:00-starts"),
    pytest.param("22:00-08:00", _utc(2026, 1, 15, 22, 30), _utc(2026, 1, 16, 7, 0), id="winter-23:30"),
    pytest.param("22:00-08:00", _utc(2026, 1, 16, 2, 0), _utc(2026, 1, 16, 7, 0), id="winter-03:00"),
    pytest.param("22:00-08:00", _utc(2026, 1, 16, 6, 59), _utc(2026, 1, 16, 7, 0), id="winter-07:59"),
    pytest.param("22:00-08:00", _utc(2026, 1, 16, 7, 0), None, id="winter-08:00-ended"),
    pytest.param("22:00-08:00", _utc(2026, 1, 15, 20, 30), None, id="winter-20:30utc-is-21:30-paris"),
    # summer, Paris = UTC+2: 22:00-08:00 Paris = 20:00-06:00 UTC
    pytest.param("22:00-08:00", _utc(2026, 7, 15, 20, 30), _utc(2026, 7, 16, 6, 0), id="summer-20:30utc-is-22:30"),
    pytest.param("22:00-08:00", _utc(2026, 7, 15, 19, 59), None, id="summer-21:59-outside"),
    pytest.param("22:00-08:00", _utc(2026, 7, 16, 3, 0), _utc(2026, 7, 16, 6, 0), id="summer-05:00"),
    pytest.param("22:00-08:00", _utc(2026, 7, 16, 5, 59), _utc(2026, 7, 16, 6, 0), id="summer-07:59"),
    pytest.param("22:00-08:00", _utc(2026, 7, 16, 6, 0), None, id="summer-08:00-ended"),
    # nights when the clocks change: the night starts in one offset and ends in the other
    pytest.param("22:00-08:00", _utc(2026, 3, 28, 21, 30), _utc(2026, 3, 29, 6, 0), id="spring-forward-night"),
    pytest.param("22:00-08:00", _utc(2026, 10, 24, 20, 30), _utc(2026, 10, 25, 7, 0), id="fall-back-night"),
    # a window that does not cross midnight (winter: 12:00-14:00 Paris = 11:00-13:00 UTC)
    pytest.param("12:00-14:00", _utc(2026, 1, 15, 10, 59), None, id="noon-11:59-outside"),
    pytest.param("12:00-14:00", _utc(2026, 1, 15, 11, 0), _utc(2026, 1, 15, 13, 0), id="noon-12:00-starts"),
    pytest.param("12:00-14:00", _utc(2026, 1, 15, 12, 59), _utc(2026, 1, 15, 13, 0), id="noon-13:59"),
    pytest.param("12:00-14:00", _utc(2026, 1, 15, 13, 0), None, id="noon-14:00-ended"),
    pytest.param("12:00-14:00", _utc(2026, 1, 15, 22, 0), None, id="noon-23:00-outside"),
    # none
    pytest.param("", _utc(2026, 1, 15, 22, 30), None, id="empty"),
    pytest.param("   ", _utc(2026, 1, 15, 22, 30), None, id="blank"),
])
def test_quiet_end(hours: str, now: datetime, expected: datetime | None) -> None:
    assert quiet_end(now, Preferences(quiet_hours=hours)) == (expected or now)


def test_quiet_end_in_the_patients_timezone() -> None:
    # La Réunion is UTC+4 all year: 23:00 there is 19:00 UTC, the night ends at 04:00 UTC
    prefs = Preferences(quiet_hours="22:00-08:00", timezone="Indian/Reunion")
    assert quiet_end(_utc(2026, 1, 15, 19, 0), prefs) == _utc(2026, 1, 16, 4, 0)


@pytest.mark.parametrize("text", ["22h-8h", "22:00", "22:00-08:00-09:00", "08:00-08:00"])
def test_bad_quiet_hours_refused(text: str) -> None:
    with pytest.raises(ValueError, match="quiet hours"):
        parse_quiet_hours(text)


@pytest.mark.parametrize(("kind", "status", "channel", "due"), [
    pytest.param(K.NEW_DOCUMENT, S.ACTIVE, C.INAPP, NIGHT, id="inapp-never-held"),
    pytest.param(K.NEW_DOCUMENT, S.ACTIVE, C.EMAIL, NIGHT_END, id="email-held"),
    pytest.param(K.NEW_DOCUMENT, S.ACTIVE, C.PUSH, NIGHT_END, id="push-held"),
    pytest.param(K.REMINDER, S.ACTIVE, C.EMAIL, NIGHT_END, id="reminder-email-held"),
    pytest.param(K.NEW_MESSAGE, S.CREATED, C.EMAIL, NIGHT_END, id="created-email-held"),
    pytest.param(K.ONE_TIME_CODE, S.ACTIVE, C.SMS, NIGHT, id="code-sms-never-held"),
    pytest.param(K.ACTIVATION_CODE, S.CREATED, C.POSTAL, NIGHT, id="activation-letter-urgent"),
])
def test_due_at_night(kind: EventKind, status: PatientStatus, channel: Channel, due: datetime) -> None:
    notices = plan(_event(kind, at=NIGHT), _reach(status), POLICY, now=NIGHT)
    assert all(n.due_at == due for n in notices if n.channel is channel)
    assert any(n.channel is channel for n in notices)


@pytest.mark.parametrize(("now", "first_of_next_month"), [
    pytest.param(_utc(2026, 1, 15, 10, 0), _utc(2026, 1, 31, 23, 0), id="january-winter"),
    pytest.param(_utc(2026, 6, 10, 10, 0), _utc(2026, 6, 30, 22, 0), id="june-summer"),
    pytest.param(_utc(2026, 10, 15, 10, 0), _utc(2026, 10, 31, 23, 0), id="october-into-winter-time"),
    pytest.param(_utc(2026, 3, 5, 10, 0), _utc(2026, 3, 31, 22, 0), id="march-into-summer-time"),
    pytest.param(_utc(2026, 12, 15, 10, 0), _utc(2026, 12, 31, 23, 0), id="december-to-january"),
    pytest.param(_utc(2026, 12, 31, 23, 30), _utc(2027, 1, 31, 23, 0), id="already-january-in-paris"),
])
def test_next_month(now: datetime, first_of_next_month: datetime) -> None:
    assert next_month(now) == first_of_next_month


@pytest.mark.parametrize("now", [NOW, NIGHT, _utc(2026, 12, 15, 10, 0), _utc(2026, 7, 1, 3, 0)])
def test_postal_relevé_due_next_month(now: datetime) -> None:
    [letter] = plan(_event(K.NEW_DOCUMENT, at=now), _reach(S.CREATED, email=""), POLICY, now=now)
    assert letter.channel is C.POSTAL
    assert letter.due_at == next_month(now)


# --- the digest window ---------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "now", "last_email_at", "digest_on", "expected_due"), [
    pytest.param(K.NEW_DOCUMENT, NOW, NOW - timedelta(minutes=10), True, NOW + timedelta(minutes=50),
                 id="within-window-waits"),
    pytest.param(K.NEW_DOCUMENT, NOW, NOW - timedelta(hours=2), True, NOW, id="window-over"),
    pytest.param(K.NEW_DOCUMENT, NOW, None, True, NOW, id="no-previous-email"),
    pytest.param(K.NEW_DOCUMENT, NOW, NOW - timedelta(minutes=10), False, NOW, id="digest-off-now"),
    pytest.param(K.NEW_DOCUMENT, NIGHT, NIGHT - timedelta(minutes=10), False, NIGHT_END, id="digest-off-quiet-end"),
    pytest.param(K.PROFESSIONAL_ACTION, NOW, NOW - timedelta(minutes=10), True, NOW + timedelta(minutes=50),
                 id="professional-action-digest"),
    pytest.param(K.NEW_MESSAGE, NOW, NOW - timedelta(minutes=10), True, NOW, id="messages-not-digested"),
    # the window ends at 22:30 Paris (winter): inside quiet hours -> held to 08:00
    pytest.param(K.NEW_DOCUMENT, _utc(2026, 12, 2, 20, 40), _utc(2026, 12, 2, 20, 30), True, NIGHT_END,
                 id="window-ends-in-quiet-hours"),
])
def test_digest_window(kind: EventKind, now: datetime, last_email_at: datetime | None, digest_on: bool,
                       expected_due: datetime) -> None:
    reach = _reach(prefs=Preferences(digest=digest_on), last_email_at=last_email_at)
    notices = plan(_event(kind, at=now), reach, POLICY, now=now)
    assert _one(notices, C.EMAIL).due_at == expected_due
    assert all(n.due_at == now for n in notices if n.channel is C.INAPP)


def test_digest_window_is_the_configured_one() -> None:
    policy = load_notify_policy(digest_window_s=600)
    reach = _reach(last_email_at=NOW - timedelta(minutes=4))
    assert _one(plan(_event(K.NEW_DOCUMENT), reach, policy, now=NOW), C.EMAIL).due_at == NOW + timedelta(minutes=6)


def _emails(n: int, *, about: str = PATIENT_INS, ins: str = PATIENT_INS) -> list[Notice]:
    reach = _reach(ins=ins)
    return [_one(plan(_event(K.NEW_DOCUMENT, ins=about, subject_id=f"{SECRET_ID}-{i}"), reach, POLICY, now=NOW),
                 C.EMAIL) for i in range(n)]


def test_digest_of_three_is_one_email() -> None:
    notices = _emails(3)
    out = render(notices, link=LINK)
    assert isinstance(out, Outgoing)
    assert (out.channel, out.address, out.subject) == (C.EMAIL, EMAIL, "Mon espace santé : 3 nouveautés")
    assert out.text.startswith("3 nouveaux documents")
    assert out.delivery_id == digest_id(notices) == digest_id(notices[::-1]) == digest_id(notices[1:] + notices[:1])
    assert out.delivery_id == render(notices[::-1], link=LINK).delivery_id
    assert out.delivery_id not in {n.notice_id for n in notices}
    assert digest_id(notices[:2]) != out.delivery_id


def test_single_notice_is_sent_under_its_own_id() -> None:
    [notice] = _emails(1)
    out = render([notice], link=LINK)
    assert out.delivery_id == notice.notice_id
    assert out.subject == "Mon espace santé : nouveau document"
    assert LINK in out.text and out.link == LINK


# --- texts: nothing about the document, the patient, or anything but the code ---------------------

def _every_rendering() -> list[Any]:
    cases = []
    for kind in K:
        for status in (S.ACTIVE, S.CREATED):
            for representative in (False, True):
                reach = _reach(status, ins=REP_INS if representative else PATIENT_INS,
                               representative_of=PATIENT_INS if representative else "")
                for notice in plan(_event(kind), reach, POLICY, now=NOW):
                    cases.append(pytest.param(
                        [notice], id=f"{kind}-{status}-{notice.channel}-{'rep' if representative else 'self'}"))
    for kind in (K.NEW_DOCUMENT, K.PROFESSIONAL_ACTION):
        cases.append(pytest.param(_emails(3), id=f"{kind}-digest"))
    return cases


@pytest.mark.parametrize("notices", _every_rendering())
def test_texts_carry_no_health_data(notices: list[Notice]) -> None:
    out = render(notices, link=LINK)
    shown = "\n".join([out.subject, out.text, out.html, out.link, *out.extra.values()])
    for secret in ("SECRET", "1.2.250.1.213.1.1.9", *SECRET_NAMES, PATIENT_INS, REP_INS, "document:"):
        assert secret not in shown


def test_sms_text_is_the_code_only() -> None:
    [sms] = plan(_event(K.ONE_TIME_CODE), _reach(), POLICY, now=NOW)
    out = render([sms], link=LINK)
    assert (out.channel, out.address) == (C.SMS, PHONE)
    assert CODE in out.text
    assert not re.search(r"\d", out.text.replace(CODE, ""))     # no other number: no INS, no phone, no date
    assert out.html == "" and out.link == ""
    assert out.text == "Mon espace santé : votre code est 482913. Ne le communiquez à personne."


def test_activation_letter_text_has_the_code() -> None:
    [letter] = plan(_event(K.ACTIVATION_CODE), _reach(S.CREATED), POLICY, now=NOW)
    assert f"Code : {CODE}" in render([letter], link=LINK).text


@pytest.mark.parametrize("kind", [K.NEW_DOCUMENT, K.FIRST_ACCESS, K.PROFESSIONAL_ACTION])
def test_representative_wording(kind: EventKind) -> None:
    own = _one(plan(_event(kind), _reach(), POLICY, now=NOW), C.EMAIL)
    rep = _one(plan(_event(kind), _reach(ins=REP_INS, representative_of=PATIENT_INS), POLICY, now=NOW), C.EMAIL)
    own_text, rep_text = render([own], link=LINK).text, render([rep], link=LINK).text
    assert "représentant légal" in rep_text
    assert "représentant légal" not in own_text
    assert "votre profil" in own_text


def test_representative_wording_in_digest() -> None:
    rep_digest = render(_emails(2, ins=REP_INS), link=LINK).text
    assert "représentant légal" in rep_digest
    assert "représentant légal" not in render(_emails(2), link=LINK).text


# --- notice ids ----------------------------------------------------------------------------------

def test_notice_id_is_deterministic() -> None:
    first = plan(_event(K.NEW_DOCUMENT), _reach(), POLICY, now=NOW)
    again = plan(_event(K.NEW_DOCUMENT), _reach(), POLICY, now=NOW + timedelta(hours=3))
    assert [n.notice_id for n in first] == [n.notice_id for n in again]
    assert len({n.notice_id for n in first}) == len(first) == 4        # inapp, email, two devices


@pytest.mark.parametrize(("other", "why"), [
    (("event-2", C.EMAIL, PATIENT_INS, EMAIL), "event"),
    (("event-1", C.PUSH, PATIENT_INS, EMAIL), "channel"),
    (("event-1", C.EMAIL, PATIENT_INS, "other@example.fr"), "address"),
    (("event-1", C.EMAIL, REP_INS, EMAIL), "addressee"),
])
def test_notice_id_differs(other: tuple[str, Channel, str, str], why: str) -> None:
    base = notice_id("event-1", C.EMAIL, PATIENT_INS, EMAIL)
    assert base == notice_id("event-1", C.EMAIL, PATIENT_INS, EMAIL)
    assert notice_id(*other) != base, why


# --- the table loader ----------------------------------------------------------------------------

def _shipped() -> dict[str, Any]:
    return copy.deepcopy(tomllib.loads(NOTIFICATIONS.read_text(encoding="utf-8")))


def _with(change: Any) -> dict[str, Any]:
    data = _shipped()
    change(data["events"])
    return data


def test_shipped_table_loads() -> None:
    assert isinstance(POLICY, NotifyPolicy)
    assert set(POLICY.kinds) == set(K)
    assert POLICY.quiet_channels == {C.EMAIL, C.PUSH, C.SMS}
    assert POLICY.kinds[K.NEW_DOCUMENT].digest and not POLICY.kinds[K.NEW_DOCUMENT].urgent
    assert POLICY.kinds[K.ONE_TIME_CODE].urgent and POLICY.kinds[K.ONE_TIME_CODE].codes


@pytest.mark.parametrize(("data", "names"), [
    pytest.param(_with(lambda e: e.update(fax_received={"active": ["inapp"]})), ["events.fax_received", "kind"],
                 id="unknown-kind"),
    pytest.param(_with(lambda e: e["new_document"].update(active=["inapp", "fax"])),
                 ["events.new_document.active", "fax"], id="unknown-channel"),
    pytest.param(_with(lambda e: e["new_message"].update(created=["email|telegram"])),
                 ["events.new_message.created", "telegram"], id="unknown-channel-in-alternative"),
    pytest.param(_with(lambda e: e["new_document"].update(active=["inapp", "sms"])),
                 ["events.new_document.active", "SMS"], id="sms-on-new-document"),
    pytest.param(_with(lambda e: e["reminder"].update(created=["email|sms"])),
                 ["events.reminder.created", "SMS"], id="sms-fallback-on-reminder"),
    pytest.param(_with(lambda e: e.pop("reminder")), ["events", "reminder"], id="missing-kind-row"),
    pytest.param(_with(lambda e: e["new_document"].update(actif=["inapp"])), ["events.new_document", "actif"],
                 id="unknown-key"),
])
def test_policy_refuses(data: dict[str, Any], names: list[str]) -> None:
    with pytest.raises(ValueError) as caught:
        policy_from_mapping(data)
    for name in names:
        assert name in str(caught.value)


def test_loader_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "notifications.toml"
    bad.write_text(NOTIFICATIONS.read_text(encoding="utf-8").replace('active = ["sms"]', 'active = ["fax"]'),
                   encoding="utf-8")
    with pytest.raises(ConfigError, match=r"notifications\.toml.*events\.one_time_code\.active"):
        load_notify_policy(bad)


# --- fallback(): after a permanent failure -------------------------------------------------------

LATER = NOW + timedelta(days=2)


def test_bounced_email_of_created_patient_falls_back_to_the_letter() -> None:
    reach = _reach(S.CREATED)
    [email] = plan(_event(K.NEW_DOCUMENT), reach, POLICY, now=NOW)
    assert email.channel is C.EMAIL
    letter = fallback(email, reach, POLICY, now=LATER)
    assert letter is not None
    assert (letter.channel, letter.address, letter.fallback_of) == (C.POSTAL, POSTAL, email.notice_id)
    assert (letter.event_id, letter.ins, letter.about_ins) == (email.event_id, email.ins, email.about_ins)
    assert letter.notice_id != email.notice_id
    assert letter.due_at == next_month(LATER)


def test_fallback_of_a_representative_keeps_the_minor() -> None:
    reach = _reach(S.CREATED, ins=REP_INS, representative_of=PATIENT_INS)
    [email] = plan(_event(K.NEW_MESSAGE), reach, POLICY, now=NOW)
    letter = fallback(email, reach, POLICY, now=LATER)
    assert letter is not None and (letter.ins, letter.about_ins) == (REP_INS, PATIENT_INS)


@pytest.mark.parametrize(("status", "postal", "kind"), [
    pytest.param(S.CREATED, "", K.NEW_DOCUMENT, id="created-without-postal-address"),
    pytest.param(S.ACTIVE, POSTAL, K.NEW_DOCUMENT, id="active-email-has-no-alternative"),
    pytest.param(S.ACTIVE, POSTAL, K.REMINDER, id="active-reminder-has-no-alternative"),
])
def test_no_fallback(status: PatientStatus, postal: str, kind: EventKind) -> None:
    reach = _reach(status, postal=postal)
    email = _one(plan(_event(kind), reach, POLICY, now=NOW), C.EMAIL)
    assert fallback(email, reach, POLICY, now=LATER) is None
