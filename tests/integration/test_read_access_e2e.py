"""Who may READ a profile, over HTTP on the production stack (RabbitMQ, SeaweedFS, PostgreSQL): the read
table (pipelines.record.core.read_rules) on every read route: the insurer reads no health data (403 `read.role`),
a closed profile's content is 404 for everyone, admin included (who keeps the profile's state, the trail
and delivery states, each read traced), the trail as a viewer is shown it (redacted entries, the stored
chain still verifying), and send-document through the same access decision as reading the document."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from config.settings import Settings
from hub.auth import token_sha256
from hub.credentials import Credential
from hub.intake import new_submission_id
from hub.records import MessageRecord
from meshub import cli
from tests import builders
from tests.integration.hub_harness import ADMIN_TOKEN, CREDENTIALS, RunningHub, running_hub
from tests.integration.test_record_access_e2e import (
    DOCTOR,
    MINOR,
    OTHER,
    PARENT,
    PATIENT,
    PEOPLE,
    as_,
    document,
    file,
    listed,
    roster_line,
)

pytestmark = pytest.mark.integration
INSURER = Credential("cnam", "insurer", token_sha256("t-insurer"))
PHARMACY = "pharmacie.centre@pharmacie.mssante.fr"


@pytest.fixture
def hub(stack_settings: Settings) -> Iterator[RunningHub]:
    settings = replace(stack_settings, credentials=(*CREDENTIALS, *PEOPLE.values(), INSURER))
    with running_hub(settings) as running:
        with running.admin() as admin:
            roster = builders.ROSTER_HEADER + "".join(roster_line(ins, born) for ins, born in (
                (PATIENT, "1979-03-01"), (OTHER, "1985-01-01"), (MINOR, "2015-03-01"), (PARENT, "1980-01-01")))
            assert admin.post("/v1/patients/import", content=roster).status_code == 200
            assert admin.put(f"/v1/patients/{MINOR}/representatives",
                             json={"representatives": [PARENT]}).status_code == 200
        yield running


def mailbox(hub: RunningHub, ins: str = PATIENT) -> str:
    return f"{ins}@{hub.hub.core.rules.patient_domain}"


def keep_message(hub: RunningHub, ins: str = PATIENT) -> str:
    """One message kept in the patient's mailbox (as the mail pipeline keeps it); its id."""
    raw = b"From: dr@hopital.mssante.fr\r\nSubject: Resultats\r\n\r\nBonjour\r\n"
    ref = hub.hub.store.put(raw, kind="msg", content_type="message/rfc822")
    submission = new_submission_id()
    message_id = f"{submission}-{ins}"
    hub.hub.mailboxes.store_message(MessageRecord(
        message_id=message_id, mailbox=mailbox(hub, ins), submission_id=submission, direction="in",
        correspondent="dr@hopital.mssante.fr", subject="Resultats", rfc_message_id=f"<{submission}@hopital>",
        in_reply_to="", blob_bucket=ref.bucket, blob_key=ref.key, sha256=ref.sha256, size=ref.size,
        received_at=datetime.now(UTC)))
    return message_id


def admin_trail(hub: RunningHub, ins: str = PATIENT) -> list[dict[str, Any]]:
    with hub.admin() as admin:
        response = admin.get(f"/v1/patients/{ins}/audit", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return list(response.json()["entries"])


def rule_of(response: httpx.Response) -> str:
    assert response.status_code == 403, (response.status_code, response.text)
    error = response.json()["error"]
    return str(error["code"])


def reads(ins: str, doc: str, message: str) -> dict[str, str]:
    """Every route that reads a part of the profile (GET), by name."""
    return {"documents": f"/v1/patients/{ins}/documents", "document": f"/v1/documents/{doc}",
            "content": f"/v1/documents/{doc}/content", "messages": f"/v1/patients/{ins}/messages",
            "message": f"/v1/patients/{ins}/messages/{message}",
            "raw": f"/v1/patients/{ins}/messages/{message}/raw",
            "notifications": f"/v1/patients/{ins}/notifications",
            "preferences": f"/v1/patients/{ins}/notification-preferences",
            "audit": f"/v1/patients/{ins}/audit", "export": f"/v1/patients/{ins}/export"}


# -- 1. the insurer reads no health data ------------------------------------------------------------


def test_the_insurer_reads_no_health_data_but_keeps_its_operator_actions(hub: RunningHub) -> None:
    doc = file(hub, document(extension="insurer-1"))
    message = keep_message(hub)
    with hub.client("t-insurer") as insurer:
        answers = {name: insurer.get(path) for name, path in reads(PATIENT, doc, message).items()}
        assert {name: rule_of(r) for name, r in answers.items()} == {name: "read.role" for name in answers}
        assert not any(PATIENT in r.text or "insurer-1" in r.text for r in answers.values())
        # an INS with no profile gets the same 403: the refusal says nothing about which INS exist
        assert rule_of(insurer.get(f"/v1/patients/{builders.with_key('1690175123456')}/export")) == "read.role"
        # what it keeps: the profile's state, and its operator actions (a new code for a created profile...)
        profile = insurer.get(f"/v1/patients/{PATIENT}/profile")
        assert profile.status_code == 200 and profile.json()["status"] == "active"
        closed = insurer.post(f"/v1/patients/{OTHER}/close")
        assert closed.status_code == 200 and closed.json()["status"] == "closed"
    refused = [e for e in admin_trail(hub) if e["outcome"] == "refused" and e["actor_kind"] == "insurer"]
    assert {e["detail"]["rule"] for e in refused} == {"read.role"}
    assert {e["detail"]["scope"] for e in refused} == {"documents", "messages", "notifications", "audit", "export"}


# -- 2. a closed profile: content 404 for everyone, admin included --------------------------------


def test_a_closed_profiles_content_is_404_for_the_admin_who_keeps_state_trail_and_deliveries(
        hub: RunningHub) -> None:
    doc = file(hub, document(extension="closed-1"))
    message = keep_message(hub)
    with hub.admin() as admin:
        before = {name: admin.get(path).status_code for name, path in reads(PATIENT, doc, message).items()}
        assert set(before.values()) == {200}, before  # an open record: the operator reads it, traced
        assert admin.post(f"/v1/patients/{PATIENT}/close").json()["status"] == "closed"
        after = {name: admin.get(path) for name, path in reads(PATIENT, doc, message).items() if name != "audit"}
        assert {name: r.status_code for name, r in after.items()} == {name: 404 for name in after}
        assert not any("closed-1" in r.text or "Resultats" in r.text for r in after.values())
        assert admin.get(f"/v1/patients/{PATIENT}/profile").json()["status"] == "closed"
        assert admin.get(f"/v1/mailboxes/{mailbox(hub)}/deliveries").status_code == 200
        assert admin.get(f"/v1/patients/{PATIENT}/audit").status_code == 200
    with as_(hub, "patient") as patient:  # the patient's own credential: the same 404s
        assert patient.get(f"/v1/patients/{PATIENT}/messages").status_code == 404
        assert patient.get(f"/v1/patients/{PATIENT}/notifications").status_code == 404
        assert patient.get(f"/v1/patients/{PATIENT}/export").status_code == 404
    closed_at = next(e["seq"] for e in admin_trail(hub) if e["action"] == "close")
    operator = [e for e in admin_trail(hub) if e["actor_kind"] == "admin" and e["seq"] > closed_at]
    refused = {e["detail"]["scope"] for e in operator if e["outcome"] == "refused"}
    assert refused == {"messages", "notifications", "documents", "export"}  # each attempt traced
    assert {e["detail"].get("rule") for e in operator if e["outcome"] == "refused"} == {"read.closed"}
    shown = {(e["action"], e["detail"].get("scope", "")) for e in operator if e["outcome"] == "ok"}
    assert {("list", "profile"), ("list", "deliveries"), ("audit_read", "")} <= shown


def test_every_operator_read_of_an_open_profile_is_traced(hub: RunningHub) -> None:
    message = keep_message(hub)
    with hub.admin() as admin:
        assert admin.get(f"/v1/patients/{PATIENT}/messages").status_code == 200
        assert admin.get(f"/v1/patients/{PATIENT}/messages/{message}/raw").status_code == 200
        assert admin.get(f"/v1/patients/{PATIENT}/notifications").status_code == 200
    operator = [(e["action"], e["target"], e["detail"].get("scope")) for e in admin_trail(hub)
                if e["actor_kind"] == "admin" and e["action"] in ("list", "read")]
    assert operator == [("list", "", "messages"), ("read", message, "messages"), ("list", "", "notifications")]


# -- 3. the trail as the viewer is shown it ---------------------------------------------------------


def test_the_patients_trail_and_export_redact_what_they_may_not_see_and_the_chain_verifies(
        hub: RunningHub, capsys: pytest.CaptureFixture[str]) -> None:
    shown_doc = file(hub, document(extension="shown-1"))
    hidden = file(hub, document(extension="annonce-2"), codes="INVISIBLE_PATIENT")
    with as_(hub, "doctor") as doctor:
        assert doctor.get(f"/v1/documents/{hidden}").status_code == 200  # a read of the hidden document
    with as_(hub, "patient") as patient:
        response = patient.get(f"/v1/patients/{PATIENT}/audit")
        exported = patient.get(f"/v1/patients/{PATIENT}/export")
    assert response.status_code == 200 and exported.status_code == 200
    entries = response.json()["entries"]
    full = {e["seq"]: e for e in admin_trail(hub)}
    about_hidden = {seq for seq, e in full.items() if e["target"] == hidden}
    assert {e["action"] for s, e in full.items() if s in about_hidden} >= {"write", "read"}
    for entry in entries:
        if entry["seq"] in about_hidden:  # redacted: its place in time only
            assert entry == {"seq": entry["seq"], "at": full[entry["seq"]]["at"],
                             "action": full[entry["seq"]]["action"], "redacted": True}
        else:
            assert entry == full[entry["seq"]] or entry["action"] == "audit_read"
    assert hidden not in response.text and "annonce-2" not in response.text
    assert any(e.get("target") == shown_doc and e["detail"].get("class") for e in entries)  # the rest stays whole
    with zipfile.ZipFile(io.BytesIO(exported.content)) as archive:
        audit = json.loads(archive.read("audit.json"))["entries"]
        assert all(hidden.encode() not in archive.read(name) for name in archive.namelist())
    assert {e["seq"] for e in audit if e.get("redacted")} >= about_hidden
    code = cli.main(["audit", "verify", "--url", hub.url, "--token", ADMIN_TOKEN])
    assert code == 0 and "intact" in capsys.readouterr().out  # the stored chain is unchanged
    code = cli.main(["audit", PATIENT, "--url", hub.url, "--token", "t-patient"])  # the patient's own view
    out = capsys.readouterr().out
    assert code == 0 and "(redacted)" in out and hidden not in out
    with as_(hub, "author") as author:  # once the author lifts the flag, the patient sees it all
        assert author.post(f"/v1/documents/{hidden}/lift-invisible").status_code == 200
    with as_(hub, "patient") as patient:
        again = patient.get(f"/v1/patients/{PATIENT}/audit").json()["entries"]
    assert not any(e.get("redacted") for e in again)


def test_a_representatives_trail_redacts_what_is_hidden_from_representatives(hub: RunningHub) -> None:
    shown_doc = file(hub, document(extension="minor-shown", ins=MINOR))
    hidden = file(hub, document(extension="minor-hidden", ins=MINOR), codes="INVISIBLE_REPRESENTANTS_LEGAUX")
    with as_(hub, "parent") as parent:
        response = parent.get(f"/v1/patients/{MINOR}/audit")
    assert response.status_code == 200
    assert hidden not in response.text and "minor-hidden" not in response.text
    entries = response.json()["entries"]
    assert [e for e in entries if e.get("redacted")] and any(e.get("target") == shown_doc for e in entries)


# -- 4. send-document through the same access decision ------------------------------------------------


def test_send_document_refuses_what_the_patient_may_not_read_with_404_and_traces_it(hub: RunningHub) -> None:
    invisible = file(hub, document(extension="send-invisible"), codes="INVISIBLE_PATIENT")
    deleted = file(hub, document(extension="send-deleted"))
    theirs = file(hub, document(extension="send-other", ins=OTHER))
    visible = file(hub, document(extension="send-visible"))
    with as_(hub, "author") as author:
        assert author.delete(f"/v1/documents/{deleted}").status_code == 200

    def send(document_id: str) -> httpx.Response:
        with as_(hub, "patient") as patient:
            return patient.post(f"/v1/patients/{PATIENT}/send-document",
                                json={"document_id": document_id, "to": PHARMACY, "text": ""})
    for document_id in (invisible, deleted, theirs):
        answer = send(document_id)
        assert answer.status_code == 404, answer.text
        assert "send-" not in answer.text
    control = send(visible)  # a document the patient may read goes on to the mail rules
    assert control.status_code != 404, control.text
    refused = {(e["target"], e["detail"]["rule"]) for e in admin_trail(hub)
               if e["outcome"] == "refused" and e["actor_id"] == PATIENT}
    assert {(invisible, "access.invisible"), (deleted, "access.deleted")} <= refused
    with hub.admin() as admin:  # nor does an admin send a document as the patient
        answer = admin.post(f"/v1/patients/{PATIENT}/send-document",
                            json={"document_id": visible, "to": PHARMACY, "text": ""})
    assert rule_of(answer) == "access.patient-only"


def test_professionals_read_documents_only(hub: RunningHub) -> None:
    doc = file(hub, document(extension="pro-1"))
    message = keep_message(hub)
    with as_(hub, "doctor") as doctor:
        assert listed(doctor) == [doc]
        for name in ("messages", "raw", "notifications", "audit", "export"):
            assert rule_of(doctor.get(reads(PATIENT, doc, message)[name])) in ("read.role", "forbidden"), name
    refused = {e["detail"]["scope"] for e in admin_trail(hub) if e["actor_id"] == DOCTOR and e["outcome"] == "refused"}
    assert refused == {"messages", "notifications", "audit", "export"}  # each refusal in the patient's trail
