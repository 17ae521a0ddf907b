"""Who may write which document into which record (pure): the decision table of every door.

Owns: WriteFacts (what the rules read of a CDA header: the target patient, the recorded author, the
typeCode), reading them from untrusted bytes with the hardened parser (read_facts), and may_write with
its rules' names and messages (fr/en).  Does not: store, trace or log anything (pipelines.documents.write_gate
does), or validate the document (the pipeline does, after admission).

The table (first failing check wins; `door` roles from hub.writes.WRITERS):

  writer        | may write                                                   | else
  --------------+-------------------------------------------------------------+--------------------
  any role the door does not take (insurer, admin; all but producer at a drop)| write.role
  producer      | any record (its unreadable document goes on to validation)  | -
  professional  | a document whose recorded author is them: the first          | write.author
                | author/assignedAuthor/id is root 1.2.250.1.71.4.2.1,         |
                | extension = their IDNPS                                      |
  patient       | 1. their own record: recordTarget's (first) INS == theirs    | write.own-record
                | 2. a patient-authored type: typeCode DOCPAT01.. (JDV_J07)    | write.patient-type
                | 3. they are the author: that author id is an INS-family OID  | write.author
                |    with their INS as extension                                |

The patient and author checked are those the hub records (the first INS of recordTarget, the first
author's first id), so what is admitted is what gets indexed and traced.  A header that cannot be read
(not well-formed, DOCTYPE, not a ClinicalDocument) establishes no target and no author: a patient is
refused write.own-record, a professional write.author, each message naming the parse rule (a producer
gets the validation findings as usual).  Messages never carry health data (no INS, name, title, type).
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from hub.access import PS_AUTHOR_ROOT, Decision
from hub.credentials import Credential, Role
from hub.writes import WRITE_ROLE, WRITERS
from pipelines.cda.header import INS_OID_FAMILY, ROOT_TAG, read_header
from pipelines.cda.validation import parse_untrusted

#: the typeCodes a patient may write: the DOCPAT family of JDV_J07-XdsTypeCode-CISIS (documents the
#: patient adds to their own record: DOCPAT01 synthèse ... DOCPAT09 document administratif)
PATIENT_TYPE_PREFIX = "DOCPAT"
ADMITTED = Decision.allow("write.allowed")


@dataclass(frozen=True, slots=True)
class WriteFacts:
    """A CDA header as the write rules see it; "" / None for what it does not carry."""

    target_ins: str | None  # recordTarget/patientRole/id (first in the INS OID family): its extension
    author_id: str | None  # the first author/assignedAuthor/id as "root^extension"
    type_code: str  # code/@code


def read_facts(raw: bytes) -> tuple[WriteFacts | None, str]:
    """The facts of untrusted CDA bytes (hardened parser: no DTD, entity or network), or (None, the rule
    saying why the header cannot be read: xml.well-formed, xml.dtd-forbidden, cda.root)."""
    root, problem = parse_untrusted(raw)
    if root is None:
        return None, problem.rule if problem is not None else "xml.well-formed"
    if root.tag != ROOT_TAG:
        return None, "cda.root"
    return facts_of(root), ""


def facts_of(root: etree._Element) -> WriteFacts:
    """The facts of a parsed ClinicalDocument."""
    header = read_header(root)
    return WriteFacts(target_ins=header.patient_ins, author_id=header.author_id, type_code=header.type_code)


def may_write(writer: Credential, facts: WriteFacts | None, *, door: str, unreadable: str = "") -> Decision:
    """The table above.  `facts` None: the header could not be read (`unreadable`: the parse rule)."""
    if writer.role not in WRITERS.get(door, frozenset()):
        return WRITE_ROLE
    if writer.role is Role.PRODUCER:
        return ADMITTED
    if writer.role is Role.PROFESSIONAL:
        if facts is None:
            return _unreadable("write.author", unreadable)
        return ADMITTED if _is_professional_author(facts.author_id, writer.idnps) else refusal("write.author")
    if writer.role is Role.PATIENT:
        return _patient(writer.ins, facts, unreadable)
    return WRITE_ROLE


def _patient(ins: str, facts: WriteFacts | None, unreadable: str) -> Decision:
    if facts is None:
        return _unreadable("write.own-record", unreadable)
    if not ins or facts.target_ins != ins:
        return refusal("write.own-record")
    if not facts.type_code.startswith(PATIENT_TYPE_PREFIX):
        return refusal("write.patient-type")
    if not _is_patient_author(facts.author_id, ins):
        return refusal("write.patient-author")
    return ADMITTED


def _is_professional_author(author_id: str | None, idnps: str) -> bool:
    return bool(idnps) and author_id == f"{PS_AUTHOR_ROOT}^{idnps}"


def _is_patient_author(author_id: str | None, ins: str) -> bool:
    root, _, extension = (author_id or "").partition("^")
    return root.startswith(INS_OID_FAMILY) and extension == ins


#: rule -> (English, French); write.patient-author is answered (and traced) as write.author, with its
#: own message
RULES: dict[str, tuple[str, str]] = {
    "write.own-record": (
        "A patient may file a document only into their own record: the document's patient "
        "(recordTarget/patientRole/id, INS) must be you. Nothing was stored.",
        "Un patient ne peut déposer un document que dans son propre dossier : le patient du document "
        "(recordTarget/patientRole/id, INS) doit être vous. Rien n'a été enregistré."),
    "write.patient-type": (
        "A patient may file only a patient-authored document: its type (code@code) must be one of the DOCPAT "
        "codes of JDV_J07-XdsTypeCode-CISIS. Nothing was stored.",
        "Un patient ne peut déposer qu'un document rédigé par lui-même : son type (code@code) doit être l'un "
        "des codes DOCPAT du jeu de valeurs JDV_J07-XdsTypeCode-CISIS. Rien n'a été enregistré."),
    "write.author": (
        "A professional may submit only a document they author: its author (author/assignedAuthor/id) must "
        "carry your IDNPS (root 1.2.250.1.71.4.2.1). Nothing was stored.",
        "Un professionnel ne peut déposer que les documents dont il est l'auteur : l'auteur "
        "(author/assignedAuthor/id) doit porter votre IDNPS (root 1.2.250.1.71.4.2.1). Rien n'a été "
        "enregistré."),
    "write.patient-author": (
        "A patient-authored document must name you as its author: author/assignedAuthor/id must carry your "
        "INS (an INS OID as root). Nothing was stored.",
        "Un document rédigé par le patient doit vous désigner comme auteur : author/assignedAuthor/id doit "
        "porter votre INS (un OID d'INS en root). Rien n'a été enregistré."),
}
#: the rule code a refusal is answered and traced with (the patient's author check is write.author)
CODE_OF = {"write.patient-author": "write.author"}


def refusal(rule: str) -> Decision:
    """The refusal of one of RULES, under its public code."""
    en, fr = RULES[rule]
    return Decision.refuse(CODE_OF.get(rule, rule), en, fr)


def _unreadable(rule: str, parse_rule: str) -> Decision:
    """The hub cannot read the header, so it cannot check the document is the caller's to write."""
    why = parse_rule or "xml.well-formed"
    return Decision.refuse(
        rule,
        f"The document's CDA header cannot be read ({why}: not well-formed XML, a DOCTYPE, or not an HL7 "
        "ClinicalDocument), so the hub cannot check that you may write it. Fix the document; nothing was "
        "stored.",
        f"L'en-tête CDA du document est illisible ({why} : XML mal formé, DOCTYPE, ou pas un ClinicalDocument "
        "HL7) ; le hub ne peut donc pas vérifier que vous pouvez le déposer. Corrigez le document ; rien n'a "
        "été enregistré.")
