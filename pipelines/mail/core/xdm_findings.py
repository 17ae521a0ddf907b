"""The findings of an IHE XDM archive (pure): each rule's French and English message.

Owns: the `xdm.*` rules' texts and the finding builders; locations name the member or the entry id,
never document content (printable() escapes control characters).
Does not: decide when a rule applies (pipelines.mail.core.xdm, pipelines.mail.core.xdm_metadata).
"""

from __future__ import annotations

from collections.abc import Mapping

from hub.findings import Finding, Severity

#: rule -> (French, English).  Locations name the member or the entry id, never document content.
_MESSAGES: Mapping[str, tuple[str, str]] = {
    "xdm.corrupt": ("Archive IHE_XDM.ZIP illisible ou corrompue ; renvoyez une archive zip valide.",
                    "The IHE_XDM.ZIP archive is unreadable or corrupt; send a valid zip archive."),
    "xdm.unsupported": ("Méthode de compression non prise en charge ; utilisez deflate.",
                        "Unsupported compression method; use deflate."),
    "xdm.no-metadata": ("Aucun fichier IHE_XDM/<sous-dossier>/METADATA.XML dans l'archive.",
                        "No IHE_XDM/<subset>/METADATA.XML file in the archive."),
    "xdm.unsafe-path": ("Chemin interdit dans l'archive (.., chemin absolu, \\, lecteur, caractère de "
                        "contrôle) ; ce fichier n'est pas lu.",
                        "Forbidden path in the archive (.., absolute path, \\, drive letter, control "
                        "character); this file is not read."),
    "xdm.duplicate-member": ("Nom de fichier présent plusieurs fois dans l'archive (casse ignorée) ; "
                             "il n'est pas lu.", "File name present more than once in the archive (ignoring "
                             "case); it is not read."),
    "xdm.encrypted": ("Fichier chiffré dans l'archive ; il n'est pas lu.",
                      "Encrypted file in the archive; it is not read."),
    "xdm.bomb": ("Taux de compression anormal (bombe zip) ; le fichier est refusé.",
                 "Abnormal compression ratio (zip bomb); the file is refused."),
    "xdm.nested-zip": ("Archive zip imbriquée : elle n'est pas décompressée.",
                       "Nested zip archive: it is not expanded."),
    "xdm.metadata-unsafe": ("METADATA.XML contient un DOCTYPE ou des entités, interdits ; retirez-les.",
                            "METADATA.XML carries a DOCTYPE or entities, which are forbidden; remove them."),
    "xdm.metadata-malformed": ("METADATA.XML n'est pas du XML bien formé.", "METADATA.XML is not well-formed XML."),
    "xdm.metadata-invalid": ("METADATA.XML n'est pas une SubmitObjectsRequest ebRIM 3.0 exploitable, ou une "
                             "fiche document n'a pas de slot URI.",
                             "METADATA.XML is not a usable ebRIM 3.0 SubmitObjectsRequest, or a document entry "
                             "has no URI slot."),
    "xdm.metadata-incomplete": ("Fiche document sans uniqueId ou sans patientId.",
                                "Document entry without uniqueId or patientId."),
    "xdm.no-documents": ("METADATA.XML ne décrit aucun document (ExtrinsicObject).",
                         "METADATA.XML describes no document (ExtrinsicObject)."),
    "xdm.missing-document": ("Le slot URI d'une fiche document ne désigne aucun fichier de l'archive.",
                             "A document entry's URI slot names no file in the archive."),
    "xdm.hash-mismatch": ("Le document ne correspond pas aux slots hash (SHA-1) ou size de METADATA.XML ; "
                          "il est refusé.", "The document does not match the hash (SHA-1) or size slot of "
                          "METADATA.XML; it is refused."),
    "xdm.no-hash": ("Fiche document sans slot hash : intégrité non vérifiée.",
                    "Document entry without a hash slot: integrity not checked."),
}


def finding(rule: str, location: str, *, severity: Severity = Severity.ERROR) -> Finding:
    fr, en = _MESSAGES[rule]
    return Finding(rule=rule, location=location, message_fr=fr, message_en=en, severity=severity)


def too_large(location: str, limit: int) -> Finding:
    return Finding(rule="xdm.too-large", location=location,
                   message_fr=f"Contenu décompressé au-delà de {limit} octets ; il est refusé.",
                   message_en=f"Uncompressed content over {limit} bytes; it is refused.")


def too_many_members(location: str, limit: int) -> Finding:
    return Finding(rule="xdm.too-many-members", location=location,
                   message_fr=f"Plus de {limit} fichiers ou documents dans l'archive ; elle est refusée.",
                   message_en=f"More than {limit} files or documents in the archive; it is refused.")


def printable(name: str) -> str:
    """A member name fit for a finding location: control characters escaped, at most 200 characters."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in name)[:200]
