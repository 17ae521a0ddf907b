"""Composition of the record's trust layer: access rules, audit trail, lifecycle, restitution, purge and
the insurer's reimbursement history (the part of the composition root that issue 5 added).

Owns: building the stores beside the index (audit trail, record controls, profiles, purge queue,
reimbursement holds), loading the habilitation matrix ([records] habilitations: the official export,
else config/habilitations.toml), and wiring the services on them: RecordAccess, Lifecycle (with
restitution and purge), InsurerBatches, and one scheduler pass (`sweep`) that runs every timer due.
Does not: decide anything (pipelines do) or serve anything (meshub.compose starts the threads).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from config.settings import Settings
from config.tables import load_habilitations, load_official_matrix, load_validation_rules
from connectors.outbound.receipts import OppositionReceipts
from hub.access import Habilitations
from hub.actors import AccessMode, Actor, ActorKind
from hub.audit import Verification
from hub.auth import new_token, token_sha256
from hub.credentials import Credential, Role
from hub.intake import Intake
from hub.ports import BlobStore, IssuedTokens
from hub.records import DocumentRecord
from pipelines.insurer.reimbursements import InsurerBatches
from pipelines.notify.contacts import ContactPorts, Contacts
from pipelines.notify.service import Notifier
from pipelines.record.access import RecordAccess, RecordPorts, hidden_documents
from pipelines.record.audit import LifecycleAuditor, verify_trail
from pipelines.record.core import access
from pipelines.record.core.trail_view import shown
from pipelines.record.lifecycle import Lifecycle, LifecyclePorts
from pipelines.record.restitution import export_record, purge, sweep_erasures
from storage.objects import MinioBlobStore
from storage.sql.audit import SqlAuditTrail
from storage.sql.audit_batching import GroupCommitTrail
from storage.sql.controls import SqlRecordControls
from storage.sql.index import SqlIndex
from storage.sql.mailbox import SqlMailbox
from storage.sql.notifications import SqlNotifications
from storage.sql.profiles import SqlProfiles
from storage.sql.purge import SqlPurge
from storage.sql.reimbursements import SqlReimbursements
from storage.sql.tokens import SqlTokens

log = logging.getLogger(__name__)
FULL_RELEASE_EVERY_S = 3600.0  # the reimbursement release's safety net: every pending patient, hourly


def _now() -> datetime:
    return datetime.now(UTC)


def derived_secret(key_secret: bytes, purpose: str) -> bytes:
    """A secret for one purpose from the hub's persistent key secret (codes stay valid across restarts)."""
    return hmac.new(key_secret, purpose.encode(), hashlib.sha256).digest()


def habilitations_for(settings: Settings) -> Habilitations:
    path = settings.records.habilitations
    return load_official_matrix(Path(path)) if path else load_habilitations()


@dataclass
class RecordParts:
    """The stores and services of the record's trust layer, on the hub's index, store and notifier."""

    settings: Settings
    index: SqlIndex
    store: MinioBlobStore
    notices: SqlNotifications
    mailboxes: SqlMailbox
    patient_domain: str
    audit: GroupCommitTrail
    controls: SqlRecordControls
    profiles: SqlProfiles
    purges: SqlPurge
    holds: SqlReimbursements
    tokens: IssuedTokens
    habilitations: Habilitations
    clock: Callable[[], datetime] = field(default=_now)

    @classmethod
    def build(cls, settings: Settings, index: SqlIndex, store: MinioBlobStore, notices: SqlNotifications,
              mailboxes: SqlMailbox, *, patient_domain: str) -> RecordParts:
        return cls(settings=settings, index=index, store=store, notices=notices, mailboxes=mailboxes,
                   patient_domain=patient_domain,
                   audit=GroupCommitTrail(SqlAuditTrail.beside(index)), controls=SqlRecordControls.beside(index),
                   profiles=SqlProfiles.beside(index), purges=SqlPurge.beside(index, patient_domain=patient_domain),
                   holds=SqlReimbursements.beside(index), tokens=SqlTokens.beside(index),
                   habilitations=habilitations_for(settings))

    def record_access(self, notifier: Notifier) -> RecordAccess:
        return RecordAccess(RecordPorts(index=self.index, controls=self.controls, trail=self.audit,
                                        habilitations=self.habilitations, representatives=self.notices.representatives,
                                        announce=notifier.announce, clock=self.clock))

    def lifecycle(self, notifier: Notifier) -> Lifecycle:
        return Lifecycle(LifecyclePorts(
            index=self.index, profiles=self.profiles, announce=notifier.announce,
            representatives=self.notices.representatives,
            end_representation=lambda ins: self.notices.set_representatives(ins, []),
            receipts=OppositionReceipts(secret=derived_secret(self.settings.key_secret, "opposition-receipt")),
            store=self.store, secret=derived_secret(self.settings.key_secret, "activation-codes"),
            clock=self.clock, purge=self.purge, audit=LifecycleAuditor(self.audit, self.clock),
            export=self.export, opened=self.holds.schedule, withdraw_codes=self.notices.withdraw_codes))

    def contacts(self, notifier: Notifier) -> Contacts:
        """The patients' own contact addresses (confirmation codes keyed by their own derived secret)."""
        return Contacts(ContactPorts(notices=self.notices, announce=notifier.announce,
                                     secret=derived_secret(self.settings.key_secret, "contact-codes"),
                                     clock=self.clock, audit=LifecycleAuditor(self.audit, self.clock)))

    def insurer(self, intake: Intake, store: BlobStore, lifecycle: Lifecycle) -> InsurerBatches:
        return InsurerBatches(intake=intake, index=self.index, store=store, holds=self.holds,
                              released_after=lifecycle.reimbursement_release_at,
                              rules=load_validation_rules(max_bytes=self.settings.max_body_bytes),
                              producer=self.settings.records.insurer, clock=self.clock)

    def issue_token(self, ins: str) -> str:
        """A new bearer token for the patient `ins` (after their activation); only its digest is kept."""
        token = new_token()
        name = "patient-" + hashlib.sha256(ins.encode()).hexdigest()[:12]  # no INS in names that get logged
        self.tokens.issue(Credential(name=name, role=Role.PATIENT, token_sha256=token_sha256(token), ins=ins))
        return token

    def verify(self) -> Verification:
        return verify_trail(self.audit)

    def export(self, ins: str, out: IO[bytes]) -> dict[str, Any]:
        """Restitution: everything the patient may see, their mailbox, notifications and trail."""
        summary = export_record(ins, index=self.index, store=self.store, mailboxes=self.mailboxes,
                                notices=self.notices, out=out, audit_entries=self._trail_of,
                                now=self.clock(), patient_domain=self.patient_domain,
                                visible=self._patient_sees)
        return dict(summary.to_dict())

    def purge(self, ins: str) -> None:
        """The end of the archive: rows, then stored objects, then the trail's bodies."""
        report = purge(ins, purge_store=self.purges, eraser=self.store, redact=self.audit.redact)
        log.info("purge: %s", report.to_dict())

    def sweep(self, lifecycle: Lifecycle, insurer: InsurerBatches, *, full: bool = False) -> dict[str, Any]:
        """One pass of every timer: openings, majority, purges, reimbursement release (`full`: every
        pending patient, not only those scheduled), object erasures."""
        now = self.clock()
        return {"lifecycle": lifecycle.sweep(now), "reimbursements": insurer.release(now, full=full),
                "erasures": sweep_erasures(purge_store=self.purges, eraser=self.store).to_dict()}

    def _trail_of(self, ins: str) -> list[dict[str, Any]]:
        """The export's audit.json: the trail as the patient is shown it (entries about documents they
        may not see redacted, as GET /v1/patients/{ins}/audit shows them)."""
        hidden = hidden_documents(self.index, self.controls, self.habilitations, Actor(ActorKind.PATIENT, ins), ins)
        entries, after = [], 0
        while page := self.audit.for_patient(ins, after_seq=after, limit=1000):
            entries += shown(page, hidden)
            after = page[-1].seq
        return entries

    def _patient_sees(self, record: DocumentRecord) -> bool:
        """Restitution gives the patient what they may see of their record (not INVISIBLE_PATIENT, not deleted)."""
        facts = access.facts(record, self.controls.flags([record.document_id]).get(record.document_id))
        return access.can_see(Actor(ActorKind.PATIENT, record.patient_ins), AccessMode.NORMAL, facts,
                              habilitations=self.habilitations).allowed


class RecordTimers:
    """The record's timers as one periodic tick (meshub.scheduler): openings, majority, purges, erasures and
    the reimbursement release, whose safety net (every pending patient, not only those scheduled) runs
    at most every `full_every_s`."""

    def __init__(self, parts: RecordParts, lifecycle: Lifecycle, insurer: InsurerBatches, *,
                 full_every_s: float = FULL_RELEASE_EVERY_S) -> None:
        self._parts, self._lifecycle, self._insurer = parts, lifecycle, insurer
        self._full_every_s = full_every_s
        self._last_full: float | None = None

    def tick(self) -> dict[str, Any]:
        full = self._last_full is None or time.monotonic() - self._last_full >= self._full_every_s
        swept = self._parts.sweep(self._lifecycle, self._insurer, full=full)
        if full:
            self._last_full = time.monotonic()
        return swept
