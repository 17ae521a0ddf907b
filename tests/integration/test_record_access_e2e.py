"""Who sees what, over HTTP on the production stack (RabbitMQ, SeaweedFS, PostgreSQL): patients,
a minor's legal representative, professionals through the habilitation matrix and the emergency modes,
the confidentiality codes and flags, and the audit trail each access leaves, checked and tampered with."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from lxml import etree

from config.settings import Settings
from hub.auth import token_sha256
from hub.credentials import Credential
from meshub import cli
from tests import builders
from tests.integration.hub_harness import CREDENTIALS, RunningHub, running_hub
from tests.integration.test_intake_e2e import fixture_bytes, post_document
from tests.services import eventually

pytestmark = pytest.mark.integration
NS = {"h": "urn:hl7-org:v3"}
BIO = "BIO-CR-BIO_2024.01_TSH_1.xml"  # a biology report (11502-2); its author is IDNPS 801234534765

PATIENT = builders.TEST_INS
OTHER = builders.with_key("1850175123456")
MINOR = builders.with_key("2150375123456")
PARENT = builders.with_key("1800175123457")
AUTHOR, DOCTOR, OPTICIAN, REGULATOR = "801234534765", "810000000027", "810000000035", "810000000043"
PEOPLE: dict[str, Credential] = {
    "patient": Credential("p", "patient", token_sha256("t-patient"), ins=PATIENT),
    "other": Credential("o", "patient", token_sha256("t-other"), ins=OTHER),
    "parent": Credential("r", "patient", token_sha256("t-parent"), ins=PARENT),
    "author": Credential("dr-a", "professional", token_sha256("t-author"), idnps=AUTHOR, profession="G15_10"),
    "doctor": Credential("dr-b", "professional", token_sha256("t-doctor"), idnps=DOCTOR, profession="G15_10",
                         specialty="SM54"),
    "optician": Credential("opt", "professional", token_sha256("t-optician"), idnps=OPTICIAN,
                           profession="G15_28"),
    "regulator": Credential("samu", "professional", token_sha256("t-regulator"), idnps=REGULATOR,
                            profession="G15_10", regulator=True),
}


def roster_line(ins: str, birth: str) -> str:
    return f"{ins},{builders.TEST_OID},TEST,Camille,{birth},F,75056,,,,active\n"


@pytest.fixture
def hub(stack_settings: Settings) -> Iterator[RunningHub]:
    settings = replace(stack_settings, credentials=CREDENTIALS + tuple(PEOPLE.values()))
    with running_hub(settings) as running:
        with running.admin() as admin:
            roster = builders.ROSTER_HEADER + "".join(roster_line(ins, born) for ins, born in (
                (PATIENT, "1979-03-01"), (OTHER, "1985-01-01"), (MINOR, "2015-03-01"), (PARENT, "1980-01-01")))
            assert admin.post("/v1/patients/import", content=roster).status_code == 200
            assert admin.put(f"/v1/patients/{MINOR}/representatives",
                             json={"representatives": [PARENT]}).status_code == 200
        yield running


def as_(hub: RunningHub, who: str, **headers: str) -> httpx.Client:
    client = hub.client(f"t-{who}")
    client.headers.update(headers)
    return client


def document(*, extension: str, ins: str = PATIENT, author: str = AUTHOR) -> bytes:
    """The ANS biology report under another id, for `ins`, written by professional `author`."""
    root = etree.fromstring(fixture_bytes(BIO))
    root.find("h:id", NS).set("extension", extension)
    for ident in root.iterfind("h:recordTarget/h:patientRole/h:id", NS):
        if ident.get("root", "").startswith("1.2.250.1.213.1.4."):
            ident.set("extension", ins)
    for ident in root.iterfind(".//h:assignedAuthor/h:id", NS):
        if ident.get("root") == "1.2.250.1.71.4.2.1":
            ident.set("extension", author)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def file(hub: RunningHub, data: bytes, *, codes: str = "") -> str:
    """Submit as the lab, wait until indexed; the document id."""
    with hub.client() as lab:
        if codes:
            lab.headers["X-Confidentiality"] = codes
        accepted = post_document(lab, data)
        final = lab.get(f"/v1/submissions/{accepted['submission']}", params={"wait": 30}).json()
    assert final["status"] == "indexed", final
    return str(final["document_id"])


def listed(client: httpx.Client, ins: str = PATIENT) -> list[str]:
    response = client.get(f"/v1/patients/{ins}/documents")
    assert response.status_code == 200, response.text
    return [d["document_id"] for d in response.json()["documents"]]


def trail(hub: RunningHub, ins: str = PATIENT) -> list[dict[str, Any]]:
    with hub.admin() as admin:
        return list(admin.get(f"/v1/patients/{ins}/audit").json()["entries"])


def notice_kinds(hub: RunningHub, ins: str = PATIENT) -> list[str]:
    with hub.admin() as admin:
        return [n["kind"] for n in admin.get(f"/v1/patients/{ins}/notifications").json()["notifications"]]


def refusal(response: httpx.Response) -> str:
    assert response.status_code == 403, (response.status_code, response.text)
    return str(response.json()["error"]["finding"]["rule"])


def test_a_patient_reads_their_record_and_never_another_patients(hub: RunningHub) -> None:
    doc = file(hub, document(extension="own-1"))
    with as_(hub, "patient") as patient, as_(hub, "other") as other:
        assert listed(patient) == [doc]
        assert patient.get(f"/v1/documents/{doc}/content").content == document(extension="own-1")
        assert refusal(other.get(f"/v1/patients/{PATIENT}/documents")) == "access.not-own-record"
        assert refusal(other.get(f"/v1/documents/{doc}/content")) == "access.not-own-record"
    refused = [e for e in trail(hub) if e["outcome"] == "refused"]
    assert [(e["actor_id"], e["detail"]["rule"]) for e in refused] == [(OTHER, "access.not-own-record")] * 2
    assert {e["action"] for e in trail(hub)} >= {"write", "list", "read", "refused"}


def test_a_professional_outside_the_matrix_gets_403_and_the_refusal_is_in_the_trail(hub: RunningHub) -> None:
    doc = file(hub, document(extension="matrix-1"))
    with as_(hub, "optician") as optician, as_(hub, "doctor") as doctor:
        assert listed(optician) == []  # the list shows what the matrix allows: nothing of biology
        assert refusal(optician.get(f"/v1/documents/{doc}")) == "access.habilitation"
        assert listed(doctor) == [doc]
    [entry] = [e for e in trail(hub) if e["outcome"] == "refused"]
    assert (entry["actor_kind"], entry["actor_id"], entry["target"]) == ("professional", OPTICIAN, doc)
    assert entry["detail"]["rule"] == "access.habilitation" and entry["detail"]["profession"] == "G15_28"


def test_masque_ps_hides_a_document_from_professionals_but_its_author(hub: RunningHub) -> None:
    masked = file(hub, document(extension="masked-1"), codes="MASQUE_PS")
    plain = file(hub, document(extension="plain-1"))
    with as_(hub, "doctor") as doctor, as_(hub, "author") as author, as_(hub, "patient") as patient:
        assert listed(doctor) == [plain]
        assert refusal(doctor.get(f"/v1/documents/{masked}")) == "access.masked"
        assert sorted(listed(author)) == sorted([masked, plain])
        assert sorted(listed(patient)) == sorted([masked, plain])  # the patient sees their own document
        with as_(hub, "doctor", **{"X-Access-Mode": "bris_de_glace",
                                   "X-Access-Reason": "patient%20inconscient%20aux%20urgences"}) as urgent:
            assert listed(urgent) == [plain]  # an emergency does not unmask


def test_invisible_patient_waits_for_its_author_to_lift_it_then_the_patient_is_told(hub: RunningHub) -> None:
    doc = file(hub, document(extension="annonce-1"), codes="INVISIBLE_PATIENT")
    with as_(hub, "patient") as patient, as_(hub, "doctor") as doctor, as_(hub, "author") as author:
        assert listed(patient) == []
        assert patient.get(f"/v1/documents/{doc}").status_code == 404  # its existence must not leak
        assert listed(doctor) == [doc]  # professionals are not concerned by INVISIBLE_PATIENT
        assert "new_document" not in notice_kinds(hub)
        assert refusal(doctor.post(f"/v1/documents/{doc}/lift-invisible")) == "access.not-author"
        lifted = author.post(f"/v1/documents/{doc}/lift-invisible")
        assert lifted.status_code == 200 and lifted.json()["invisible_lifted"] is True
        assert listed(patient) == [doc]
    eventually(lambda: "new_document" in notice_kinds(hub), what="the patient told once lifted")
    assert any(e["action"] == "lift_invisible" and e["actor_id"] == AUTHOR for e in trail(hub))
    assert [(e["actor_id"], e["detail"]["rule"]) for e in trail(hub) if e["outcome"] == "refused"][:1] == [
        (PATIENT, "access.invisible")]  # the 404 is traced with its rule


def test_a_professionals_first_access_and_every_action_are_traced_and_announced(hub: RunningHub) -> None:
    doc = file(hub, document(extension="first-1"))
    with as_(hub, "doctor") as doctor:
        listed(doctor)
        doctor.get(f"/v1/documents/{doc}/content")
        listed(doctor)
    entries = [e for e in trail(hub) if e["actor_id"] == DOCTOR]
    assert [e["action"] for e in entries] == ["first_access", "list", "read", "list"]
    kinds = eventually(lambda: (k := notice_kinds(hub)).count("first_access") == 1 and k, what="first access")
    assert "professional_action" in kinds


def test_bris_de_glace_needs_a_reason_and_the_patients_consent_to_emergencies(hub: RunningHub) -> None:
    doc = file(hub, document(extension="urgence-1"))
    reason = "Patient%20inconscient%2C%20admis%20aux%20urgences%20%C3%A0%2014h"
    with as_(hub, "doctor", **{"X-Access-Mode": "bris_de_glace"}) as no_reason:
        assert refusal(no_reason.get(f"/v1/patients/{PATIENT}/documents")) == "access.reason-required"
    with as_(hub, "doctor", **{"X-Access-Mode": "bris_de_glace", "X-Access-Reason": reason}) as urgent:
        assert listed(urgent) == [doc]
    [emergency] = [e for e in trail(hub) if e["action"] == "emergency"]
    assert emergency["detail"]["reason"] == "Patient inconscient, admis aux urgences à 14h"
    assert emergency["detail"]["mode"] == "bris_de_glace"
    with as_(hub, "patient") as patient:
        assert patient.patch(f"/v1/patients/{PATIENT}/access-settings",
                             json={"bris_de_glace_allowed": False}).json()["bris_de_glace_allowed"] is False
    with as_(hub, "doctor", **{"X-Access-Mode": "bris_de_glace", "X-Access-Reason": reason}) as urgent:
        assert refusal(urgent.get(f"/v1/patients/{PATIENT}/documents")) == "access.emergency-disabled"


def test_the_centre_15_regulator_mode_is_for_regulators_and_the_patient_can_refuse_it(hub: RunningHub) -> None:
    doc = file(hub, document(extension="samu-1"))
    with as_(hub, "doctor", **{"X-Access-Mode": "regulation"}) as doctor:
        assert refusal(doctor.get(f"/v1/patients/{PATIENT}/documents")) == "access.not-regulator"
    with as_(hub, "regulator", **{"X-Access-Mode": "regulation"}) as samu:
        assert listed(samu) == [doc]
    with as_(hub, "patient") as patient:
        patient.patch(f"/v1/patients/{PATIENT}/access-settings", json={"regulation_allowed": False})
    with as_(hub, "regulator", **{"X-Access-Mode": "regulation"}) as samu:
        assert refusal(samu.get(f"/v1/patients/{PATIENT}/documents")) == "access.emergency-disabled"
    eventually(lambda: "professional_action" in notice_kinds(hub), what="the emergency announced")


def test_a_blocked_professional_is_refused_even_in_an_emergency(hub: RunningHub) -> None:
    doc = file(hub, document(extension="block-1"))
    with as_(hub, "patient") as patient:
        assert patient.put(f"/v1/patients/{PATIENT}/blocked/{DOCTOR}").json()["blocked"] == [DOCTOR]
    with as_(hub, "doctor", **{"X-Access-Mode": "bris_de_glace",
                               "X-Access-Reason": "urgence%20vitale%20au%20cabinet"}) as doctor:
        assert refusal(doctor.get(f"/v1/patients/{PATIENT}/documents")) == "access.blocked"
    with as_(hub, "other") as other:  # only the patient decides whom to block
        assert refusal(other.put(f"/v1/patients/{PATIENT}/blocked/{AUTHOR}")) == "access.patient-only"
    with as_(hub, "patient") as patient:
        assert patient.delete(f"/v1/patients/{PATIENT}/blocked/{DOCTOR}").json()["blocked"] == []
    with as_(hub, "doctor") as doctor:
        assert listed(doctor) == [doc]


def test_the_patient_masks_and_unmasks_their_document(hub: RunningHub) -> None:
    doc = file(hub, document(extension="mine-1"))
    with as_(hub, "patient") as patient, as_(hub, "doctor") as doctor, as_(hub, "other") as other:
        assert patient.patch(f"/v1/documents/{doc}/flags", json={"masked": True}).json()["masked_by_patient"]
        assert listed(doctor) == []
        assert refusal(other.patch(f"/v1/documents/{doc}/flags", json={"masked": False})) == "access.not-own-record"
        assert not patient.patch(f"/v1/documents/{doc}/flags", json={"masked": False}).json()["masked_by_patient"]
        assert listed(doctor) == [doc]
    assert [e["action"] for e in trail(hub) if e["actor_id"] == PATIENT and e["target"] == doc] == ["mask", "unmask"]


def test_only_the_author_deletes_or_masks_at_the_patients_request(hub: RunningHub) -> None:
    doc = file(hub, document(extension="erase-1"))
    with as_(hub, "doctor") as doctor, as_(hub, "author") as author, as_(hub, "patient") as patient:
        assert refusal(doctor.delete(f"/v1/documents/{doc}")) == "access.not-author"
        assert author.post(f"/v1/documents/{doc}/mask").json()["masked_by_patient"] is True
        assert listed(doctor) == []
        assert author.delete(f"/v1/documents/{doc}").json()["deleted"] is True
        for client in (patient, author, doctor):
            assert listed(client) == []
            assert client.get(f"/v1/documents/{doc}/content").status_code == 404


def test_a_minors_representative_sees_what_is_not_hidden_from_them(hub: RunningHub) -> None:
    shown = file(hub, document(extension="minor-1", ins=MINOR))
    hidden = file(hub, document(extension="minor-2", ins=MINOR), codes="INVISIBLE_REPRESENTANTS_LEGAUX")
    with as_(hub, "parent") as parent, as_(hub, "other") as other:
        assert listed(parent, MINOR) == [shown]
        assert parent.get(f"/v1/documents/{hidden}").status_code == 404  # its existence must not leak
        assert refusal(other.get(f"/v1/patients/{MINOR}/documents")) == "access.not-own-record"
        assert parent.get(f"/v1/patients/{MINOR}/audit").status_code == 200
    assert any(e["actor_kind"] == "representative" and e["actor_id"] == PARENT for e in trail(hub, MINOR))
    assert ("refused", "access.invisible-representatives") in {
        (e["outcome"], e["detail"].get("rule")) for e in trail(hub, MINOR) if e["target"] == hidden}


def run_cli(capsys: pytest.CaptureFixture[str], hub: RunningHub, *args: str) -> tuple[int, str]:
    code = cli.main([*args, "--url", hub.url, "--token", "admin-token-for-tests"])
    return code, capsys.readouterr().out


def test_the_cli_shows_the_trail_and_verify_names_a_tampered_entry(hub: RunningHub, stack_settings: Settings,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    doc = file(hub, document(extension="cli-1"))
    with as_(hub, "doctor") as doctor:
        doctor.get(f"/v1/documents/{doc}")
    code, out = run_cli(capsys, hub, "audit", PATIENT, "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and ("read", DOCTOR) in {(r["action"], r["actor_id"]) for r in rows}
    code, out = run_cli(capsys, hub, "audit", "verify")
    assert code == 0 and "intact" in out
    read = next(r for r in rows if r["action"] == "read")
    engine = sa.create_engine(stack_settings.index_url)
    with engine.begin() as conn:  # someone with database access rewrites who read the document
        conn.execute(sa.text("UPDATE audit_trail SET actor_id = :who WHERE seq = :seq"),
                     {"who": AUTHOR, "seq": read["seq"]})
    engine.dispose()
    code, out = run_cli(capsys, hub, "audit", "verify")
    assert code == 1 and f"entry {read['seq']}" in out
