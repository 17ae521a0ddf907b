"""Restitution and purge of a patient's content: the ZIP export on request, and the end of the archive.

Owns: what a restitution export contains and how it is written (a ZIP streamed to the caller's file,
one stored object in memory at a time, each read back SHA-256-checked by the BlobStore), and the order
of a purge: rows first (one durable transaction that also queues the objects to erase), then the
objects, then the audit redaction hook.
Rule 1 (export): the patient gets everything that is theirs (every version, deprecated ones included,
and documents masked from professionals) except what the visibility filter keeps from them: by default
the documents still flagged INVISIBLE_PATIENT, which their author hides until they lift the flag.  The
export does not say how many were left out (that would reveal them); ExportSummary does, for the caller.
Rule 2 (purge): a crash after the rows are gone leaves only orphan objects, listed durably by the
PurgeStore: sweep_erasures() erases them later; running purge() again is harmless.
Does not: decide who may ask for an export or when a purge is due (the lifecycle and the access rules
do), or talk to a database or S3 itself (hub.ports, pipelines.record.core.restitution ports).  Logs carry counts only.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from hashlib import sha256
from typing import IO, Any

from hub.envelope import BlobRef
from hub.errors import NotFound, TransientError
from hub.mailqueue import PATIENT_DOMAIN
from hub.notices import Notice
from hub.ports import BlobStore, Index, Mailboxes
from hub.records import DocumentQuery, DocumentRecord, MessageRecord, PatientRecord
from pipelines.notify.ports import NotificationStore
from pipelines.record.core.restitution import (
    EXPORT_FORMAT,
    PARIS,
    BlobEraser,
    ExportFile,
    ExportSummary,
    PurgeReport,
    PurgeStore,
    patient_visible,
    safe_name,
)

log = logging.getLogger(__name__)
PAGE = 200  # rows per index or mailbox page


# --- export ---------------------------------------------------------------------------------------

@dataclass(slots=True)
class _Zip:
    """A ZIP being written: deflated entries with a fixed timestamp, each one's SHA-256 remembered."""

    archive: zipfile.ZipFile
    stamp: tuple[int, int, int, int, int, int]
    files: list[ExportFile] = field(default_factory=list)

    def add(self, name: str, data: bytes) -> None:
        info = zipfile.ZipInfo(name, date_time=self.stamp)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        self.archive.writestr(info, data)
        self.files.append(ExportFile(name, sha256(data).hexdigest(), len(data)))

    def add_json(self, name: str, value: Any) -> None:
        self.add(name, (json.dumps(value, ensure_ascii=False, indent=2, default=str) + "\n").encode("utf-8"))


def export_record(ins: str, *, index: Index, store: BlobStore, mailboxes: Mailboxes, notices: NotificationStore,
                  out: IO[bytes], audit_entries: Callable[[str], list[dict[str, Any]]] | None = None,
                  visible: Callable[[DocumentRecord], bool] = patient_visible, now: datetime | None = None,
                  patient_domain: str = PATIENT_DOMAIN) -> ExportSummary:
    """Write the patient's restitution ZIP to `out` (which may be unseekable: a socket, a pipe).

    Contents: README.txt, patient.json, documents/<safe name>.xml (exact stored bytes) + documents.json,
    messages/<safe name>.eml + messages.json, notifications.json, audit.json (when `audit_entries` is
    given) and manifest.json (every other file with its SHA-256 and size).  NotFound when the INS is not
    in the registry; StoreUnavailable/IndexUnavailable when a store is down (the ZIP is then incomplete:
    the caller discards it); IntegrityError when a stored object no longer matches its SHA-256."""
    patient = index.patient(ins)
    if patient is None:
        raise NotFound("no such patient in the registry")
    at = (now or datetime.now(UTC)).astimezone(UTC)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        z = _Zip(archive, _zip_stamp(at))
        z.add_json("patient.json", {"patient": patient.to_dict(),
                                    "legal_representatives": notices.representatives(ins)})
        kept, excluded = _split(_all_documents(index, ins), visible)
        _write_documents(z, store, kept, hidden={d.document_id for d in excluded})
        count = _write_messages(z, store, _all_messages(mailboxes, f"{ins}@{patient_domain}".lower()))
        sent = _write_notifications(z, notices, ins)
        audited = _write_audit(z, audit_entries, ins)
        summary = ExportSummary(exported_at=at, documents=len(kept), excluded_documents=len(excluded),
                                messages=count, notifications=sent, audit_entries=audited)
        z.add("README.txt", readme(patient, summary).encode("utf-8"))
        z.add_json("manifest.json", {"format": EXPORT_FORMAT, "exported_at": at.isoformat(),
                                     "files": [f.to_dict() for f in z.files]})
    summary = replace(summary, files=tuple(z.files[:-1]))
    log.info("restitution export: %d documents (%d left out), %d messages, %d notices, %d files",
             summary.documents, summary.excluded_documents, summary.messages, summary.notifications, len(z.files))
    return summary


def _zip_stamp(at: datetime) -> tuple[int, int, int, int, int, int]:
    """ZIP entries carry local time (Europe/Paris, the patient's), never before 1980 (the format's epoch)."""
    local = at.astimezone(PARIS)
    return (max(local.year, 1980), local.month, local.day, local.hour, local.minute, local.second)


def _all_documents(index: Index, ins: str) -> list[DocumentRecord]:
    """Every document of the patient, deprecated versions included, read page by page (each id once)."""
    seen: dict[str, DocumentRecord] = {}
    offset = 0
    while True:
        page = index.documents(ins, DocumentQuery(include_deprecated=True, limit=PAGE, offset=offset))
        for doc in page:
            seen.setdefault(doc.document_id, doc)
        if len(page) < PAGE:
            return list(seen.values())
        offset += PAGE


def _split(docs: Sequence[DocumentRecord], visible: Callable[[DocumentRecord], bool],
           ) -> tuple[list[DocumentRecord], list[DocumentRecord]]:
    kept = [d for d in docs if visible(d)]
    return kept, [d for d in docs if not visible(d)]


def _write_documents(z: _Zip, store: BlobStore, docs: Sequence[DocumentRecord], *, hidden: set[str]) -> None:
    """Each document's exact bytes, then their metadata; links to left-out documents are not shown."""
    entries = []
    for doc in docs:
        name = f"documents/{safe_name(doc.document_id, '.xml')}"
        z.add(name, store.get(doc.blob))
        entries.append(_document_entry(doc, name, hidden))
    z.add_json("documents.json", {"documents": entries})


def _document_entry(doc: DocumentRecord, name: str, hidden: set[str]) -> dict[str, Any]:
    entry = {"file": name, **doc.to_dict()}
    entry["replaces"] = [parent for parent in doc.replaces if parent not in hidden]
    if doc.replaced_by in hidden:
        entry["replaced_by"] = None
    return entry


def _all_messages(mailboxes: Mailboxes, mailbox: str) -> Iterator[MessageRecord]:
    """The mailbox, newest first, page by page (each message once)."""
    seen: set[str] = set()
    offset = 0
    while True:
        page = mailboxes.messages(mailbox, limit=PAGE, offset=offset)
        for message in page:
            if message.message_id not in seen:
                seen.add(message.message_id)
                yield message
        if len(page) < PAGE:
            return
        offset += PAGE


def _write_messages(z: _Zip, store: BlobStore, messages: Iterator[MessageRecord]) -> int:
    """Each message as received (.eml), then their metadata; how many."""
    entries = []
    for message in messages:
        name = f"messages/{safe_name(message.message_id, '.eml')}"
        z.add(name, message.message_in(store.get(message.blob)))
        entries.append({"file": name, **message.to_dict()})
    z.add_json("messages.json", {"messages": entries})
    return len(entries)


def _all_notices(notices: NotificationStore, ins: str) -> list[Notice]:
    """Every notice addressed to the patient, oldest first (the store's cursor: seq)."""
    found: list[Notice] = []
    cursor = 0
    while True:
        page = notices.for_patient(ins, after_seq=cursor, limit=PAGE)
        found += page
        if len(page) < PAGE:
            return found
        cursor = page[-1].seq


def _write_notifications(z: _Zip, notices: NotificationStore, ins: str) -> int:
    """Preferences, push devices and every notice sent (codes are not restituted: they were one-time)."""
    sent = _all_notices(notices, ins)
    z.add_json("notifications.json", {"preferences": notices.preferences(ins).to_dict(),
                                      "devices": notices.devices(ins), "notices": [n.to_dict() for n in sent]})
    return len(sent)


def _write_audit(z: _Zip, audit_entries: Callable[[str], list[dict[str, Any]]] | None, ins: str) -> int | None:
    if audit_entries is None:
        return None
    entries = audit_entries(ins)
    z.add_json("audit.json", {"entries": entries})
    return len(entries)


def readme(patient: PatientRecord, summary: ExportSummary) -> str:
    """README.txt: what the export holds and how to check it, in French."""
    day = summary.exported_at.astimezone(PARIS).strftime("%d/%m/%Y à %H:%M")
    name = " ".join(part for part in (patient.given_names, patient.birth_name) if part) or "vous"
    audit = (f"- audit.json : les {summary.audit_entries} accès et actions enregistrés sur votre profil "
             "(qui, quand, quoi).\n" if summary.audit_entries is not None else "")
    return (
        "Mon espace santé - restitution de votre profil\n"
        "==============================================\n\n"
        f"Export réalisé le {day} (heure de Paris) pour {name}.\n\n"
        "Contenu :\n"
        "- patient.json : votre identité telle que l'enregistre le registre (INS, traits d'identité, contacts,\n"
        "  état du profil) et vos représentants légaux.\n"
        f"- documents/ : vos {summary.documents} document(s) de santé, chacun exactement tel qu'il a été déposé\n"
        "  (format CDA, fichier XML), y compris les anciennes versions remplacées par une nouvelle.\n"
        "- documents.json : pour chaque document, son identifiant, son fichier, son type, sa date, son auteur,\n"
        "  sa confidentialité (masquages), son statut (current, ou deprecated pour une version remplacée)\n"
        "  et son empreinte SHA-256.\n"
        f"- messages/ : les {summary.messages} message(s) de votre messagerie de santé, tels que reçus ou envoyés\n"
        "  (fichiers .eml, lisibles par tout logiciel de messagerie), et messages.json qui les décrit.\n"
        f"- notifications.json : vos préférences, vos appareils et les {summary.notifications} notification(s)\n"
        "  qui vous ont été adressées (les codes à usage unique n'y figurent pas).\n"
        f"{audit}"
        "- manifest.json : la liste de tous les fichiers avec leur empreinte SHA-256 et leur taille ; il est\n"
        "  écrit en dernier : un export qui ne le contient pas est incomplet.\n\n"
        "Documents non inclus : un document que son auteur a rendu temporairement invisible pour vous\n"
        "(INVISIBLE_PATIENT, par exemple en attendant de vous l'annoncer lors d'une consultation) ne figure pas\n"
        "dans cet export ; il y figurera dès que son auteur aura levé ce masquage.\n\n"
        "Vérifier l'intégrité : l'empreinte SHA-256 de chaque fichier (par exemple avec la commande\n"
        "« sha256sum ») doit être celle que donne manifest.json.\n\n"
        "Ces données sont les vôtres et sont confidentielles : conservez cet export en lieu sûr.\n")


# --- purge ----------------------------------------------------------------------------------------

def purge(ins: str, *, purge_store: PurgeStore, eraser: BlobEraser,
          redact: Callable[[str], int] | None = None) -> PurgeReport:
    """The end of the archive: delete the patient's rows (durable, one transaction), then erase the
    objects it queued, then redact the audit trail through `redact` (it returns how many entries).

    Objects the store could not erase now (it is down) stay queued: `failed` lists them and
    sweep_erasures() retries them.  Running purge() again is harmless (no rows left: nothing more)."""
    report = purge_store.purge(ins)
    erased, failed = erase(report.blobs, purge_store=purge_store, eraser=eraser)
    redacted = redact(ins) if redact is not None else None
    report = replace(report, erased=erased, failed=failed, audit_redacted=redacted)
    log.info("purge: %s", report.to_dict())
    return report


def sweep_erasures(*, purge_store: PurgeStore, eraser: BlobEraser, limit: int = 500) -> PurgeReport:
    """Erase objects a purge queued but could not erase (the store was down, or the process died)."""
    refs = tuple(purge_store.pending_erasures(limit=limit))
    erased, failed = erase(refs, purge_store=purge_store, eraser=eraser)
    if refs:
        log.info("erasure sweep: %d erased, %d left for later", erased, len(failed))
    return PurgeReport(blobs=refs, erased=erased, failed=failed)


def erase(refs: Sequence[BlobRef], *, purge_store: PurgeStore,
          eraser: BlobEraser) -> tuple[int, tuple[BlobRef, ...]]:
    """Delete each object, then forget the erased ones in the queue.  The first TransientError stops the
    run (the store is down: the rest would time out too); those left stay queued.  (erased, not erased)"""
    done: list[BlobRef] = []
    for ref in refs:
        try:
            eraser.delete(ref)
        except TransientError:
            break
        done.append(ref)
    if done:
        purge_store.erased(done)
    return len(done), tuple(refs[len(done):])
