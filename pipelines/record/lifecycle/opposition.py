"""Opposition to a profile's creation, by the person (with the letter's factors) or by an operator.

Owns: the order of its steps: the PDF receipt is rendered (ReceiptPrinter) and stored (BlobStore) BEFORE
the transition that records its key, so an opposed profile always has its receipt; opposing again returns
the same profile and receipt (made then for a profile the roster imported opposed).
Does not: render the PDF (connectors.outbound.receipts) or decide the opposition window
(pipelines.record.core.lifecycle).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from hub.actors import Actor, ActorKind
from hub.envelope import BlobRef
from hub.errors import NotFound, Refused
from hub.records import PatientStatus
from pipelines.record.core.lifecycle import Request, finding, next_status, opposition_values, opposition_window_open
from pipelines.record.core.profile import Profile
from pipelines.record.lifecycle.steps import MAX_RACES, Steps, actor_ref, raise_if_refused

RECEIPT_KIND = "receipt"
PDF = "application/pdf"


class Opposition:
    """created -> opposed, with its receipt."""

    def __init__(self, steps: Steps) -> None:
        self._s = steps

    def receipt(self, ins: str) -> bytes:
        """The PDF receipt of the opposition (NotFound: no profile, or never opposed)."""
        ref = self._s.require(ins).receipt
        if ref is None:
            raise NotFound("no opposition receipt for this profile")
        return self._s.p.store.get(ref)

    def oppose(self, ins: str, *, code: str | None = None, vitale_serial: str | None = None,
               actor: Actor | None = None) -> Profile:
        """Oppose the profile's creation (within the code's 6 weeks).  With `code` and `vitale_serial`: the
        person themself, checked and rate-limited like an activation; without: an operator recording a
        written request (NotFound for an unknown INS).  Opposing an opposed profile returns it as it is."""
        s, person = self._s, code is not None or vitale_serial is not None
        who = actor_ref(actor or Actor(ActorKind.PATIENT, ins)) if person or actor else "operator"
        for _ in range(MAX_RACES):
            profile = s.p.profiles.profile(ins)
            if profile is None:
                raise Refused(s.stranger(ins)) if person else NotFound("no profile")
            now = s.p.clock()
            if person:
                decision = s.check(profile, Request.OPPOSE, code or "", vitale_serial or "", now)
                if not decision.allowed:
                    s.refuse(profile, decision, now, who)
                    continue
            else:
                _operator_may_oppose(profile, now)
            done = self._receipted(profile) if profile.status is PatientStatus.OPPOSED \
                else self._opposed(profile, now, who)
            if done is not None:
                return done
        raise Refused(finding("lifecycle.activation-refused"))

    def _opposed(self, profile: Profile, now: datetime, who: str) -> Profile | None:
        """created -> opposed, with its receipt stored first (None: the profile changed meanwhile)."""
        values = opposition_values(now)
        ref = self._store_receipt(replace(profile, status=PatientStatus.OPPOSED, **values))
        done = self._s.p.profiles.transition(
            profile.ins, from_statuses=(PatientStatus.CREATED,), to_status=PatientStatus.OPPOSED,
            values={**values, **_receipt_values(ref)}, where={"code_generation": profile.code_generation})
        if done is not None:
            self._s.withdraw(profile.ins)
            self._s.audit(profile.ins, "lifecycle.opposed", who)
        return done

    def _receipted(self, profile: Profile) -> Profile | None:
        """An opposed profile, with a receipt (made now for one imported opposed from the roster)."""
        if profile.receipt_key:
            return profile
        ref = self._store_receipt(profile)
        profiles = self._s.p.profiles
        done = profiles.transition(profile.ins, from_statuses=(PatientStatus.OPPOSED,),
                                   to_status=PatientStatus.OPPOSED, values=_receipt_values(ref),
                                   where={"receipt_key": ""})
        return done or profiles.profile(profile.ins)

    def _store_receipt(self, profile: Profile) -> BlobRef:
        patient = self._s.p.index.patient(profile.ins)
        if patient is None:
            raise NotFound("the patient is not in the registry")
        pdf = self._s.p.receipts.render(patient, profile)
        return self._s.p.store.put(pdf, kind=RECEIPT_KIND, content_type=PDF)


def _operator_may_oppose(profile: Profile, now: datetime) -> None:
    raise_if_refused(next_status(profile.status, Request.OPPOSE))
    if profile.status is PatientStatus.CREATED and not opposition_window_open(profile, now):
        raise Refused(finding("lifecycle.expired-code"))


def _receipt_values(ref: BlobRef) -> dict[str, Any]:
    return {"receipt_key": ref.key, "receipt_bucket": ref.bucket, "receipt_sha256": ref.sha256,
            "receipt_size": ref.size}
