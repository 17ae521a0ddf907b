"""Events of the documents feature: a submitted document was filed, or rejected (pure).

Owns: DocumentFiled and DocumentRejected, what the CDA pipeline publishes once a submission's outcome is
committed, for the steps that follow it (the patient's notification, the integration report of the
mail that carried the document).
Does not: carry the document (its id and the submission's say where it is).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Self

from hub.events.base import Event, registered


@dataclass(frozen=True, slots=True)
class Outcome(Event):
    """A submission's outcome is final: `source_kind` is the connector it came through (`mss`: a mail)."""

    submission_id: str
    source_kind: str
    tries: int = 0
    kind: ClassVar[str] = "document.outcome"

    @property
    def event_id(self) -> str:
        return self.submission_id

    @property
    def attempt(self) -> int:
        return self.tries

    def next_attempt(self) -> Self:
        return replace(self, tries=self.tries + 1)

    def data(self) -> dict[str, Any]:
        return {"submission": self.submission_id, "source": self.source_kind}

    @classmethod
    def from_data(cls, data: Mapping[str, Any], *, attempt: int) -> Self:
        return cls(submission_id=str(data["submission"]), source_kind=str(data["source"]), tries=attempt)


@registered
@dataclass(frozen=True, slots=True)
class DocumentFiled(Outcome):
    """A submission filed a document in a patient's record (indexed, or a duplicate of one)."""

    kind: ClassVar[str] = "document.filed"


@registered
@dataclass(frozen=True, slots=True)
class DocumentRejected(Outcome):
    """A submission was rejected with findings (nothing filed)."""

    kind: ClassVar[str] = "document.rejected"
