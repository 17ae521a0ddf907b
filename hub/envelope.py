"""What travels on the bus: a small, versioned envelope that points at stored bytes.

Owns: Envelope, Source and BlobRef, and their dict encoding (JSON-safe, no pickle).
Rule 1: the payload never travels on the bus; `raw` points at the bytes intake
stored first (claim check), so messages stay small and carry no health data.
Rule 2: decoding never raises anything but EnvelopeDecodeError.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from hub.errors import EnvelopeDecodeError

ENVELOPE_VERSION = 1


@dataclass(frozen=True, slots=True)
class BlobRef:
    """Where stored bytes live, and how to check them: object key, SHA-256 (hex) and size."""

    bucket: str
    key: str
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "key": self.key, "sha256": self.sha256, "size": self.size}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BlobRef:
        return cls(bucket=str(data["bucket"]), key=str(data["key"]), sha256=str(data["sha256"]),
                   size=int(data["size"]))


@dataclass(frozen=True, slots=True)
class Source:
    """Who sent an item and through which connector (`http`, `filedrop`, `smtp`...)."""

    kind: str
    producer: str
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "producer": self.producer, "name": self.name}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Source:
        return cls(kind=str(data["kind"]), producer=str(data["producer"]), name=str(data.get("name", "")))


@dataclass(frozen=True, slots=True)
class Envelope:
    """One accepted submission as the hub carries it between steps.

    `attempt` counts deliberate retries (TransientError in a stage); broker
    redeliveries after a crash are counted by the broker itself.
    """

    submission_id: str
    received_at: datetime
    source: Source
    raw: BlobRef
    content_type: str = "text/xml"
    attempt: int = 0
    version: int = ENVELOPE_VERSION
    #: masking codes the producer set beside the document (XDS confidentialityCode values: MASQUE_PS,
    #: INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX), which the CDA itself cannot carry
    confidentiality: tuple[str, ...] = ()

    def next_attempt(self) -> Envelope:
        return replace(self, attempt=self.attempt + 1)

    def to_dict(self) -> dict[str, Any]:
        return {"v": self.version, "id": self.submission_id, "at": self.received_at.isoformat(),
                "source": self.source.to_dict(), "raw": self.raw.to_dict(),
                "ct": self.content_type, "attempt": self.attempt,
                **({"conf": list(self.confidentiality)} if self.confidentiality else {})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Envelope:
        try:
            if int(data["v"]) != ENVELOPE_VERSION:
                raise ValueError(f"unsupported envelope version {data['v']!r}")
            return cls(submission_id=str(data["id"]), received_at=datetime.fromisoformat(data["at"]),
                       source=Source.from_dict(data["source"]), raw=BlobRef.from_dict(data["raw"]),
                       content_type=str(data.get("ct", "text/xml")), attempt=int(data.get("attempt", 0)),
                       confidentiality=tuple(str(c) for c in data.get("conf", ())))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EnvelopeDecodeError(f"unreadable envelope: {exc}") from exc
