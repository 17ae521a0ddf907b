"""A profile's life over HTTP and the CLI on the production stack (RabbitMQ, SeaweedFS, PostgreSQL): the
roster's letter read with pdftotext, activation with its three factors and the lockout, opposition and
its PDF receipt, the reversal with a new code, restitution as a ZIP, closure, and the insurer's
reimbursement history filed 48 hours after activation (timers driven by an injected clock)."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from hub.auth import token_sha256
from hub.credentials import Credential
from hub.errors import NotFound
from meshub import cli
from tests import builders
from tests.integration.hub_harness import ADMIN_TOKEN, CREDENTIALS, RunningHub, running_hub
from tests.integration.test_intake_e2e import fixture_bytes, variant
from tests.integration.test_record_access_e2e import document, file, listed
from tests.services import eventually, missing

pytestmark = pytest.mark.integration
NEW = builders.with_key("2790375123456")      # a created profile (the roster's new one)
LOCKED = builders.with_key("1790375123457")   # a created profile someone guesses codes for
ACTIVE = builders.TEST_INS
HEADER = builders.ROSTER_HEADER.rstrip("\n") + ",vitale_serial\n"
VITALE = {NEW: "80250123456789", LOCKED: "80250987654321", ACTIVE: "80250111111111"}
GIVEN = {NEW: "Dominique", LOCKED: "Camille", ACTIVE: "Jeanne"}
INSURER = Credential("cnam", "insurer", token_sha256("t-insurer"))
PATIENT = Credential("p", "patient", token_sha256("t-patient"), ins=ACTIVE)


def roster(ins: str, status: str) -> str:
    return (f"{ins},{builders.TEST_OID},TEST,{GIVEN[ins]},1979-03-28,F,51215,,,"
            f"\"28 avenue de Breteuil, 75007 PARIS\",{status},{VITALE[ins]}\n")


@pytest.fixture
def hub(stack_settings: Settings) -> Iterator[RunningHub]:
    if shutil.which("pdftotext") is None:
        missing("pdftotext (poppler-utils) is not installed")
    settings = replace(stack_settings, credentials=(*CREDENTIALS, INSURER, PATIENT))
    with running_hub(settings) as running:
        with running.client("t-insurer") as insurer:
            response = insurer.post("/v1/patients/import", content=HEADER + roster(NEW, "created")
                                    + roster(LOCKED, "created") + roster(ACTIVE, "active"))
            assert response.status_code == 200, response.text
            assert response.json()["profiles"]["created"] == 2
        yield running


def pdf_text(data: bytes, tmp_path: Path) -> str:
    path = tmp_path / "doc.pdf"
    path.write_bytes(data)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True,
                          text=True).stdout


def letter_code(hub: RunningHub, ins: str, tmp_path: Path) -> str:
    """Print the due letters as the operator would, and read this person's code off the PDF."""
    with hub.admin() as admin:
        batch = admin.post("/v1/letters").json()["batch"]
        assert batch is not None, "no letter was due"
        text = pdf_text(admin.get(f"/v1/letters/{batch['batch_id']}.pdf").content, tmp_path)
    pages = [page for page in text.split("\f") if GIVEN[ins].upper() in page.upper()]
    codes = re.findall(r"\b[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}\b", pages[-1] if pages else "")
    assert codes, "no activation code in the printed letter"
    return codes[-1]


def factors(ins: str, code: str, vitale: str | None = None) -> dict[str, str]:
    return {"ins": ins, "code": code, "vitale_serial": vitale or VITALE[ins]}


def test_the_letters_code_activates_with_the_vitale_serial_and_wrong_guesses_lock(hub: RunningHub,
                                                                                  tmp_path: Path) -> None:
    code = letter_code(hub, NEW, tmp_path)
    with hub.client("nobody") as anonymous:  # the person has no credential yet: the factors are the proof
        wrong_vitale = anonymous.post("/v1/activation", json=factors(NEW, code, vitale="80250000000000"))
        wrong_code = anonymous.post("/v1/activation", json=factors(LOCKED, "AAAA-BBBB-CCCC"))
        assert wrong_vitale.status_code == wrong_code.status_code == 403
        assert wrong_vitale.json() == wrong_code.json()  # one answer whichever factor was wrong
        attempts = [anonymous.post("/v1/activation", json=factors(LOCKED, "AAAA-BBBB-CCCC")) for _ in range(5)]
        assert [a.status_code for a in attempts[:3]] == [403] * 3 and attempts[-1].status_code == 429
        assert int(attempts[-1].headers["retry-after"]) > 0
        done = anonymous.post("/v1/activation", json=factors(NEW, code))
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "active" and done.json()["activation"] == "code"
    with hub.client(done.json()["token"]) as own:  # activation hands the person their own access
        assert own.get(f"/v1/patients/{NEW}/documents").json() == {"documents": []}
        assert own.get(f"/v1/patients/{ACTIVE}/documents").status_code == 403
        assert own.post(f"/v1/patients/{NEW}/close").json()["status"] == "closed"
        assert own.get(f"/v1/patients/{NEW}/profile").status_code == 401  # closing ends that access
    with hub.admin() as admin:
        actions = [e["action"] for e in admin.get(f"/v1/patients/{NEW}/audit").json()["entries"]]
    assert actions[:1] == ["register"] and "refused" in actions and "activate" in actions


def test_opposition_gives_a_pdf_receipt_and_a_new_code_reverses_it(hub: RunningHub, tmp_path: Path) -> None:
    code = letter_code(hub, NEW, tmp_path)
    with hub.client("nobody") as anonymous:
        receipt = anonymous.post("/v1/opposition", json=factors(NEW, code))
    assert receipt.status_code == 200 and receipt.headers["content-type"] == "application/pdf"
    text = pdf_text(receipt.content, tmp_path)
    assert "opposition" in text.lower() and "DOMINIQUE" in text.upper()
    refused = file_status(hub, variant(fixture_bytes("BIO-CR-BIO_2024.01_TSH_1.xml"), extension="opp-1", ins=NEW))
    assert refused["status"] == "rejected" and "patient.opposed" in {f["rule"] for f in refused["findings"]}
    with hub.admin() as admin:
        assert admin.post(f"/v1/patients/{NEW}/code").status_code == 200  # the person changed their mind
    new_code = letter_code(hub, NEW, tmp_path)
    assert new_code != code
    with hub.client("nobody") as anonymous:
        assert anonymous.post("/v1/activation", json=factors(NEW, code)).status_code == 403  # the old one is dead
        assert anonymous.post("/v1/activation", json=factors(NEW, new_code)).json()["status"] == "active"


def file_status(hub: RunningHub, data: bytes) -> dict[str, Any]:
    with hub.client() as lab:
        accepted = lab.post("/v1/documents", content=data, headers={"Content-Type": "application/xml"}).json()
        return dict(lab.get(f"/v1/submissions/{accepted['submission']}", params={"wait": 30}).json())


def run_cli(capsys: pytest.CaptureFixture[str], hub: RunningHub, *args: str) -> tuple[int, str]:
    code = cli.main([*args, "--url", hub.url, "--token", ADMIN_TOKEN])
    return code, capsys.readouterr().out


def test_restitution_zip_then_closure_through_the_cli(hub: RunningHub, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    doc = file(hub, document(extension="zip-1"))
    with hub.client("t-patient") as patient:
        exported = patient.get(f"/v1/patients/{ACTIVE}/export")
    assert exported.status_code == 200 and exported.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(exported.content)) as archive:
        names = archive.namelist()
        listed_docs = json.loads(archive.read("documents.json"))["documents"]
        [entry] = [d for d in listed_docs if d["document_id"] == doc]
        assert archive.read(entry["file"]) == document(extension="zip-1")
        assert "manifest.json" in names and "audit.json" in names
    code, out = run_cli(capsys, hub, "patients", "close", ACTIVE, "--json")
    assert code == 0 and json.loads(out)["status"] == "closed"
    with hub.client("t-patient") as patient:
        assert patient.get(f"/v1/patients/{ACTIVE}/documents").status_code == 404  # no longer reachable
    code, _ = run_cli(capsys, hub, "patients", "export", ACTIVE, "-o", str(tmp_path / "archive.zip"))
    assert code != 0 and not zipfile.is_zipfile(tmp_path / "archive.zip")  # closed: content 404, admin included
    with hub.admin() as admin:
        assert admin.get(f"/v1/patients/{ACTIVE}/export").status_code == 404
    code, out = run_cli(capsys, hub, "patients", "oppose", ACTIVE)
    assert code == 2 and out == ""  # a closed profile cannot oppose any more


def acts_batch(batch_id: str, *refs: str) -> str:
    lines = [f"{ref}|{ACTIVE}|{builders.TEST_OID}|2026-11-20|CIP13|3400935673220|LUDEAL CPR3/21|1|12.50|8.75||"
             for ref in refs]
    return "\n".join([f"MESHUB-REMB|1|{batch_id}|CNAM", *lines, f"END|{len(refs)}"]) + "\n"


def test_reimbursement_history_is_held_then_filed_48_hours_after_activation(hub: RunningHub) -> None:
    with hub.client("t-insurer") as insurer:
        first = insurer.post("/v1/insurer/batches", content=acts_batch("B-1", "R-1", "R-2"),
                             headers={"Content-Type": "text/plain"})
        again = insurer.post("/v1/insurer/batches", content=acts_batch("B-1", "R-1", "R-2"),
                             headers={"Content-Type": "text/plain"})
        cda = insurer.post("/v1/insurer/batches", content=fixture_bytes("CNAM-HR_2021.01.xml"),
                           headers={"Content-Type": "application/xml"})
        bad = insurer.post("/v1/insurer/batches", content=acts_batch("B-2", "R-3")[:-7],
                           headers={"Content-Type": "text/plain"})
    assert (first.status_code, first.json()["new"], again.json()["new"]) == (202, 2, 0)
    assert cda.status_code == 202 and bad.status_code == 422
    assert "remb.trailer" in json.dumps(bad.json())
    with hub.admin() as admin:
        assert listed(admin, ACTIVE) == []  # activated just now (roster): held for 48 hours
    records = hub.hub.records
    for hours, expected in ((47, 0), (49, 2)):
        records.clock = lambda h=hours: datetime.now(UTC) + timedelta(hours=h)
        lifecycle = hub.hub.lifecycle()
        swept = records.sweep(lifecycle, hub.hub.insurer(lifecycle))
        assert swept["reimbursements"]["histories"] + swept["reimbursements"]["documents"] == expected
    with hub.admin() as admin:
        def remb() -> list[str]:
            return [d["category"] for d in admin.get(f"/v1/patients/{ACTIVE}/documents").json()["documents"]]
        assert eventually(lambda: (found := remb()) and len(found) == 2 and found) == ["REMB", "REMB"]


def later(hub: RunningHub, delta: timedelta) -> dict[str, Any]:
    """One pass of the record's timers, as the scheduler runs it, with the clock moved `delta` ahead."""
    records = hub.hub.records
    records.clock = lambda: datetime.now(UTC) + delta
    lifecycle = hub.hub.lifecycle()
    return records.sweep(lifecycle, hub.hub.insurer(lifecycle), full=True)


def profile(hub: RunningHub, ins: str) -> dict[str, Any]:
    with hub.admin() as admin:
        return dict(admin.get(f"/v1/patients/{ins}/profile").json())


def test_without_activation_or_opposition_the_profile_opens_after_six_weeks(hub: RunningHub) -> None:
    assert later(hub, timedelta(weeks=6) - timedelta(minutes=1))["lifecycle"]["opened"] == 0
    assert profile(hub, NEW)["status"] == "created"
    assert later(hub, timedelta(weeks=6, minutes=1))["lifecycle"]["opened"] == 2  # NEW and LOCKED
    opened = profile(hub, NEW)
    assert (opened["status"], opened["activation"]) == ("opened", "automatic")  # issue 12: not `active`


def test_ten_years_after_closure_the_record_is_purged_and_the_trail_still_verifies(
        hub: RunningHub, capsys: pytest.CaptureFixture[str]) -> None:
    doc = file(hub, document(extension="purge-1"))
    stored = hub.hub.index.document(doc)
    assert stored is not None
    with hub.client("t-patient") as patient:
        assert patient.post(f"/v1/patients/{ACTIVE}/close").json()["status"] == "closed"
    assert later(hub, timedelta(days=365 * 10))["lifecycle"]["purged"] == 0  # not quite 10 calendar years
    assert later(hub, timedelta(days=365 * 10 + 4))["lifecycle"]["purged"] == 1
    assert hub.hub.index.document(doc) is None
    with pytest.raises(NotFound):
        hub.hub.store.get(stored.blob)  # the exact bytes are erased from the object store too
    patient_row = hub.hub.index.patient(ACTIVE)
    assert patient_row is not None and (patient_row.status, patient_row.birth_name) == ("closed", "")
    code, out = run_cli(capsys, hub, "audit", "verify")
    assert code == 0 and "intact" in out  # the purged entries lost their bodies, not their hashes
