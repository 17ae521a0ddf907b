"""The patient lifecycle service: one object answering record.ports.LifecycleService and the sweep.

Owns: the public surface (profile, activate, oppose, receipt, request_code, reissue_code, close, export,
admit, registered, sweep, code_event_id), each handed to the part that owns its steps: roster.Registration,
requests.Requests, opposition.Opposition, sweep.Sweep, on the shared steps.Steps.
Does not: hold any step itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import IO, Any

from hub.actors import Actor
from hub.notices import Channel
from hub.records import PatientRecord
from pipelines.record.core.lifecycle import reimbursement_release_at
from pipelines.record.core.profile import Profile
from pipelines.record.lifecycle.opposition import Opposition
from pipelines.record.lifecycle.requests import Requests
from pipelines.record.lifecycle.roster import Registration
from pipelines.record.lifecycle.steps import LifecyclePorts, Steps
from pipelines.record.lifecycle.sweep import Sweep


class Lifecycle:
    """record.ports.LifecycleService (export through the `export` port: pipelines.record.restitution) and
    the sweep."""

    def __init__(self, ports: LifecyclePorts) -> None:
        self._steps = Steps(ports)
        self._roster = Registration(self._steps)
        self._requests = Requests(self._steps)
        self._opposition = Opposition(self._steps)
        self._sweep = Sweep(self._steps)

    def profile(self, ins: str) -> Profile | None:
        return self._steps.p.profiles.profile(ins)

    def reimbursement_release_at(self, ins: str) -> datetime | None:
        """When the insurer's reimbursement history for `ins` may be filed (None: not open)."""
        profile = self._steps.p.profiles.profile(ins)
        return reimbursement_release_at(profile, self._steps.p.rules) if profile is not None else None

    def receipt(self, ins: str) -> bytes:
        return self._opposition.receipt(ins)

    def admit(self, patients: Sequence[PatientRecord]) -> list[PatientRecord]:
        return self._roster.admit(patients)

    def registered(self, patients: Sequence[PatientRecord], vitale: Mapping[str, str] | None = None) -> dict[str, int]:
        return self._roster.registered(patients, vitale)

    def activate(self, ins: str, code: str, vitale_serial: str, *, actor: Actor | None = None) -> Profile:
        return self._requests.activate(ins, code, vitale_serial, actor=actor)

    def oppose(self, ins: str, *, code: str | None = None, vitale_serial: str | None = None,
               actor: Actor | None = None) -> Profile:
        return self._opposition.oppose(ins, code=code, vitale_serial=vitale_serial, actor=actor)

    def request_code(self, ins: str, vitale_serial: str, channel: Channel = Channel.POSTAL) -> None:
        self._requests.request_code(ins, vitale_serial, channel)

    def reissue_code(self, ins: str, *, actor: Actor | None = None) -> Profile:
        return self._requests.reissue_code(ins, actor=actor)

    def close(self, ins: str, *, actor: Actor | None = None) -> Profile:
        return self._requests.close(ins, actor=actor)

    def export(self, ins: str, out: IO[bytes], *, actor: Actor | None = None) -> dict[str, Any]:
        return self._requests.export(ins, out, actor=actor)

    def sweep(self, now: datetime | None = None) -> dict[str, int]:
        return self._sweep.sweep(now)

    def code_event_id(self, profile: Profile) -> str:
        return self._steps.code_event_id(profile)
