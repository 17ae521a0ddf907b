"""Who may write a document into a record, as the doors see it (pure): the port every door calls first.

Owns: the WriteGate port (a synchronous pre-admission check of one document for one credential, before
anything is stored), the doors' names, which roles each door takes documents from (WRITERS), and the
`write.role` refusal.  ProducersOnly is the gate of a door nobody wired a header reader into: only
producers write (fail-closed).
Does not: read the document (the documents feature's write_gate reads its header, core.writes decides) or
store anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Protocol

from hub.access import Decision
from hub.credentials import Credential, Role

HTTP_DOOR = "http"  # POST /v1/documents
FILEDROP_DOOR = "filedrop"  # the producers' drop folder

#: door -> the credential roles it takes documents from (any other role: 403 write.role).  The insurer
#: feeds only /v1/insurer/batches and its own drop; the admin operates the hub and feeds nothing; a drop
#: folder belongs to one establishment's system (a producer).
WRITERS: Mapping[str, frozenset[Role]] = MappingProxyType({
    HTTP_DOOR: frozenset({Role.PRODUCER, Role.PROFESSIONAL, Role.PATIENT}),
    FILEDROP_DOOR: frozenset({Role.PRODUCER}),
})

WRITE_ROLE = Decision.refuse(
    "write.role",
    "This credential may not submit documents here: documents are fed by an establishment, lab or pharmacy "
    "system (producer), by a professional for the documents they author, or by a patient into their own "
    "record; the insurer uses /v1/insurer/batches. Nothing was stored.",
    "Cet accès ne permet pas de déposer de documents ici : les documents sont déposés par le système d'un "
    "établissement, d'un laboratoire ou d'une pharmacie (producteur), par un professionnel pour les documents "
    "dont il est l'auteur, ou par un patient dans son propre dossier ; l'Assurance Maladie utilise "
    "/v1/insurer/batches. Rien n'a été enregistré.")


class WriteGate(Protocol):
    """The check a door makes before accepting a document (pipelines.documents.write_gate.HeaderWriteGate)."""

    def admit(self, writer: Credential, raw: bytes, *, door: str) -> Decision | None:
        """None when `writer` may hand `raw` in through `door`; else the refusal (rule, fr/en), already
        traced in the target patient's audit trail when that patient is known.  Never raises for a bad
        document (a producer's unreadable document goes on to validation, which reports it); may raise a
        TransientError when the refusal cannot be traced."""
        ...


class ProducersOnly:
    """The gate of a door without a header reader: producers write, every other role is refused."""

    def admit(self, writer: Credential, raw: bytes, *, door: str) -> Decision | None:
        producer = writer.role is Role.PRODUCER and Role.PRODUCER in WRITERS.get(door, frozenset())
        return None if producer else WRITE_ROLE
