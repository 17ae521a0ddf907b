"""The write rules as a table (pipelines.documents.core.writes): every role at every door, on documents built from
minimal_cda.xml, and headers the hub cannot read."""

from __future__ import annotations

import pytest

from hub.audit import AuditAction
from hub.credentials import Credential
from hub.records import PatientRecord
from hub.writes import FILEDROP_DOOR, HTTP_DOOR, WRITERS, ProducersOnly
from pipelines.documents.core.writes import may_write, read_facts
from pipelines.documents.write_gate import HeaderWriteGate
from storage.memory.audit import MemoryAuditTrail
from storage.memory.index import MemoryIndex
from tests import builders
from tests.cda_builders import MINIMAL_AUTHOR, cda, docpat

ME = builders.TEST_INS
OTHER = builders.with_key("1850175123456")
LAB = Credential("lab", "producer", "x")
DOCTOR = Credential("dr", "professional", "x", idnps=MINIMAL_AUTHOR, profession="G15_10")
COLLEAGUE = Credential("dr-b", "professional", "x", idnps="810000000027", profession="G15_10")
NO_IDNPS = Credential("dr-c", "professional", "x", profession="G15_10")
PATIENT = Credential("me", "patient", "x", ins=ME)
NO_INS = Credential("who", "patient", "x")
INSURER = Credential("cnam", "insurer", "x")
ADMIN = Credential("op", "admin", "x")

PRO_DOC = cda(extension="pro")  # authored by MINIMAL_AUTHOR, for ME, lettre de liaison
OWN_DOCPAT = docpat(extension="own")
FOR_OTHER = docpat(extension="other", ins=OTHER)  # a DOCPAT for another patient, authored by them
MINE_AUTHORED_BY_OTHER = docpat(extension="ghost", author=OTHER)
OWN_NOT_DOCPAT = cda(extension="own-type", author_root=builders.TEST_OID, author=ME)
DOCPAT_BY_A_DOCTOR = cda(extension="docpat-ps", type_code="DOCPAT03")
DOCPAT_AUTHOR_NOT_INS_OID = cda(extension="docpat-oid", type_code="DOCPAT01", author_root="1.2.3.4", author=ME)
BROKEN = b"<ClinicalDocument"
DOCTYPE = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "x">]><ClinicalDocument xmlns="urn:hl7-org:v3"/>'
NOT_CDA = b"<note/>"

#: writer, document, door -> the rule (None: admitted)
TABLE = [
    (LAB, PRO_DOC, HTTP_DOOR, None),
    (LAB, FOR_OTHER, HTTP_DOOR, None),
    (LAB, BROKEN, HTTP_DOOR, None),  # validation reports it
    (LAB, PRO_DOC, FILEDROP_DOOR, None),
    (DOCTOR, PRO_DOC, HTTP_DOOR, None),
    (DOCTOR, DOCPAT_BY_A_DOCTOR, HTTP_DOOR, None),  # authorship decides; the type is validation's business
    (COLLEAGUE, PRO_DOC, HTTP_DOOR, "write.author"),
    (NO_IDNPS, PRO_DOC, HTTP_DOOR, "write.author"),
    (DOCTOR, OWN_DOCPAT, HTTP_DOOR, "write.author"),
    (DOCTOR, BROKEN, HTTP_DOOR, "write.author"),
    (DOCTOR, PRO_DOC, FILEDROP_DOOR, "write.role"),
    (PATIENT, OWN_DOCPAT, HTTP_DOOR, None),
    (PATIENT, docpat(extension="own-9", type_code="DOCPAT09"), HTTP_DOOR, None),
    (PATIENT, FOR_OTHER, HTTP_DOOR, "write.own-record"),
    (PATIENT, PRO_DOC, HTTP_DOOR, "write.patient-type"),  # own record, a professional's type
    (PATIENT, OWN_NOT_DOCPAT, HTTP_DOOR, "write.patient-type"),
    (PATIENT, MINE_AUTHORED_BY_OTHER, HTTP_DOOR, "write.author"),
    (PATIENT, DOCPAT_BY_A_DOCTOR, HTTP_DOOR, "write.author"),
    (PATIENT, DOCPAT_AUTHOR_NOT_INS_OID, HTTP_DOOR, "write.author"),
    (PATIENT, BROKEN, HTTP_DOOR, "write.own-record"),
    (PATIENT, DOCTYPE, HTTP_DOOR, "write.own-record"),
    (PATIENT, NOT_CDA, HTTP_DOOR, "write.own-record"),
    (PATIENT, OWN_DOCPAT, FILEDROP_DOOR, "write.role"),
    (NO_INS, docpat(extension="no-ins", ins=""), HTTP_DOOR, "write.own-record"),
    (INSURER, PRO_DOC, HTTP_DOOR, "write.role"),
    (INSURER, OWN_DOCPAT, HTTP_DOOR, "write.role"),
    (ADMIN, PRO_DOC, HTTP_DOOR, "write.role"),
    (ADMIN, BROKEN, HTTP_DOOR, "write.role"),
    (ADMIN, PRO_DOC, FILEDROP_DOOR, "write.role"),
    (LAB, PRO_DOC, "smoke-signals", "write.role"),  # a door nobody declared takes nothing
]


@pytest.mark.parametrize(("writer", "raw", "door", "rule"), TABLE)
def test_the_write_table(writer: Credential, raw: bytes, door: str, rule: str | None) -> None:
    facts, unreadable = read_facts(raw)
    decision = may_write(writer, facts, door=door, unreadable=unreadable)
    assert (None if decision.allowed else decision.rule) == rule
    if rule is not None:
        assert decision.message_en and decision.message_fr
        assert ME not in decision.message_en + decision.message_fr  # no health data in messages
        assert OTHER not in decision.message_en + decision.message_fr


def test_the_header_facts_are_those_the_hub_records() -> None:
    facts, unreadable = read_facts(OWN_DOCPAT)
    assert unreadable == "" and facts is not None
    assert (facts.target_ins, facts.author_id, facts.type_code) == (ME, f"{builders.TEST_OID}^{ME}", "DOCPAT01")


@pytest.mark.parametrize(("raw", "rule"), [(BROKEN, "xml.well-formed"), (DOCTYPE, "xml.dtd-forbidden"),
                                           (NOT_CDA, "cda.root")])
def test_an_unreadable_header_says_why_and_establishes_nothing(raw: bytes, rule: str) -> None:
    facts, unreadable = read_facts(raw)
    assert facts is None and unreadable == rule
    assert rule in may_write(PATIENT, facts, door=HTTP_DOOR, unreadable=unreadable).message_en


def test_only_the_insurer_routes_and_producers_doors_are_declared() -> None:
    assert WRITERS[HTTP_DOOR] == {"producer", "professional", "patient"}
    assert WRITERS[FILEDROP_DOOR] == {"producer"}


@pytest.mark.parametrize("writer", [DOCTOR, PATIENT, INSURER, ADMIN])
def test_the_fallback_gate_takes_producers_only(writer: Credential) -> None:
    gate = ProducersOnly()
    assert gate.admit(LAB, PRO_DOC, door=HTTP_DOOR) is None
    refusal = gate.admit(writer, OWN_DOCPAT, door=HTTP_DOOR)
    assert refusal is not None and refusal.rule == "write.role"


def test_the_gate_traces_a_refusal_only_in_a_known_patients_trail(memory_index: MemoryIndex) -> None:
    index = memory_index
    index.upsert_patients([PatientRecord(ins=ME, oid=builders.TEST_OID)])  # knows one patient
    trail = MemoryAuditTrail.beside(index)
    gate = HeaderWriteGate(index=index, trail=trail)
    assert gate.admit(LAB, BROKEN, door=HTTP_DOOR) is None  # a producer: no parse, no trace
    assert gate.admit(PATIENT, OWN_DOCPAT, door=HTTP_DOOR) is None
    refused = gate.admit(COLLEAGUE, PRO_DOC, door=HTTP_DOOR)
    assert refused is not None and refused.rule == "write.author"
    assert gate.admit(PATIENT, FOR_OTHER, door=HTTP_DOOR) is not None  # OTHER is unknown here: not traced
    assert gate.admit(PATIENT, BROKEN, door=HTTP_DOOR) is not None  # no target: not traced
    [entry] = trail.entries()
    assert (entry.ins, entry.actor_kind, entry.actor_id, entry.action, entry.outcome) == (
        ME, "professional", COLLEAGUE.idnps, AuditAction.REFUSED, "refused")
    assert entry.detail == {"rule": "write.author", "door": "http"}
