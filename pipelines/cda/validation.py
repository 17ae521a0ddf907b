"""Validation of untrusted CDA bytes: hardened parsing, XSD, required header items, INS, typeCode.

Owns: ValidationRules (the loaded schema and value sets, built by config.tables), ValidationReport,
validate() and patient_findings().  Does not: read files (config.tables loads the rules), look a
patient up (the caller passes the registry status), log, or raise for a bad document.

Rule 1: the size cap is checked before any parsing.
Rule 2: the parser resolves no entity, loads no DTD and uses no network; any DOCTYPE is refused
        afterwards (xml.dtd-forbidden), which defeats XXE and entity-expansion bombs.
Rule 3: messages name the rule and the XPath, never patient values (XSD messages are redacted).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from hub.findings import Finding, Severity
from hub.ins import check_ins, looks_like_matricule
from pipelines.cda.header import NS, PATIENT_IDS, ROOT_TAG, CdaHeader, ins_candidates, read_header, readable_path

DEFAULT_INS_OIDS = frozenset(
    {"1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"}
)


@dataclass(frozen=True, slots=True)
class ValidationRules:
    """Everything validate() needs, loaded once at start (config.tables.load_validation_rules)."""

    schema: etree.XMLSchema
    type_codes: frozenset[str]
    max_bytes: int
    ins_oids: frozenset[str] = DEFAULT_INS_OIDS
    max_xsd_findings: int = 20
    # Thread safety: an lxml XMLSchema creates a fresh libxml2 validation context per call (the
    # compiled schema is read-only), but it keeps ONE error_log per object, cleared at the start
    # of each call and filled during it (lxml 6.1 xmlschema.pxi, _Validator). Two threads sharing
    # the object would clear or mix each other's errors. We hold this lock while validating and
    # while reading the log: I/O-free, and XSD is a few ms per document; per-thread schema copies
    # would need file reads in the core and ~90 ms per copy.
    xsd_lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ValidationReport:
    header: CdaHeader | None
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "header": None if self.header is None else self.header.to_dict(),
            "findings": [f.to_dict() for f in self.findings],
        }


def validate(data: bytes, rules: ValidationRules) -> ValidationReport:
    """Validate untrusted bytes as a DMP CDA document.  Never raises for a bad document."""
    if len(data) > rules.max_bytes:
        return ValidationReport(None, (_too_large(len(data), rules.max_bytes),))
    root, problem = _parse(data)
    if root is None:
        return ValidationReport(None, (problem,) if problem else ())
    if root.tag != ROOT_TAG:
        return ValidationReport(None, (_not_cda(),))
    header = read_header(root)
    findings = (
        *_xsd_findings(root, rules),
        *_header_findings(root),
        *_ins_findings(root, rules.ins_oids),
        *_type_code_findings(header, rules.type_codes),
    )
    return ValidationReport(header, findings)


# -- parsing -----------------------------------------------------------------------------------


def _safe_parser() -> etree.XMLParser:
    # Untrusted input: no entity substitution, no DTD loading or validation, no network, no huge
    # trees (libxml2 depth/size limits stay on). A fresh parser per call: parsers are not shared
    # between threads.
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
        huge_tree=False, remove_comments=True, remove_pis=False,
    )


#: prolog items skipped before looking for "<!DOCTYPE": (opening, closing).
_PROLOG_ITEMS = ((b"<?", b"?>"), (b"<!--", b"-->"))


def _declares_doctype(data: bytes) -> bool:
    """True when the prolog (UTF-8/ASCII) has a DOCTYPE.  Linear scan, no regex backtracking."""
    pos = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    while True:
        while pos < len(data) and data[pos] in b" \t\r\n":
            pos += 1
        item = next(((o, c) for o, c in _PROLOG_ITEMS if data.startswith(o, pos)), None)
        if item is None:
            return data.startswith(b"<!DOCTYPE", pos)
        end = data.find(item[1], pos + len(item[0]))
        if end < 0:
            return False
        pos = end + len(item[1])


def _parse(data: bytes) -> tuple[etree._Element | None, Finding | None]:
    # A DOCTYPE is refused before libxml2 sees it; the docinfo check below covers other encodings.
    if _declares_doctype(data):
        return None, _dtd_forbidden()
    try:
        root = etree.fromstring(data, parser=_safe_parser())
    except etree.XMLSyntaxError as exc:
        return None, _not_well_formed(exc)
    if root is None:
        return None, _finding("xml.well-formed", "/", "Document vide.", "Empty document.")
    if root.getroottree().docinfo.doctype:  # type: ignore[union-attr]  # stubs: DocInfo | Any
        return None, _dtd_forbidden()
    return root, None


def _not_well_formed(exc: etree.XMLSyntaxError) -> Finding:
    line, column = exc.position if exc.position else (0, 0)
    detail = str(exc.msg or "")[:200]
    return _finding(
        "xml.well-formed", "/",
        f"Le document n'est pas du XML bien formé (ligne {line}, colonne {column} : {detail}) ; "
        "corrigez la syntaxe XML à cet endroit.",
        f"The document is not well-formed XML (line {line}, column {column}: {detail}); "
        "fix the XML syntax there.",
    )


def _dtd_forbidden() -> Finding:
    return _finding(
        "xml.dtd-forbidden", "/",
        "Le document contient une déclaration DOCTYPE, interdite (risque XXE / bombe d'entités) ; "
        "retirez le DOCTYPE et toute entité.",
        "The document carries a DOCTYPE declaration, which is forbidden (XXE / entity bomb risk); "
        "remove the DOCTYPE and any entity.",
    )


def _too_large(size: int, limit: int) -> Finding:
    return _finding(
        "xml.too-large", "/",
        f"Le document fait {size} octets, au-delà de la limite de {limit} octets ; réduisez-le "
        "(par exemple le PDF embarqué) ou découpez l'envoi.",
        f"The document is {size} bytes, over the {limit}-byte limit; make it smaller "
        "(e.g. the embedded PDF) or split the submission.",
    )


def _not_cda() -> Finding:
    return _finding(
        "cda.root", "/",
        "L'élément racine n'est pas ClinicalDocument de l'espace de noms urn:hl7-org:v3 ; "
        "envoyez un document CDA R2.",
        "The root element is not ClinicalDocument in the urn:hl7-org:v3 namespace; send a CDA R2 document.",
    )


def _finding(rule: str, location: str, fr: str, en: str, code: str | None = None) -> Finding:
    return Finding(rule=rule, location=location, message_fr=fr, message_en=en, code=code)


# -- XSD -----------------------------------------------------------------------------------------

#: libxml2 quotes offending values after "value" or before "is not ...": redact those (may be patient data).
_QUOTED_VALUE = re.compile(r"(?<=value )'[^']*'|'[^'{]*'(?= is not)")


def _xsd_findings(root: etree._Element, rules: ValidationRules) -> tuple[Finding, ...]:
    with rules.xsd_lock:
        if rules.schema.validate(root):
            return ()
        log: Iterable[Any] = rules.schema.error_log  # type: ignore[assignment]  # stubs lack __iter__
        errors = [(e.path or "/", e.line, _QUOTED_VALUE.sub("'…'", e.message)) for e in log]
    errors = errors or [("/", 0, "schema validation failed.")]  # never let an invalid document pass
    limit = rules.max_xsd_findings
    shown = [_xsd_finding(root, path, line, message) for path, line, message in errors[:limit]]
    if len(errors) > limit:
        more = len(errors) - limit
        shown.append(_finding("cda.xsd", "/", f"… et {more} autres erreurs de schéma.",
                              f"… and {more} more schema errors."))
    return tuple(shown)


def _xsd_finding(root: etree._Element, path: str, line: int, message: str) -> Finding:
    return _finding(
        "cda.xsd", _readable(root, path),
        f"Non conforme au schéma CDA (ligne {line}) : {message} Corrigez cet élément.",
        f"Not valid against the CDA schema (line {line}): {message} Fix this element.",
    )


def _readable(root: etree._Element, path: str) -> str:
    """Turn libxml2's '/*/*[3]' path into '/ClinicalDocument/...' when it resolves to one element."""
    try:
        found = root.getroottree().xpath(path)
    except etree.XPathError:
        return path
    if isinstance(found, list) and len(found) == 1 and isinstance(found[0], etree._Element):
        return readable_path(found[0])
    return path


# -- header, INS, typeCode ---------------------------------------------------------------------

#: rule -> (XPath that must match, location, what is missing in French, in English).
REQUIRED_HEADER: Mapping[str, tuple[str, str, str, str]] = {
    "cda.header.id": ("h:id[@root]", "/ClinicalDocument/id", "l'identifiant du document (id@root)",
                      "the document id (id@root)"),
    "cda.header.code": ("h:code[@code]", "/ClinicalDocument/code", "le type de document (code@code)",
                        "the document type (code@code)"),
    "cda.header.effectiveTime": ("h:effectiveTime[@value]", "/ClinicalDocument/effectiveTime",
                                 "la date du document (effectiveTime@value)",
                                 "the document date (effectiveTime@value)"),
    "cda.header.confidentialityCode": ("h:confidentialityCode[@code]",
                                       "/ClinicalDocument/confidentialityCode",
                                       "le code de confidentialité (N, R ou V)",
                                       "the confidentiality code (N, R or V)"),
    "cda.header.recordTarget": ("h:recordTarget/h:patientRole", "/ClinicalDocument/recordTarget",
                                "le patient (recordTarget/patientRole)",
                                "the patient (recordTarget/patientRole)"),
    "cda.header.author": ("h:author/h:assignedAuthor/h:id[@root]", "/ClinicalDocument/author",
                          "l'auteur identifié (author/assignedAuthor/id)",
                          "an identified author (author/assignedAuthor/id)"),
    "cda.header.custodian": ("h:custodian/h:assignedCustodian/h:representedCustodianOrganization/h:id[@root]",
                             "/ClinicalDocument/custodian", "la structure conservant le document (custodian)",
                             "the organisation keeping the document (custodian)"),
}


def _header_findings(root: etree._Element) -> tuple[Finding, ...]:
    return tuple(
        _finding(rule, location, f"En-tête CDA incomplet : ajoutez {fr}.",
                 f"Incomplete CDA header: add {en}.")
        for rule, (xpath, location, fr, en) in REQUIRED_HEADER.items()
        if not root.xpath(xpath, namespaces=NS)
    )


def _ins_findings(root: etree._Element, accepted: frozenset[str]) -> tuple[Finding, ...]:
    candidates = ins_candidates(root)
    if not candidates:
        misfiled = _ins_under_foreign_oid(root)
        if misfiled is not None:  # an INS-shaped id under an OID outside the family: the OID is wrong
            return check_ins(misfiled.get("extension") or "", misfiled.get("root") or "",
                             location=readable_path(misfiled), accepted_oids=accepted)
        return (_finding(
            "ins.missing", "/ClinicalDocument/recordTarget/patientRole",
            "INS non présent dans le document : ajoutez recordTarget/patientRole/id avec le matricule INS "
            "et l'OID d'INS (1.2.250.1.213.1.4.8 ou .9).",
            "No INS in the document: add recordTarget/patientRole/id with the INS matricule and the INS OID "
            "(1.2.250.1.213.1.4.8 or .9).", code="903"),)
    first = candidates[0]
    return check_ins(first.matricule, first.oid, location=first.location, accepted_oids=accepted)


def _ins_under_foreign_oid(root: etree._Element) -> etree._Element | None:
    """The first recordTarget/patientRole/id whose @extension has an INS matricule's shape, whatever its @root
    (called when no id is in the INS OID family: such an id is an INS with a wrong OID, not a missing INS)."""
    for el in root.findall(PATIENT_IDS, NS):
        if looks_like_matricule((el.get("extension") or "").strip()):
            return el
    return None


def _type_code_findings(header: CdaHeader, type_codes: frozenset[str]) -> tuple[Finding, ...]:
    if not header.type_code or header.type_code in type_codes:
        return ()  # a missing code is reported as cda.header.code
    return (_finding(
        "typecode.unknown", "/ClinicalDocument/code",
        "Le type de document (code@code) n'appartient pas au jeu de valeurs JDV_J07-XdsTypeCode-CISIS ; "
        "utilisez un code de ce jeu de valeurs.",
        "The document type (code@code) is not in the JDV_J07-XdsTypeCode-CISIS value set; "
        "use a code from it.",
    ),)


# -- patient registry status -------------------------------------------------------------------

_PATIENT_LOCATION = "/ClinicalDocument/recordTarget/patientRole"
#: registry status -> (rule, code, French, English); statuses absent here need no finding.
_PATIENT_STATUS: Mapping[str | None, tuple[str, str | None, str, str]] = {
    None: ("patient.unknown", "902",
           "Identifiant patient inconnu : aucun DMP pour cet INS ; vérifiez l'INS ou créez le DMP.",
           "Unknown patient identifier: no DMP for this INS; check the INS or create the DMP."),
    "opposed": ("patient.opposed", None,
                "Le patient s'est opposé à l'alimentation de son DMP : le document ne peut pas y "
                "être déposé.",
                "The patient has opposed feeding their DMP: the document cannot be stored there."),
    "closed": ("patient.closed", "207",
               "DMP fermé : le document ne peut pas être déposé ; informez le patient ou son représentant.",
               "The DMP is closed: the document cannot be stored; inform the patient or their "
               "representative."),
}
_PATIENT_OK = frozenset({"created", "opened", "active"})


def patient_findings(header: CdaHeader, status: str | None) -> tuple[Finding, ...]:
    """Findings for the registry status of the document's patient (None = not in the registry).

    Raises ValueError for a status the registry does not define: that is a programming error.
    """
    if status in _PATIENT_OK:
        return ()
    if status not in _PATIENT_STATUS:
        raise ValueError(f"unknown patient status {status!r}")
    rule, code, fr, en = _PATIENT_STATUS[status]
    return (_finding(rule, _PATIENT_LOCATION, fr, en, code=code),)


def parse_untrusted(data: bytes) -> tuple[etree._Element | None, Finding | None]:
    """Parse untrusted XML with the hardened parser (no DOCTYPE, entities, DTD or network): (root, None)
    or (None, the finding that says why not).  For other readers of CDA bytes (prescriptions...)."""
    return _parse(data)
