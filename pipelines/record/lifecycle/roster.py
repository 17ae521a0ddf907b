"""The lifecycle's side of a roster import: which status each record keeps, and the profiles it makes.

Owns: admit() (an existing profile's status wins over the roster's: the roster's status column only seeds
new profiles) and registered(): after the upsert, a new `created` profile gets a provisional code and an
ACTIVATION_CODE event (the notifications print the letter); the event id is derived from the code
generation, so a re-import never announces twice; a profile whose letter event was never handed over
(a crash in between) gets a new code on the next import.  Profiles imported `active`, `opposed` or
`closed` are registered in that state, without a code; patients.status is re-synced after the upsert.
Does not: parse the roster (pipelines.record.roster_import) or upsert the patients (the Index does).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from hub.codes import new_code
from hub.records import PatientRecord, PatientStatus
from pipelines.record.core.factors import code_digest, vitale_digest
from pipelines.record.core.lifecycle import Request, add_years, code_expired
from pipelines.record.core.profile import Activation
from pipelines.record.lifecycle.steps import SYSTEM_REF, Steps

log = logging.getLogger(__name__)


class Registration:
    """Roster records in, profiles made or refreshed."""

    def __init__(self, steps: Steps) -> None:
        self._s = steps

    def admit(self, patients: Sequence[PatientRecord]) -> list[PatientRecord]:
        """The roster's records with the status of each existing profile instead of the roster's (the
        profile is the truth once it exists; call before Index.upsert_patients)."""
        known = self._s.p.profiles.statuses([p.ins for p in patients])
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
        counts["status_synced"] = self._s.p.profiles.sync_status([p.ins for p in patients])
        log.info("roster registration: %s", dict(counts))
        return dict(counts)

    def _register(self, patient: PatientRecord, serial: str) -> str:
        p, now, ins = self._s.p, self._s.p.clock(), patient.ins
        vitale = vitale_digest(p.secret, ins, serial) if serial else ""
        code = new_code(p.random_bytes) if patient.status is PatientStatus.CREATED else ""
        profile = p.profiles.register(
            ins, status=patient.status, code_sha256=code_digest(p.secret, ins, code) if code else "",
            vitale_sha256=vitale, created_at=now, expires_at=now + p.rules.code_validity if code else None,
            values=self._imported(patient.status, now))
        if profile is None:
            return self._refresh(ins, vitale, now)
        self._s.audit(ins, "lifecycle.registered", SYSTEM_REF)
        if code:
            self._s.send_code(profile, code, now)
        self._s.opened(profile)
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
            return {"closed_at": now, "purge_after": add_years(now, self._s.p.rules.archive_years)}
        return {}

    def _refresh(self, ins: str, vitale: str, now: datetime) -> str:
        """An existing profile: a renewed Vitale card; a letter event never handed over."""
        profile = self._s.p.profiles.profile(ins)
        if profile is None:
            return "existing"
        if vitale and vitale != profile.vitale_sha256:
            self._s.p.profiles.set_vitale(ins, vitale)
        unannounced = profile.code_pending and profile.announced_generation < profile.code_generation
        if unannounced and not code_expired(profile, now) and self._s.new_code(profile, now, Request.REISSUE):
            self._s.audit(ins, "lifecycle.code-reissued", SYSTEM_REF)
            return "recovered"
        return "existing"
