"""Whole hub on the production stack (RabbitMQ, SeaweedFS, PostgreSQL), driven over HTTP like a
producer system would: submit, follow, list, download; and every kind of bad input."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree

from tests import builders
from tests.integration.hub_harness import RunningHub
from tests.services import FIXTURES_CDA, missing

pytestmark = pytest.mark.integration
NS = {"h": "urn:hl7-org:v3"}


def fixture_bytes(name: str) -> bytes:
    path = FIXTURES_CDA / name
    if not path.exists():
        missing(f"ANS fixture {path} not found")
    return path.read_bytes()


def import_roster(hub: RunningHub, *lines: str) -> dict[str, Any]:
    with hub.admin() as admin:
        response = admin.post("/v1/patients/import", content=builders.ROSTER_HEADER + "".join(lines))
    assert response.status_code == 200, response.text
    return dict(response.json())


def post_document(client: httpx.Client, body: bytes, *, content_type: str = "application/xml") -> dict[str, Any]:
    """POST as a well-behaved producer: a 503 means 'nothing accepted, retry after Retry-After'."""
    for _ in range(3):
        response = client.post("/v1/documents", content=body, headers={"Content-Type": content_type})
        if response.status_code != 503:
            break
        time.sleep(float(response.headers.get("retry-after", "1")))
    assert response.status_code == 202, (response.status_code, response.text)
    return dict(response.json())


def submit(hub: RunningHub, body: bytes, *, content_type: str = "application/xml") -> dict[str, Any]:
    with hub.client() as client:
        accepted = post_document(client, body, content_type=content_type)
        final = client.get(f"/v1/submissions/{accepted['submission']}", params={"wait": 30}).json()
    assert final["status"] != "pending", "submission did not finish within 30 s"
    return dict(final)


def rules(record: dict[str, Any]) -> set[str]:
    return {f["rule"] for f in record["findings"]}


def variant(base: bytes, *, extension: str, replaces: str | None = None, ins: str | None = None) -> bytes:
    """A copy of a real document with another id (and optionally an RPLC parent or another INS)."""
    root = etree.fromstring(base)
    root.find("h:id", NS).set("extension", extension)
    for related in root.findall("h:relatedDocument", NS):
        root.remove(related)
    if replaces is not None:
        related = etree.Element("{urn:hl7-org:v3}relatedDocument", typeCode="RPLC")
        parent = etree.SubElement(related, "{urn:hl7-org:v3}parentDocument")
        root_id, _, ext = replaces.partition("^")
        etree.SubElement(parent, "{urn:hl7-org:v3}id", root=root_id, extension=ext)
        # relatedDocument comes after authorization/participant/inFulfillmentOf, before componentOf.
        anchor = root.find("h:componentOf", NS)
        (anchor if anchor is not None else root.find("h:component", NS)).addprevious(related)
    if ins is not None:
        for ident in root.iterfind("h:recordTarget/h:patientRole/h:id", NS):
            if ident.get("root", "").startswith("1.2.250.1.213.1.4."):
                ident.set("extension", ins)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


BIO = "BIO-CR-BIO_2024.01_TSH_1.xml"


def test_a_lab_report_is_indexed_listed_and_downloadable_byte_for_byte(stack: RunningHub) -> None:
    # Given a known, active patient
    import_roster(stack, builders.roster_line())
    body = fixture_bytes(BIO)
    # When the lab submits its report
    record = submit(stack, body)
    # Then it is indexed, classified, listed for the patient and its exact bytes come back
    assert record["status"] == "indexed", record
    assert record["category"] == "BIOLOGIE"
    with stack.admin() as admin:
        docs = admin.get(f"/v1/patients/{builders.TEST_INS}/documents").json()["documents"]
        assert [d["document_id"] for d in docs] == [record["document_id"]]
        assert docs[0]["class_code"] == "10" and docs[0]["type_code"] == "11502-2"
        content = admin.get(f"/v1/documents/{record['document_id']}/content")
    assert content.status_code == 200 and content.content == body
    assert content.headers["x-content-sha256"] == hashlib.sha256(body).hexdigest()


def test_the_same_document_twice_is_one_entry_and_a_clear_duplicate(stack: RunningHub) -> None:
    import_roster(stack, builders.roster_line())
    first, second = submit(stack, fixture_bytes(BIO)), submit(stack, fixture_bytes(BIO))
    assert (first["status"], second["status"]) == ("indexed", "duplicate")
    assert "document.duplicate" in rules(second)
    with stack.admin() as admin:
        assert len(admin.get(f"/v1/patients/{builders.TEST_INS}/documents").json()["documents"]) == 1


def test_a_replacement_deprecates_its_parent_and_both_are_kept(stack: RunningHub) -> None:
    import_roster(stack, builders.roster_line())
    base = fixture_bytes(BIO)
    v1 = submit(stack, variant(base, extension="e2e-v1"))
    v2 = submit(stack, variant(base, extension="e2e-v2", replaces=v1["document_id"]))
    assert v1["status"] == v2["status"] == "indexed", (v1, v2)
    with stack.admin() as admin:
        current = admin.get(f"/v1/patients/{builders.TEST_INS}/documents").json()["documents"]
        every = admin.get(f"/v1/patients/{builders.TEST_INS}/documents",
                          params={"include_deprecated": "true"}).json()["documents"]
    assert [d["document_id"] for d in current] == [v2["document_id"]]
    parent = next(d for d in every if d["document_id"] == v1["document_id"])
    assert parent["status"] == "deprecated" and parent["replaced_by"] == v2["document_id"]


def test_listing_filters(stack: RunningHub) -> None:
    import_roster(stack, builders.roster_line())
    submit(stack, fixture_bytes(BIO))
    submit(stack, fixture_bytes("IMG_CR_IMG_2024.01.xml"))
    with stack.admin() as admin:
        def ids(**params: str) -> list[str]:
            return [d["category"] for d in admin.get(f"/v1/patients/{builders.TEST_INS}/documents",
                                                     params=params).json()["documents"]]
        assert sorted(ids()) == ["BIOLOGIE", "RADIO_SC"]
        assert ids(category="RADIO_SC") == ["RADIO_SC"]
        assert ids(type="11502-2") == ["BIOLOGIE"]
        assert ids(**{"class": "31"}) == ["RADIO_SC"]
        assert ids(**{"from": "2999-01-01"}) == []
        assert admin.get(f"/v1/patients/{builders.TEST_INS}/documents",
                         params={"from": "yesterday"}).status_code == 422


@pytest.mark.parametrize(("status", "rule", "code"), [
    ("opposed", "patient.opposed", None), ("closed", "patient.closed", "207")])
def test_opposed_or_closed_patients_are_refused(stack: RunningHub, status: str, rule: str,
                                                code: str | None) -> None:
    import_roster(stack, builders.roster_line(status=status))
    record = submit(stack, fixture_bytes(BIO))
    assert record["status"] == "rejected" and rule in rules(record)
    if code:
        assert code in {f["code"] for f in record["findings"]}
    with stack.admin() as admin:
        listed = admin.get(f"/v1/patients/{builders.TEST_INS}/documents")
        if status == "closed":  # a closed record is no longer reachable, by anyone
            assert listed.status_code == 404
        else:
            assert listed.json()["documents"] == []


def test_unknown_patient_is_refused_with_902(stack: RunningHub) -> None:
    record = submit(stack, fixture_bytes(BIO))
    assert record["status"] == "rejected" and "patient.unknown" in rules(record)
    assert "902" in {f["code"] for f in record["findings"]}


def test_wrong_ins_key_is_refused_with_904_and_the_xpath(stack: RunningHub) -> None:
    wrong = builders.TEST_INS[:13] + "00"
    import_roster(stack, builders.roster_line())
    record = submit(stack, variant(fixture_bytes(BIO), extension="bad-key", ins=wrong))
    (finding,) = [f for f in record["findings"] if f["rule"] == "ins.key"]
    assert record["status"] == "rejected" and finding["code"] == "904"
    assert "recordTarget" in finding["location"] and wrong not in finding["message_en"]


@pytest.mark.parametrize(("body", "rule"), [
    (b"<ClinicalDocument xmlns='urn:hl7-org:v3'><unclosed></ClinicalDocument>", "xml.well-formed"),
    (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
     b"<ClinicalDocument xmlns='urn:hl7-org:v3'>&x;</ClinicalDocument>", "xml.dtd-forbidden"),
    (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
     b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>'
     b"<ClinicalDocument xmlns='urn:hl7-org:v3'>&d;&d;&d;&d;</ClinicalDocument>", "xml.dtd-forbidden"),
    (b"<root/>", "cda.root"),
])
def test_bad_xml_is_rejected_with_its_own_rule(stack: RunningHub, body: bytes, rule: str) -> None:
    record = submit(stack, body)
    assert record["status"] == "rejected" and rule in rules(record), record
    assert "root:" not in str(record)  # nothing from /etc/passwd leaked into the findings


def test_http_edge_errors_are_specific(stack: RunningHub, tmp_path: Path) -> None:
    body = fixture_bytes(BIO)
    with httpx.Client(base_url=stack.url, timeout=30) as anonymous:
        assert anonymous.post("/v1/documents", content=body).status_code == 401
        wrong = anonymous.post("/v1/documents", content=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthenticated"
    with stack.client() as client:
        r = client.post("/v1/documents", content=body, headers={"Content-Type": "application/pdf"})
        assert r.status_code == 415 and "application/xml" in r.json()["error"]["message_en"]
        r = client.post("/v1/documents", content=b"<a/>" * (2 * 1024 * 1024),
                        headers={"Content-Type": "application/xml"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "body-too-large"
        r = client.post("/v1/documents", content=b"  ", headers={"Content-Type": "application/xml"})
        assert r.status_code == 400
        assert client.get("/v1/patients/279035121518989/documents").status_code == 403  # producer, not admin
        assert client.get("/v1/submissions/does-not-exist").status_code == 404
    with stack.admin() as admin:
        assert admin.get("/v1/documents/nope/content").status_code == 404
        assert admin.get("/openapi.json").json()["paths"]["/v1/documents"]["post"]


def test_roster_with_a_bad_line_imports_nothing(stack: RunningHub) -> None:
    with stack.admin() as admin:
        r = admin.post("/v1/patients/import", content=builders.ROSTER_HEADER + builders.roster_line()
                       + builders.roster_line(builders.TEST_INS[:13] + "00"))
        assert r.status_code == 422 and "line 3" in r.json()["error"]["message_en"]
    assert submit(stack, fixture_bytes(BIO))["status"] == "rejected"  # patient still unknown


def test_every_ans_example_ends_as_the_pure_core_table_says(stack: RunningHub) -> None:
    """All 18 ANS fixtures through HTTP, RabbitMQ, SeaweedFS and PostgreSQL: the outcome and
    category of each is the defended one in tests/unit/test_fixtures.py."""
    from tests.unit.test_fixtures import EXPECTED

    import_roster(stack, builders.roster_line(), builders.roster_line("277076322082910", oid="1.2.250.1.213.1.4.8"))
    with stack.client() as client:
        accepted = {name: post_document(client, fixture_bytes(name), content_type="text/xml")["submission"]
                    for name in sorted(EXPECTED)}
        final = {name: client.get(f"/v1/submissions/{sid}", params={"wait": 30}).json()
                 for name, sid in accepted.items()}
    for name, expected in EXPECTED.items():
        record = final[name]
        if expected[0] == "accept":
            assert (record["status"], record["category"]) == ("indexed", expected[1]), (name, record)
        else:
            assert record["status"] == "rejected" and expected[1] in rules(record), (name, record)


def test_recovery_sweep_processes_a_submission_whose_message_was_lost(stack: RunningHub) -> None:
    """A submission recorded and stored, but whose envelope never reached the bus (a broker that
    lost it, a crash between steps), is republished by the sweep and ends indexed."""
    from datetime import UTC, datetime, timedelta

    from hub.intake import new_submission_id
    from hub.records import SubmissionRecord

    import_roster(stack, builders.roster_line())
    hub = stack.hub
    # Given bytes in the store and a pending row, but no message on the bus
    ref = hub.store.put(variant(fixture_bytes(BIO), extension="lost-message"), kind="cda", content_type="text/xml")
    lost = SubmissionRecord(submission_id=new_submission_id(), received_at=datetime.now(UTC) - timedelta(hours=1),
                            producer="lab-1", source_kind="http", blob_key=ref.key, sha256=ref.sha256, size=ref.size)
    hub.index.create_submission(lost)
    # When the sweep runs
    assert hub.sweep_once(datetime.now(UTC) - timedelta(minutes=15)) == 1
    # Then the submission is processed like any other
    with stack.client() as client:
        final = client.get(f"/v1/submissions/{lost.submission_id}", params={"wait": 30}).json()
    assert final["status"] == "indexed" and final["document_id"].endswith("^lost-message")
