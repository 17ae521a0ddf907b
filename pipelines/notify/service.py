"""Notifications: announcing events to patients, sending each notice, and printing postal batches.

Owns: the three moving parts around the pure policy (pipelines.notify.core.policy):
* Notifier.announce(event): who is told, on which channels; stores the notices (once per event,
  channel and addressee), then puts a wake-up for each on the notify queue.  Called by the
  pipelines that index a document or file a message, before their own bus message is acked.
* NoticeSender (a hub.ports.Handler on the notify queue): claims a due notice (one conditional write; the
  notice is read only when the claim fails, to know why), merges the digest,
  sends it, records the outcome.  A channel that is down: the notice stays queued and its wake-up is
  re-published with backoff (hub.retry) for up to `give_up_after`, then it fails; a permanent
  refusal falls back to the next channel (e-mail -> postal).
* The patient's own e-mail and phone (given at activation or changed with a confirmation) replace the
  registry's (the insurer's) for every announcement (own_contact).
* LetterRun: every queued postal notice that is due, grouped by addressee, as one PDF per run.
Does not: choose adapters (meshub.compose) or build texts (pipelines.notify.core.policy.render).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from hub.errors import ChannelRefused, ChannelUnavailable, NotFound
from hub.events import NoticeDue
from hub.notices import Addressee, Channel, Event, EventKind, Letter, LetterBatch, Notice, NoticeState
from hub.ports import BlobStore, Index, Publisher
from hub.records import DocumentRecord, PatientRecord, PatientStatus
from hub.retry import RetryPolicy
from pipelines.notify.core.policy import NotifyPolicy, Reach, addressee_of, audience, fallback, plan, render
from pipelines.notify.ports import LetterPrinter, NotificationChannel, NotificationStore, Reachable, Settings

log = logging.getLogger(__name__)
#: a channel down: retry every 30 s at first, then at most hourly, for two days, then fail (and fall back)
CHANNEL_RETRY = RetryPolicy(max_attempts=60, base_delay_s=30.0, max_delay_s=3600.0)
LEASE_S = 120.0
DIGEST_SLACK = timedelta(seconds=1)


def wake_up(notice: Notice) -> NoticeDue:
    """The bus event that makes a worker look at `notice` (it carries the id only: the row is the state)."""
    return NoticeDue(notice_id=notice.notice_id, created_at=notice.created_at, channel=str(notice.channel))


def _delay(due: datetime, now: datetime) -> float:
    return max(0.0, (due - now).total_seconds())


@dataclass
class NotifyPorts:
    """What notifications need: the registry, the notice store, the notify queue and the policy."""

    index: Index
    notices: NotificationStore
    queue: Publisher
    policy: NotifyPolicy
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


class Notifier:
    """Turns an event into stored notices and their wake-ups."""

    def __init__(self, ports: NotifyPorts) -> None:
        self._p = ports

    def announce(self, event: Event) -> list[Notice]:
        """Idempotent: the same event again finds its notices and wakes those still queued.  Reads the
        registry once per person and the notice store once (`reach`), then stores the notices at once."""
        p, now = self._p, self._p.clock()
        found = p.index.patient(event.ins)
        known = p.notices.reach(event.ins) if found is not None else Reachable(Settings(event.ins))
        settings = {s.ins: s for s in (*known.representatives, known.own)}
        patient = own_contact(found, known.own)
        reps = [r for r in (own_contact(p.index.patient(s.ins), s) for s in known.representatives) if r is not None]
        who = audience(event, patient, reps)
        if not who.addressees:
            log.info("event=%s kind=%s: nobody to tell (%s)", _ref(event.event_id), event.kind, who.reason)
            return []
        planned: list[Notice] = []
        for addressee in who.addressees:
            profile = patient if addressee.ins == event.ins else next(r for r in reps if r.ins == addressee.ins)
            planned += plan(event, _reach(profile, addressee, settings[addressee.ins]), p.policy, now=now)
        stored = p.notices.add([_delivered_if_inapp(n, now) for n in planned])
        woken = [n for n in stored if n.state is NoticeState.QUEUED and n.channel is not Channel.POSTAL]
        for notice in woken:
            p.queue.publish(wake_up(notice), delay_s=_delay(notice.due_at, now))
        log.info("event=%s kind=%s: %d notice(s), %d to send", _ref(event.event_id), event.kind, len(stored),
                 len(woken))
        return stored

    def document_indexed(self, document: DocumentRecord) -> None:
        """DocumentPipeline's announcer: a new document in a record."""
        self.announce(Event(event_id=f"document:{document.document_id}", kind=EventKind.NEW_DOCUMENT,
                            ins=document.patient_ins, occurred_at=self._p.clock(), subject_id=document.document_id,
                            confidentiality=document.confidentiality))

    def message_filed(self, message_id: str, ins: str) -> None:
        """MailPipeline's announcer: a message in a patient's mailbox."""
        self.announce(Event(event_id=f"message:{message_id}", kind=EventKind.NEW_MESSAGE, ins=ins,
                            occurred_at=self._p.clock(), subject_id=message_id))


def _reach(profile: PatientRecord | None, addressee: Addressee, settings: Settings) -> Reach:
    assert profile is not None
    return Reach(addressee=addressee, status=profile.status, preferences=settings.preferences,
                 devices=settings.devices, last_email_at=settings.last_email_at)


def own_contact(patient: PatientRecord | None, settings: Settings) -> PatientRecord | None:
    """The registry's profile with the e-mail and phone the patient gave themself, where they gave one
    (the insurer's otherwise)."""
    if patient is None:
        return None
    if not (settings.email or settings.phone):
        return patient
    return replace(patient, email=settings.email or patient.email, phone=settings.phone or patient.phone)


def _delivered_if_inapp(notice: Notice, now: datetime) -> Notice:
    """An in-app notice is delivered once stored: the notification centre shows the stored row."""
    if notice.channel is Channel.INAPP:
        return replace(notice, state=NoticeState.DELIVERED, sent_at=now)
    return notice


def _ref(event_id: str) -> str:
    """A log-safe reference to an event (its id may embed a document id)."""
    return hashlib.sha256(event_id.encode()).hexdigest()[:12]


class NoticeSender:
    """The handler of NoticeDue (pipelines.definitions): one wake-up -> at most one send of its notice (or digest)."""

    def __init__(self, ports: NotifyPorts, channels: Mapping[Channel, NotificationChannel], *, link: str,
                 retry: RetryPolicy = CHANNEL_RETRY) -> None:
        self._p = ports
        self._channels = dict(channels)
        self._link = link
        self._retry = retry

    def __call__(self, due: NoticeDue) -> None:
        p, now = self._p, self._p.clock()
        claimed = p.notices.claim(due.notice_id, now=now, lease_s=LEASE_S)  # the common case: one write
        if claimed is not None:
            self._send(claimed, due, now)
            return
        notice = p.notices.notice(due.notice_id)  # why not: final, not due, or leased
        if notice is None or notice.state is not NoticeState.QUEUED:
            return  # already sent (a digest took it, or a redelivered wake-up)
        if notice.due_at > now:
            p.queue.publish(due, delay_s=_delay(notice.due_at, now))  # quiet hours, digest window
            return
        p.queue.publish(due, delay_s=LEASE_S)  # another worker holds it: look again once its lease is over

    def _send(self, notice: Notice, due: NoticeDue, now: datetime) -> None:
        p = self._p
        group = [notice]
        if notice.channel is Channel.EMAIL and p.policy.kinds[notice.kind].digest:
            group += p.notices.digest_group(notice, due_before=now + DIGEST_SLACK)
        outgoing = render(group, link=self._link)
        channel = self._channels.get(notice.channel)
        try:
            if channel is None:
                raise ChannelRefused(f"no {notice.channel} channel configured")
            result = channel.send(outgoing)
        except ChannelUnavailable as exc:
            self._later(notice, due, str(exc) or type(exc).__name__)
            return
        except ChannelRefused as exc:
            self._failed(notice, NoticeState.BOUNCED, exc.reason, now)
            return
        state = NoticeState.DELIVERED if result.delivered else NoticeState.SENT
        batch = outgoing.delivery_id if len(group) > 1 else ""
        p.notices.finish([n.notice_id for n in group], state, at=now, batch_id=batch,
                         provider_ref=result.provider_ref)
        log.info("notice=%s channel=%s sent (%d in this send) attempt=%d", notice.notice_id, notice.channel,
                 len(group), notice.attempts)

    def _later(self, notice: Notice, due: NoticeDue, error: str) -> None:
        delay = self._retry.next_delay(notice.attempts - 1)
        if delay is None:
            self._failed(notice, NoticeState.FAILED, f"gave up after {notice.attempts} attempts: {error}",
                         self._p.clock())
            return
        self._p.notices.release(notice.notice_id, error=error)
        self._p.queue.publish(due, delay_s=delay)  # before the ack: the retry is durable
        log.warning("notice=%s channel=%s unavailable (%s): retry in %.0f s", notice.notice_id, notice.channel,
                    error[:80], delay)

    def _failed(self, notice: Notice, state: NoticeState, reason: str, now: datetime) -> None:
        """Record the failure, after storing (and waking) the fallback: a crash in between leaves the
        notice queued, and its redelivered wake-up finds the fallback already there."""
        replacement = self._fallback_for(notice, now)
        if replacement is not None:
            for stored in self._p.notices.add([replacement]):
                if stored.state is NoticeState.QUEUED and stored.channel is not Channel.POSTAL:
                    self._p.queue.publish(wake_up(stored), delay_s=_delay(stored.due_at, now))
            log.info("notice=%s falls back to %s", notice.notice_id, replacement.channel)
        self._p.notices.finish([notice.notice_id], state, at=now, error=reason)
        log.warning("notice=%s channel=%s %s: %s", notice.notice_id, notice.channel, state, reason[:120])

    def _fallback_for(self, notice: Notice, now: datetime) -> Notice | None:
        p = self._p
        found = p.index.patient(notice.ins)
        if found is None:
            return None
        own = p.notices.reach(notice.ins).own
        profile = own_contact(found, own)
        assert profile is not None
        addressee = addressee_of(profile, representative_of=notice.about_ins if notice.about_ins != notice.ins else "")
        reach = Reach(addressee=addressee, status=profile.status, preferences=own.preferences, devices=own.devices)
        return fallback(notice, reach, p.policy, now=now)


# --- postal batches ------------------------------------------------------------------------------

MONTHS_FR = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
             "novembre", "décembre")


def french_date(day: datetime) -> str:
    return f"{day.day} {MONTHS_FR[day.month - 1]} {day.year}"


_RELEVE_LINES = {
    EventKind.NEW_DOCUMENT: "nouveau(x) document(s) ajouté(s) à votre profil",
    EventKind.NEW_MESSAGE: "nouveau(x) message(s) dans votre messagerie de santé",
    EventKind.FIRST_ACCESS: "premier(s) accès d'un professionnel de santé",
    EventKind.PROFESSIONAL_ACTION: "action(s) de professionnels de santé",
    EventKind.REMINDER: "rappel(s)",
}


@dataclass
class LetterRun:
    """Prints every due postal notice: one letter per addressee (activation letters on their own), one PDF."""

    index: Index
    notices: NotificationStore
    printer: LetterPrinter
    store: BlobStore
    link: str
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def tick(self) -> LetterBatch | None:
        """The periodic run (meshub.scheduler): print what is due."""
        return self.run()

    def run(self) -> LetterBatch | None:
        now = self.clock()
        due = self.notices.queued_letters(due_before=now)
        if not due:
            return None
        letters, included = self._letters(due, now)
        if not letters:
            return None
        pdf = self.printer.render(letters)
        ref = self.store.put(pdf, kind="letters", content_type="application/pdf")
        batch_id = "b-" + hashlib.sha256("\x1f".join(sorted(included)).encode()).hexdigest()[:24]
        batch = LetterBatch(batch_id=batch_id, period=now.strftime("%Y-%m"), created_at=now, letters=len(letters),
                            bucket=ref.bucket, pdf_key=ref.key, sha256=ref.sha256, size=ref.size)
        self.notices.record_batch(batch, included)
        log.info("letter batch=%s: %d letter(s), %d notice(s)", batch_id, len(letters), len(included))
        return batch

    def _letters(self, due: Sequence[Notice], now: datetime) -> tuple[list[Letter], list[str]]:
        by_addressee: dict[str, list[Notice]] = {}
        letters: list[Letter] = []
        included: list[str] = []
        for notice in due:
            if notice.kind is EventKind.ACTIVATION_CODE:
                letters.append(self._activation(notice, now))
                included.append(notice.notice_id)
            else:
                by_addressee.setdefault(notice.ins, []).append(notice)
        for ins, group in by_addressee.items():
            letters.append(self._releve(ins, group, now))
            included += [n.notice_id for n in group]
        return letters, included

    def _name(self, ins: str) -> str:
        patient = self.index.patient(ins)
        if patient is None:
            raise NotFound("addressee of a letter is no longer in the registry")
        return " ".join(p for p in (patient.given_names.split(" ")[0], patient.birth_name) if p)

    def _activation(self, notice: Notice, now: datetime) -> Letter:
        until = french_date(notice.code_expires) if notice.code_expires else ""
        patient = self.index.patient(notice.about_ins)
        if patient is not None and patient.status is PatientStatus.OPENED:  # the code its holder asked for
            paragraphs: tuple[str, ...] = (
                "Votre profil Mon espace santé est ouvert. Vous avez demandé un code pour l'activer : "
                f"rendez-vous sur {self.link} avec le code ci-dessous, votre numéro de sécurité sociale et le "
                "numéro de série de votre carte Vitale.",
                "Une fois votre profil activé, vous choisissez l'adresse e-mail à laquelle vous êtes informé. "
                "Si vous n'avez pas fait cette demande, ignorez ce courrier.")
        else:
            paragraphs = (
                "Votre profil Mon espace santé a été créé. Pour l'activer, rendez-vous sur "
                f"{self.link} avec le code provisoire ci-dessous, votre numéro de sécurité sociale et "
                "le numéro de série de votre carte Vitale.",
                "Vous pouvez aussi vous opposer à sa création pendant la même période. Sans action de "
                "votre part, votre profil sera ouvert automatiquement à la fin de ce délai de six semaines.")
        return Letter(
            letter_id=notice.notice_id, recipient_name=self._name(notice.ins),
            address_lines=address_lines(notice.address), title="Activez votre profil Mon espace santé",
            paragraphs=paragraphs, qr_payload=f"{self.link}?ref={notice.notice_id}", sent_on=french_date(now),
            code=notice.code, code_valid_until=until)

    def _releve(self, ins: str, group: Sequence[Notice], now: datetime) -> Letter:
        counts: dict[EventKind, int] = {}
        for notice in group:
            counts[notice.kind] = counts.get(notice.kind, 0) + 1
        lines = tuple(f"{count} {_RELEVE_LINES.get(kind, str(kind))}" for kind, count in counts.items())
        return Letter(
            letter_id="r-" + hashlib.sha256("\x1f".join(n.notice_id for n in group).encode()).hexdigest()[:24],
            recipient_name=self._name(ins), address_lines=address_lines(group[0].address),
            title="Relevé d'activité de votre profil Mon espace santé",
            paragraphs=("Depuis notre dernier courrier, voici ce qui s'est passé sur votre profil :", *lines,
                        f"Pour en prendre connaissance, activez votre profil sur {self.link}. Ce courrier ne "
                        "contient aucune information médicale."),
            qr_payload=self.link, sent_on=french_date(now))


def address_lines(postal_address: str) -> tuple[str, ...]:
    """The registry's postal address ("line; line; 75001 PARIS" or one line per row) as letter lines."""
    parts = [p.strip() for p in postal_address.replace("\n", ";").split(";")]
    return tuple(p for p in parts if p)[:6]
