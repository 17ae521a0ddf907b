"""A queued mail: the SMTP envelope and the message, stored as one object (pure).

Owns: SmtpEnvelope and SmtpRecipient (what the sender said at MAIL and RCPT, DSN
parameters included, RFC 3461), Reply (an SMTP answer with its enhanced status
code), and the framing of a queue file: `pack(envelope, message)` / `unpack(data)`.
The gateway stores the packed bytes (claim check), so the bus carries no address
and the worker reads the exact RCPT list and DSN requests back from storage.
SpooledMail is one record of the SMTP gateway's spool (storage.spool): the packed mail
with the submission id and reception time the sender was told in its 250, so that a
spool replayed after a crash accepts the same submission again, never a new one.
Does not: parse the message (pipelines.mail.core.mime) or decide anything about it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hub.errors import EnvelopeDecodeError

MAIL_CONTENT_TYPE = "application/vnd.meshub.queued-mail"
_MAGIC = b"MESHUB-QUEUED-MAIL/1 "
_MAX_HEADER = 1024 * 1024

#: the MSSanté domain of patients' addresses (`<INS>@patient.mssante.fr`)
PATIENT_DOMAIN = "patient.mssante.fr"


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply: `550 5.1.1 text`.  `code` 2xx/4xx/5xx, `status` the RFC 3463 enhanced code."""

    code: int
    status: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}"

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500


@dataclass(frozen=True, slots=True)
class SmtpRecipient:
    """One RCPT TO: the address as given (case kept), and its RFC 3461 NOTIFY and ORCPT values."""

    address: str
    notify: tuple[str, ...] = ()  # () = not given (default: FAILURE), else NEVER or any of SUCCESS, FAILURE, DELAY
    orcpt: str = ""  # "rfc822;addr" as given, xtext-decoded

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "notify": list(self.notify), "orcpt": self.orcpt}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SmtpRecipient:
        return cls(address=str(data["address"]), notify=tuple(str(v) for v in data.get("notify", ())),
                   orcpt=str(data.get("orcpt", "")))

    def wants(self, event: str) -> bool:
        """Whether a DSN is due for `event` (SUCCESS, FAILURE, DELAY); RFC 3461 default is FAILURE (+DELAY)."""
        if not self.notify:
            return event in ("FAILURE", "DELAY")
        return event in self.notify


@dataclass(frozen=True, slots=True)
class SmtpEnvelope:
    """What the SMTP session said about one message.

    `auth` is the authenticated principal (credential name), "" for an unauthenticated MX delivery.
    `ret` is FULL or HDRS or "" (RFC 3461 RET), `envid` the sender's ENVID, xtext-decoded.
    """

    mail_from: str
    recipients: tuple[SmtpRecipient, ...]
    auth: str = ""
    peer: str = ""
    helo: str = ""
    ret: str = ""
    envid: str = ""
    received_at: str = ""  # ISO 8601, UTC
    extra: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"mail_from": self.mail_from, "recipients": [r.to_dict() for r in self.recipients],
                "auth": self.auth, "peer": self.peer, "helo": self.helo, "ret": self.ret, "envid": self.envid,
                "received_at": self.received_at, "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SmtpEnvelope:
        return cls(mail_from=str(data["mail_from"]),
                   recipients=tuple(SmtpRecipient.from_dict(r) for r in data["recipients"]),
                   auth=str(data.get("auth", "")), peer=str(data.get("peer", "")), helo=str(data.get("helo", "")),
                   ret=str(data.get("ret", "")), envid=str(data.get("envid", "")),
                   received_at=str(data.get("received_at", "")),
                   extra={str(k): str(v) for k, v in dict(data.get("extra", {})).items()})


def pack(envelope: SmtpEnvelope, message: bytes) -> bytes:
    """One object: magic, header length, JSON envelope, newline, then the message bytes unchanged."""
    header = json.dumps(envelope.to_dict(), separators=(",", ":"), ensure_ascii=True).encode()
    return _MAGIC + str(len(header)).encode() + b"\n" + header + b"\n" + message


def unpack(data: bytes) -> tuple[SmtpEnvelope, bytes]:
    """Inverse of pack(); EnvelopeDecodeError if `data` is not a queued mail."""
    if not data.startswith(_MAGIC):
        raise EnvelopeDecodeError("not a queued mail (bad magic)")
    line_end = data.find(b"\n", len(_MAGIC))
    try:
        length = int(data[len(_MAGIC):line_end])
        if not 0 < length <= _MAX_HEADER or line_end < 0:
            raise ValueError(f"header length {length}")
        start = line_end + 1
        header = data[start:start + length]
        if data[start + length:start + length + 1] != b"\n":
            raise ValueError("header not terminated")
        envelope = SmtpEnvelope.from_dict(json.loads(header))
    except (ValueError, KeyError, TypeError) as exc:
        raise EnvelopeDecodeError(f"unreadable queued mail: {exc}") from exc
    return envelope, data[start + length + 1:]


@dataclass(frozen=True, slots=True)
class SpooledMail:
    """A queued mail as the gateway spools it before its 250: who took it in, when, and under which id."""

    submission_id: str
    received_at: datetime
    producer: str
    packed: bytes  # pack(envelope, message)

    def encode(self) -> bytes:
        """One JSON header line, then the packed mail unchanged."""
        header = {"id": self.submission_id, "at": self.received_at.isoformat(), "producer": self.producer}
        return json.dumps(header, separators=(",", ":")).encode() + b"\n" + self.packed

    @classmethod
    def decode(cls, data: bytes) -> SpooledMail:
        """Inverse of encode(); EnvelopeDecodeError if `data` is not a spooled mail."""
        line_end = data.find(b"\n", 0, _MAX_HEADER)
        try:
            if line_end < 0:
                raise ValueError("no header line")
            header = json.loads(data[:line_end])
            return cls(submission_id=str(header["id"]), received_at=datetime.fromisoformat(header["at"]),
                       producer=str(header["producer"]), packed=data[line_end + 1:])
        except (ValueError, KeyError, TypeError) as exc:
            raise EnvelopeDecodeError(f"unreadable spooled mail: {exc}") from exc
