"""Who may write into a record, over HTTP on the production stack (RabbitMQ, SeaweedFS, PostgreSQL):
every role on POST /v1/documents and through the file drop.  A refusal is a 403 with its rule that
stores nothing (no S3 object, no submission row, no bus message) and is in the target patient's trail."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from config.settings import Settings
from hub.auth import token_sha256
from hub.credentials import Credential
from hub.envelope import Envelope
from meshub import cli
from storage.sql.index import submissions
from tests import builders
from tests.cda_builders import MINIMAL_AUTHOR, cda, docpat
from tests.integration.hub_harness import CREDENTIALS, RunningHub, running_hub

pytestmark = pytest.mark.integration

ME = builders.TEST_INS
OTHER = builders.with_key("1850175123456")
COLLEAGUE = "810000000027"
PEOPLE = (
    Credential("me", "patient", token_sha256("t-me"), ins=ME),
    Credential("cnam", "insurer", token_sha256("t-insurer")),
    Credential("dr-a", "professional", token_sha256("t-author"), idnps=MINIMAL_AUTHOR, profession="G15_10"),
    Credential("dr-b", "professional", token_sha256("t-colleague"), idnps=COLLEAGUE, profession="G15_10"),
)


class Published:
    """Counts what intake hands the bus (wraps the hub's publisher)."""

    def __init__(self, hub: RunningHub) -> None:
        self.envelopes: list[Envelope] = []
        publish = hub.hub.publisher.publish

        def spy(envelope: Envelope) -> None:
            self.envelopes.append(envelope)
            publish(envelope)

        hub.hub.publisher.publish = spy  # type: ignore[method-assign]


@pytest.fixture
def settings(stack_settings: Settings) -> Settings:
    return replace(stack_settings, credentials=CREDENTIALS + PEOPLE)


def with_roster(running: RunningHub) -> RunningHub:
    with running.admin() as admin:
        roster = builders.ROSTER_HEADER + builders.roster_line(ME) + builders.roster_line(OTHER)
        assert admin.post("/v1/patients/import", content=roster).status_code == 200
    return running


@pytest.fixture
def hub(settings: Settings) -> Iterator[RunningHub]:
    with running_hub(settings) as running:
        yield with_roster(running)


def post(hub: RunningHub, token: str, body: bytes) -> httpx.Response:
    with hub.client(token) as client:
        return client.post("/v1/documents", content=body, headers={"Content-Type": "application/xml"})


def indexed(hub: RunningHub, token: str, body: bytes) -> dict[str, Any]:
    """POST, expect 202, wait until final; the final submission (as the writer sees it)."""
    response = post(hub, token, body)
    assert response.status_code == 202, (response.status_code, response.text)
    with hub.client(token) as client:
        final = client.get(f"/v1/submissions/{response.json()['submission']}", params={"wait": 30}).json()
    assert final["status"] == "indexed", final
    return dict(final)


def refused(response: httpx.Response) -> str:
    assert response.status_code == 403, (response.status_code, response.text)
    error = response.json()["error"]
    assert error["message_en"] and error["message_fr"]
    return str(error["code"])


def objects(hub: RunningHub) -> list[str]:
    store = hub.hub.store
    return [o.object_name for o in store.client.list_objects(store.bucket, recursive=True)]


def submission_rows(hub: RunningHub) -> int:
    with hub.hub.index.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(submissions)).scalar_one())


def documents_of(hub: RunningHub, ins: str) -> list[dict[str, Any]]:
    with hub.admin() as admin:
        return list(admin.get(f"/v1/patients/{ins}/documents").json()["documents"])


def refusals(hub: RunningHub, ins: str) -> list[tuple[str, str, str]]:
    """(actor kind, actor id, rule) of the refusals in `ins`'s trail."""
    with hub.admin() as admin:
        entries = admin.get(f"/v1/patients/{ins}/audit").json()["entries"]
    return [(e["actor_kind"], e["actor_id"], e["detail"]["rule"]) for e in entries if e["outcome"] == "refused"]


def test_a_patient_cannot_file_into_another_patients_record_and_nothing_is_stored(hub: RunningHub) -> None:
    bus, before = Published(hub), objects(hub)
    # A patient's own token, a DOCPAT written as the other patient, for the other patient's record
    assert refused(post(hub, "t-me", docpat(extension="intrusion", ins=OTHER))) == "write.own-record"
    # Nothing stored: no object, no submission, no bus message, nothing indexed
    assert objects(hub) == before and submission_rows(hub) == 0 and bus.envelopes == []
    time.sleep(0.5)
    assert documents_of(hub, OTHER) == []
    # The victim's trail shows who tried, and which rule refused it
    assert refusals(hub, OTHER) == [("patient", ME, "write.own-record")]


def test_a_patient_files_only_patient_authored_documents_into_their_own_record(hub: RunningHub) -> None:
    bus = Published(hub)
    not_docpat = cda(extension="own-lettre", author_root=builders.TEST_OID, author=ME)
    assert refused(post(hub, "t-me", not_docpat)) == "write.patient-type"
    assert refused(post(hub, "t-me", docpat(extension="ghost", author=OTHER))) == "write.author"
    assert refused(post(hub, "t-me", b"<ClinicalDocument")) == "write.own-record"  # no target: no 500
    assert submission_rows(hub) == 0 and bus.envelopes == []
    assert refusals(hub, ME) == [("patient", ME, "write.patient-type"), ("patient", ME, "write.author")]
    # The patient's own DOCPAT, written by the patient: accepted and indexed into their record
    final = indexed(hub, "t-me", docpat(extension="own-docpat"))
    assert [d["document_id"] for d in documents_of(hub, ME)] == [final["document_id"]]
    with hub.client("t-me") as me:
        listed = me.get(f"/v1/patients/{ME}/documents").json()["documents"]
    assert [(d["document_id"], d["type_code"]) for d in listed] == [(final["document_id"], "DOCPAT01")]


@pytest.mark.parametrize("token", ["t-insurer", "admin-token-for-tests"])
def test_the_insurer_and_the_admin_do_not_feed_documents(hub: RunningHub, token: str) -> None:
    bus, before = Published(hub), objects(hub)
    assert refused(post(hub, token, cda(extension="not-a-feeder"))) == "write.role"
    assert refused(post(hub, token, b"not xml at all")) == "write.role"
    assert objects(hub) == before and submission_rows(hub) == 0 and bus.envelopes == []
    kind = "insurer" if token == "t-insurer" else "admin"
    assert refusals(hub, ME) == [(kind, "cnam" if kind == "insurer" else "admin", "write.role")]


def test_a_professional_submits_only_what_they_author(hub: RunningHub) -> None:
    bus = Published(hub)
    assert refused(post(hub, "t-colleague", cda(extension="not-mine"))) == "write.author"
    assert submission_rows(hub) == 0 and bus.envelopes == []
    assert refusals(hub, ME) == [("professional", COLLEAGUE, "write.author")]
    final = indexed(hub, "t-author", cda(extension="mine"))
    assert [d["document_id"] for d in documents_of(hub, ME)] == [final["document_id"]]


def test_a_producer_feeds_any_patients_record(hub: RunningHub) -> None:
    first = indexed(hub, "producer-token-for-tests", cda(extension="lab-me"))
    second = indexed(hub, "producer-token-for-tests", cda(extension="lab-other", ins=OTHER, author=COLLEAGUE))
    assert [d["document_id"] for d in documents_of(hub, ME)] == [first["document_id"]]
    assert [d["document_id"] for d in documents_of(hub, OTHER)] == [second["document_id"]]
    assert refusals(hub, ME) == refusals(hub, OTHER) == []


def test_meshub_submit_prints_the_refusal_and_exits_1(hub: RunningHub, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "intrusion.xml"
    path.write_bytes(docpat(extension="cli", ins=OTHER))
    code = cli.main(["submit", str(path), "--url", hub.url, "--token", "t-me"])
    out = capsys.readouterr().out
    assert code == 1 and f"{path}: refused" in out and "[write.own-record]" in out
    code = cli.main(["submit", str(path), "--json", "--url", hub.url, "--token", "t-insurer"])
    row = json.loads(capsys.readouterr().out)
    assert code == 1 and row["status"] == "refused" and row["findings"][0]["rule"] == "write.role"


def drop_and_wait(hub: RunningHub, name: str, body: bytes) -> Path:
    """Put `body` in the drop's incoming/ and wait until it is in done/ or failed/; that folder."""
    drop = hub.hub.settings.filedrop_dir
    assert drop is not None
    (drop / "incoming" / f"{name}.part").write_bytes(body)
    (drop / "incoming" / f"{name}.part").rename(drop / "incoming" / name)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for folder in (drop / "done", drop / "failed"):
            if (folder / name).exists():
                return folder
        time.sleep(0.05)
    raise AssertionError(f"{name} was not settled within 30 s")


def test_the_file_drop_writes_as_its_producer(settings: Settings) -> None:
    with running_hub(replace(settings, filedrop_producer="lab-1"), filedrop=True) as running:
        hub = with_roster(running)
        folder = drop_and_wait(hub, "lab.xml", cda(extension="drop-ok"))
        result = json.loads((folder / "lab.xml.result.json").read_text())
        assert folder.name == "done" and result["status"] == "indexed" and result["producer"] == "lab-1"


def test_a_file_drop_configured_with_a_non_producer_identity_refuses_every_file(settings: Settings) -> None:
    with running_hub(replace(settings, filedrop_producer="me"), filedrop=True) as running:  # a patient
        hub = with_roster(running)
        bus, before = Published(hub), objects(hub)
        folder = drop_and_wait(hub, "mine.xml", docpat(extension="drop-patient"))
        reason = json.loads((folder / "mine.xml.reason.json").read_text())
        assert folder.name == "failed" and reason["rule"] == "write.role" and reason["message_fr"]
        assert objects(hub) == before and submission_rows(hub) == 0 and bus.envelopes == []
        assert refusals(hub, ME) == [("patient", ME, "write.role")]
