"""Events of the documents feature: a submitted document was filed, or rejected (pure).

Owns: DocumentFiled and DocumentRejected, what the CDA pipeline publishes once a submission's outcome is
committed, for the steps that follow it (the patient's notification, the integration report of the
mail that carried the document).
Does not: carry the document (its id and the submission's say where it is).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from hub.events.base import Retried, registered


@dataclass(frozen=True, slots=True)
class Outcome(Retried):
    """A submission's outcome is final: `source_kind` is the connector it came through (`mss`: a mail)."""

    submission_id: str
    source_kind: str
    kind: ClassVar[str] = "document.outcome"

    @property
    def event_id(self) -> str:
        return self.submission_id

    def data(self) -> dict[str, Any]:
        return {"submission": self.submission_id, "source": self.source_kind}

    @classmethod
    def from_data(cls, data: Mapping[str, Any], *, attempt: int) -> Self:
        return cls(submission_id=str(data["submission"]), source_kind=str(data["source"]), tries=attempt)


@registered
@dataclass(frozen=True, slots=True)
class DocumentFiled(Outcome):
    """A submission's document is in a patient's record: `document_id` newly indexed, or "" when it was
    a duplicate of one already there (nothing new to announce).
    Producer: DocumentPipeline.  Handler: the write trail entry, the patient's notification, and for a
    document a mail carried (`mss`), that mail's integration report."""

    document_id: str = ""
    kind: ClassVar[str] = "document.filed"

    def data(self) -> dict[str, Any]:
        return {"submission": self.submission_id, "source": self.source_kind, "document": self.document_id}

    @classmethod
    def from_data(cls, data: Mapping[str, Any], *, attempt: int) -> Self:
        return cls(submission_id=str(data["submission"]), source_kind=str(data["source"]), tries=attempt,
                   document_id=str(data.get("document", "")))


@registered
@dataclass(frozen=True, slots=True)
class DocumentRejected(Outcome):
    """A submission was rejected with findings (nothing filed).
    Producer: DocumentPipeline.  Handler: for a document a mail carried (`mss`), its integration report."""

    kind: ClassVar[str] = "document.rejected"
