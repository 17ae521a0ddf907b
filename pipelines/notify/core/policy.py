"""Notification policy (pure): which announcements an event makes, when they are due, what they say.

Owns: the policy table (config/notifications.toml: event kind x patient status -> channels), the
confidentiality rules on who hears of a document (INVISIBLE_PATIENT: nobody yet;
INVISIBLE_REPRESENTANTS_LEGAUX: not the legal representatives of a minor), minors' notices going to
their representatives, preferences (channels switched off), quiet hours and the digest window, and
the texts sent on each channel.
Rule: texts are built from the event kind alone: they say that something arrived and where to look,
never what it is (no title, type, author or sender).  SMS carries codes only.  Every e-mail ends with the
legal notice on data processing that Mon espace santé e-mails carry (LEGAL_NOTICE).
Decisions: an `opened` profile (opened automatically, never activated) follows its kind's `opened` row
when the table has one, else the `created` row (never activated: the e-mail the insurer knows, else the
monthly relevé).  An event naming a `channel` (the person chose how to receive a code) tries that channel
first within its announcement, then the others in the table's order (SMS without a known phone -> the
letter); an event naming an `address` too (a contact to confirm) makes exactly one notice, on that
channel to that address, to the patient themself, if the row allows that channel.
Does not: read or write anything (pipelines.notify.service does, through hub.ports).
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hub.notices import Addressee, Channel, Event, EventKind, Notice, NoticeState, Outgoing, Preferences
from hub.records import PatientRecord, PatientStatus, is_minor

INVISIBLE_PATIENT = "INVISIBLE_PATIENT"
INVISIBLE_REPRESENTANTS_LEGAUX = "INVISIBLE_REPRESENTANTS_LEGAUX"


@dataclass(frozen=True, slots=True)
class KindRule:
    """One row of the table: per status, the announcements (each a list of alternative channels)."""

    by_status: Mapping[PatientStatus, tuple[tuple[Channel, ...], ...]]
    digest: bool = False
    urgent: bool = False
    codes: bool = False


@dataclass(frozen=True, slots=True)
class NotifyPolicy:
    """The whole table, plus the windows (seconds) of the digest."""

    kinds: Mapping[EventKind, KindRule]
    quiet_channels: frozenset[Channel] = frozenset({Channel.EMAIL, Channel.PUSH, Channel.SMS})
    digest_window_s: int = 3600


def policy_from_mapping(data: Mapping[str, Any], *, digest_window_s: int = 3600) -> NotifyPolicy:
    """Build the policy from the TOML mapping; ValueError names the bad entry."""
    kinds: dict[EventKind, KindRule] = {}
    for name, row in dict(data.get("events", {})).items():
        try:
            kind = EventKind(name)
        except ValueError:
            raise ValueError(f"events.{name}: unknown event kind (one of {', '.join(EventKind)})") from None
        unknown = set(row) - {"digest", "urgent", "codes", *PatientStatus}
        if unknown:
            raise ValueError(f"events.{name}: unknown key(s) {', '.join(sorted(unknown))}")
        codes = bool(row.get("codes", False))
        by_status = {PatientStatus(status): _announcements(f"events.{name}.{status}", row[status], codes=codes)
                     for status in PatientStatus if status in row}
        if PatientStatus.OPENED not in by_status and PatientStatus.CREATED in by_status:
            by_status[PatientStatus.OPENED] = by_status[PatientStatus.CREATED]  # never activated either
        kinds[kind] = KindRule(by_status=by_status, digest=bool(row.get("digest", False)),
                               urgent=bool(row.get("urgent", False)), codes=codes)
    missing = set(EventKind) - set(kinds)
    if missing:
        raise ValueError(f"events: no row for {', '.join(sorted(missing))}")
    quiet = frozenset(Channel(c) for c in dict(data.get("quiet_hours", {})).get("channels", ()))
    return NotifyPolicy(kinds=kinds, quiet_channels=quiet, digest_window_s=digest_window_s)


def _announcements(where: str, entries: Sequence[str], *, codes: bool) -> tuple[tuple[Channel, ...], ...]:
    result = []
    for entry in entries:
        try:
            choice = tuple(Channel(part.strip()) for part in str(entry).split("|"))
        except ValueError:
            raise ValueError(f"{where}: unknown channel in {entry!r} (one of {', '.join(Channel)})") from None
        if Channel.SMS in choice and not codes:
            raise ValueError(f"{where}: SMS carries codes only, not {entry!r}")
        result.append(choice)
    return tuple(result)


@dataclass(frozen=True, slots=True)
class Audience:
    """Who an event is announced to, and on what terms."""

    addressees: tuple[Addressee, ...]
    status: PatientStatus | None
    reason: str = ""      # why nobody is told ("" when someone is)


def audience(event: Event, patient: PatientRecord | None, representatives: Sequence[PatientRecord]) -> Audience:
    """The patient themself, or a minor's legal representatives, after the confidentiality flags."""
    if patient is None:
        return Audience((), None, "unknown patient")
    reversal = patient.status is PatientStatus.OPPOSED and event.kind is EventKind.ACTIVATION_CODE
    if patient.status in (PatientStatus.OPPOSED, PatientStatus.CLOSED) and not reversal:
        return Audience((), patient.status, f"patient {patient.status}")
    if event.address:  # a contact the patient gave: the confirmation goes to them, at that address
        return Audience((addressee_of(patient),), patient.status)
    if INVISIBLE_PATIENT in event.confidentiality:
        return Audience((), patient.status, "document invisible to the patient until its author lifts it")
    if representatives and is_minor(patient, _french_date(event.occurred_at)):
        if INVISIBLE_REPRESENTANTS_LEGAUX in event.confidentiality:
            return Audience((), patient.status, "document invisible to the legal representatives")
        reps = tuple(addressee_of(rep, representative_of=patient.ins) for rep in representatives
                     if rep.status not in (PatientStatus.OPPOSED, PatientStatus.CLOSED))
        return Audience(reps, patient.status, "" if reps else "no reachable legal representative")
    return Audience((addressee_of(patient),), patient.status)


def _french_date(moment: datetime) -> date:
    """The calendar date in France (birth dates are French dates; events are stamped in UTC)."""
    return moment.astimezone(ZoneInfo("Europe/Paris")).date() if moment.tzinfo else moment.date()


def addressee_of(patient: PatientRecord, *, representative_of: str = "") -> Addressee:
    """Where a registry profile can be reached (as the patient, or as a representative of `representative_of`)."""
    return Addressee(ins=patient.ins, email=patient.email, phone=patient.phone,
                     postal_address=patient.postal_address,
                     display_name=" ".join(p for p in (patient.given_names.split(" ")[0], patient.birth_name) if p),
                     representative_of=representative_of)


@dataclass(frozen=True, slots=True)
class Reach:
    """What the hub knows of one addressee at decision time."""

    addressee: Addressee
    status: PatientStatus
    preferences: Preferences = field(default_factory=Preferences)
    devices: tuple[str, ...] = ()
    last_email_at: datetime | None = None


def plan(event: Event, reach: Reach, policy: NotifyPolicy, *, now: datetime) -> list[Notice]:
    """The notices `event` makes for one addressee: one per announcement whose channel can be used."""
    rule = policy.kinds[event.kind]
    notices: list[Notice] = []
    asked = _channel(event.channel)
    choices = rule.by_status.get(reach.status, ())
    if event.address:
        allowed = asked is not None and any(asked in choice for choice in choices)
        return [_notice(event, reach, asked, event.address, rule, policy, now=now)] if allowed and asked else []
    for choice in choices:
        for channel in _preferred(choice, asked):
            addresses = _addresses(channel, reach)
            if addresses:
                notices.extend(_notice(event, reach, channel, address, rule, policy, now=now)
                               for address in addresses)
                break
    return notices


def _channel(name: str) -> Channel | None:
    try:
        return Channel(name) if name else None
    except ValueError:
        return None


def _preferred(choice: tuple[Channel, ...], asked: Channel | None) -> tuple[Channel, ...]:
    """The announcement's channels, the one the person asked for first (when it is one of them)."""
    if asked is None or asked not in choice:
        return choice
    return (asked, *(c for c in choice if c is not asked))


def _addresses(channel: Channel, reach: Reach) -> tuple[str, ...]:
    prefs, who = reach.preferences, reach.addressee
    if channel is Channel.INAPP:
        return ("",)
    if channel is Channel.EMAIL:
        return (who.email,) if who.email and prefs.email else ()
    if channel is Channel.PUSH:
        return reach.devices if prefs.push else ()
    if channel is Channel.SMS:
        return (who.phone,) if who.phone else ()
    return (who.postal_address,) if who.postal_address.strip() else ()


def notice_id(event_id: str, channel: Channel, ins: str, address: str) -> str:
    """Deterministic: the same event on the same channel to the same addressee is one notice."""
    return "n-" + hashlib.sha256(f"{event_id}\x1f{channel}\x1f{ins}\x1f{address}".encode()).hexdigest()[:32]


def _notice(event: Event, reach: Reach, channel: Channel, address: str, rule: KindRule, policy: NotifyPolicy,
            *, now: datetime) -> Notice:
    due = now
    if channel is Channel.POSTAL and not rule.urgent:
        due = next_month(now)  # the monthly relevé d'activité
    elif not rule.urgent:
        if channel is Channel.EMAIL and rule.digest and reach.preferences.digest and reach.last_email_at:
            due = max(due, reach.last_email_at + timedelta(seconds=policy.digest_window_s))
        if channel in policy.quiet_channels:
            due = quiet_end(due, reach.preferences)  # after the digest window: it may end in quiet hours
    return Notice(notice_id=notice_id(event.event_id, channel, reach.addressee.ins, address),
                  event_id=event.event_id, kind=event.kind, ins=reach.addressee.ins, about_ins=event.ins,
                  channel=channel, address=address, state=NoticeState.QUEUED, created_at=now, due_at=due,
                  code=event.code if rule.codes else "", code_expires=event.code_expires if rule.codes else None)


def quiet_end(now: datetime, preferences: Preferences) -> datetime:
    """`now` if outside the patient's quiet hours, else the moment they end (in UTC)."""
    window = parse_quiet_hours(preferences.quiet_hours)
    if window is None:
        return now
    start, end = window
    zone = ZoneInfo(preferences.timezone)
    local = now.astimezone(zone)
    at = local.time()
    inside = (start <= at < end) if start < end else (at >= start or at < end)
    if not inside:
        return now
    end_day = local.date() if at < end else local.date() + timedelta(days=1)
    return datetime.combine(end_day, end, tzinfo=zone).astimezone(UTC)


def next_month(now: datetime, zone: str = "Europe/Paris") -> datetime:
    """The first day of the next month, midnight in France (when the monthly relevé is printed)."""
    local = now.astimezone(ZoneInfo(zone))
    first = date(local.year + local.month // 12, local.month % 12 + 1, 1)
    return datetime.combine(first, time(0, 0), tzinfo=ZoneInfo(zone)).astimezone(UTC)


def parse_quiet_hours(text: str) -> tuple[time, time] | None:
    """"22:00-08:00" -> (22:00, 08:00); "" -> None; ValueError otherwise."""
    if not text.strip():
        return None
    try:
        first, second = text.split("-")
        start, end = time.fromisoformat(first.strip()), time.fromisoformat(second.strip())
    except ValueError:
        raise ValueError(f"quiet hours {text!r}: expected HH:MM-HH:MM") from None
    if start == end:
        raise ValueError(f"quiet hours {text!r}: start and end are the same")
    return start, end


# --- texts ---------------------------------------------------------------------------------------

_WHAT = {
    EventKind.NEW_DOCUMENT: ("Nouveau document", "Un nouveau document a été ajouté",
                             "nouveaux documents ont été ajoutés"),
    EventKind.NEW_MESSAGE: ("Nouveau message", "Un nouveau message est arrivé dans la messagerie",
                            "nouveaux messages sont arrivés dans la messagerie"),
    EventKind.FIRST_ACCESS: ("Premier accès d'un professionnel",
                             "Un professionnel de santé a accédé pour la première fois", "premiers accès ont eu lieu"),
    EventKind.PROFESSIONAL_ACTION: ("Activité sur votre profil", "Un professionnel de santé a agi",
                                    "actions de professionnels ont eu lieu"),
    EventKind.REMINDER: ("Rappel", "Votre profil Mon espace santé vous attend", "rappels vous attendent"),
    EventKind.ACTIVATION_CODE: ("Votre code d'activation", "Voici votre code provisoire d'activation",
                                "codes d'activation"),
    EventKind.ONE_TIME_CODE: ("Votre code", "Voici votre code", "codes"),
    EventKind.CONTACT_CHECK: ("Confirmez cette adresse",
                              "Voici le code qui confirme cette adresse pour les notifications de votre profil "
                              "Mon espace santé ; saisissez-le dans votre profil", "codes"),
}

#: the legal notice Mon espace santé e-mails carry (data processing, where to read about one's rights),
#: word for word from the Assurance Maladie's notification guide (its "canaux de notifications" page)
LEGAL_NOTICE = ("L'envoi de cet e-mail s'inscrit dans le cadre du traitement de données du service dénommé "
                "« Mon espace santé » mis en œuvre par l'Assurance Maladie et le Ministère de la Santé et de la "
                "Prévention. Pour en savoir plus sur le traitement et sur vos droits, rendez-vous sur "
                "monespacesante.fr/protection-donnees-personnelles")


def render(notices: Sequence[Notice], *, link: str) -> Outgoing:
    """The texts of one send: a single notice, or a digest of several of the same channel and address.
    Nothing in them comes from the documents or messages themselves."""
    first = notices[0]
    title, one, many = _WHAT[first.kind]
    whose = ("au profil Mon espace santé d'une personne dont vous êtes le représentant légal"
             if first.about_ins != first.ins else "à votre profil Mon espace santé")
    if first.channel is Channel.SMS:
        text = f"Mon espace santé : votre code est {first.code}. Ne le communiquez à personne."
        return Outgoing(delivery_id=first.notice_id, channel=first.channel, address=first.address,
                        subject=title, text=text)
    if len(notices) == 1:
        representative = first.about_ins != first.ins
        if first.kind in (EventKind.NEW_DOCUMENT, EventKind.FIRST_ACCESS, EventKind.PROFESSIONAL_ACTION):
            lead = f"{one} {whose}."
        elif first.kind is EventKind.NEW_MESSAGE:
            lead = f"{one} " + ("du profil Mon espace santé d'une personne dont vous êtes le représentant légal."
                                if representative else "de votre profil Mon espace santé.")
        else:
            lead = f"{one}."
        subject = f"Mon espace santé : {title.lower()}"
    else:
        lead = f"{len(notices)} {many} ({whose})."
        subject = f"Mon espace santé : {len(notices)} nouveautés"
    body = [lead, f"Connectez-vous à Mon espace santé pour en savoir plus : {link}",
            "Ce message ne contient aucune information médicale. Ne répondez pas à ce message."]
    if first.code:
        body.insert(1, f"Code : {first.code}")
    if first.channel is Channel.EMAIL:
        body.append(LEGAL_NOTICE)
    text = "\n\n".join(body)
    html_body = "".join(f"<p>{html.escape(p)}</p>" for p in body)
    page = f"<!doctype html><html lang=\"fr\"><body>{html_body}</body></html>"
    delivery = first.notice_id if len(notices) == 1 else digest_id(notices)
    return Outgoing(delivery_id=delivery, channel=first.channel, address=first.address, subject=subject,
                    text=text, html=page, link=link)


def digest_id(notices: Sequence[Notice]) -> str:
    """The id of a digest send: derived from its notices, so a retried digest keeps its Message-ID."""
    joined = "\x1f".join(sorted(n.notice_id for n in notices))
    return "d-" + hashlib.sha256(joined.encode()).hexdigest()[:32]


def fallback(notice: Notice, reach: Reach, policy: NotifyPolicy, *, now: datetime) -> Notice | None:
    """After `notice` failed for good: the next channel of its announcement that can be used, if any
    (e-mail bounced -> the postal relevé)."""
    rule = policy.kinds[notice.kind]
    for choice in rule.by_status.get(reach.status, ()):
        if notice.channel in choice:
            for channel in choice[choice.index(notice.channel) + 1:]:
                addresses = _addresses(channel, reach)
                if addresses:
                    event = Event(event_id=notice.event_id, kind=notice.kind, ins=notice.about_ins,
                                  occurred_at=now, code=notice.code, code_expires=notice.code_expires)
                    made = _notice(event, reach, channel, addresses[0], rule, policy, now=now)
                    return replace(made, fallback_of=notice.notice_id)
    return None
