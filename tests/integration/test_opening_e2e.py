"""Opening a record (issue 12), over HTTP against a whole hub on the production stack (RabbitMQ, SeaweedFS,
PostgreSQL) with a real SMTP smart host on loopback: a profile opened automatically is `opened`, can be
claimed with a code its holder asks for (INS + Vitale serial, by e-mail, SMS or letter) and only then is
`active`; one answer for every failure of activation, opposition and code request (a lockout alike for
known and unknown INS); Corsican INS; the contact addresses the patient gives and changes (confirmed by
a code sent to the new address); e-mails carry the legal notice; no code stays in the notices table once
printed or sent (read back from the database)."""

from __future__ import annotations

import email.message
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from config.settings import Settings
from hub.auth import token_sha256
from hub.credentials import Credential
from meshub import cli
from storage.sql.notifications import notices as notices_table
from tests import builders
from tests.integration.hub_harness import ADMIN_TOKEN, CREDENTIALS, RunningHub, running_hub
from tests.integration.test_intake_e2e import submit, variant
from tests.integration.test_lifecycle_e2e import later
from tests.integration.test_notifications_e2e import MINIMAL, body_text, mails, no_quiet_hours, notify_settings
from tests.services import eventually, missing
from tests.smtp_sink import Running, Sink, start_sink

pytestmark = pytest.mark.integration
OPENED = builders.with_key("2790375123456")    # created now, opened automatically after 6 weeks
CORSE = builders.with_key("185022A123456")     # a Corsican INS (2A), created
ACTIVE = builders.TEST_INS                     # active, with its own patient credential
OPPOSED = builders.with_key("1790375123457")
CLOSED = builders.with_key("1790375123458")
LOCKED = builders.with_key("2790375123459")    # created; someone guesses codes for it
UNKNOWN = builders.with_key("1990199123456")   # no profile
UNKNOWN_2 = builders.with_key("1990199123457")
VITALE = {OPENED: "80250123456789", CORSE: "80250222222222", ACTIVE: "80250111111111", OPPOSED: "80250333333333",
          CLOSED: "80250444444444", LOCKED: "80250555555555"}
STATUS = {OPENED: "created", CORSE: "created", ACTIVE: "active", OPPOSED: "opposed", CLOSED: "closed",
          LOCKED: "created"}
GIVEN = {OPENED: "Dominique", CORSE: "Ghjuvanni", ACTIVE: "Jeanne", OPPOSED: "Paul", CLOSED: "Marc", LOCKED: "Lea"}
HEADER = builders.ROSTER_HEADER.rstrip("\n") + ",vitale_serial\n"
PATIENT = Credential("p", "patient", token_sha256("t-patient"), ins=ACTIVE)
OTHER = Credential("q", "patient", token_sha256("t-other"), ins=OPPOSED)
LEGAL = "monespacesante.fr/protection-donnees-personnelles"
CODE = re.compile(r"\b[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}\b")


def roster_line(ins: str) -> str:
    mail = f"{GIVEN[ins].lower()}@insurer.example.org"
    oid = builders.TEST_OID
    return (f"{ins},{oid},TEST,{GIVEN[ins]},1979-03-28,F,51215,{mail},+33611111111,"
            f"\"28 avenue de Breteuil, 75007 PARIS\",{STATUS[ins]},{VITALE[ins]}\n")


@pytest.fixture
def sink() -> Iterator[Running]:
    yield from start_sink(Sink())


@pytest.fixture
def hub(stack_settings: Settings, sink: Running) -> Iterator[RunningHub]:
    settings = replace(notify_settings(stack_settings, sink.port, digest_window_s=1),
                       credentials=(*CREDENTIALS, PATIENT, OTHER))
    with running_hub(settings) as running:
        with running.admin() as admin:
            response = admin.post("/v1/patients/import", content=HEADER + "".join(roster_line(i) for i in STATUS))
            assert response.status_code == 200, response.text
        yield running


def mail_to(sink: Running, address: str) -> list[email.message.EmailMessage]:
    return [m for m in mails(sink) if m["To"] == address]


def code_rows(hub: RunningHub, ins: str) -> list[dict[str, Any]]:
    """The notices table as stored: every notice about `ins`, with its code column."""
    query = sa.select(notices_table.c.kind, notices_table.c.channel, notices_table.c.state,
                      notices_table.c.code).where(notices_table.c.about_ins == ins).order_by(notices_table.c.seq)
    with hub.hub.index.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def activation(ins: str, code: str = "AAAA-BBBB-CCCC", vitale: str | None = None, **extra: str) -> dict[str, str]:
    return {"ins": ins, "code": code, "vitale_serial": vitale or VITALE.get(ins, "80250999999999"), **extra}


def test_an_opened_profile_is_claimed_with_a_requested_code_and_only_then_is_active(hub: RunningHub,
                                                                                   sink: Running) -> None:
    no_quiet_hours(hub, OPENED)
    assert later(hub, timedelta(weeks=6, minutes=1))["lifecycle"]["opened"] >= 1
    with hub.admin() as admin:
        state = admin.get(f"/v1/patients/{OPENED}/profile").json()
    assert (state["status"], state["activation"]) == ("opened", "automatic")

    # An opened record is open: intake files into it; it is told like a never-activated one (e-mail only).
    assert submit(hub, variant(MINIMAL, extension="OPENED-1", ins=OPENED))["status"] == "indexed"
    insurer_mail = "dominique@insurer.example.org"
    [told] = eventually(lambda: mail_to(sink, insurer_mail), what="the new-document e-mail")
    assert LEGAL in body_text(told) and "traitement de données" in body_text(told)
    channels = {r["channel"] for r in code_rows(hub, OPENED) if r["kind"] == "new_document"}
    assert channels == {"email"}  # the `created` row: no in-app centre, no push

    with hub.client("nobody") as person:
        dead = person.post("/v1/activation", json=activation(OPENED))          # the letter's code died
        stranger = person.post("/v1/activation", json=activation(UNKNOWN))
        assert dead.status_code == stranger.status_code == 403 and dead.json() == stranger.json()
        asked = [person.post("/v1/activation/code-request", json=body) for body in (
            {"ins": OPENED, "vitale_serial": "80250000000000", "channel": "email"},   # wrong serial
            {"ins": UNKNOWN, "vitale_serial": VITALE[OPENED], "channel": "email"},    # no profile
            {"ins": ACTIVE, "vitale_serial": VITALE[ACTIVE], "channel": "email"},     # active: needs none
            {"ins": OPENED, "vitale_serial": VITALE[OPENED], "channel": "email"})]    # the holder
        assert {a.status_code for a in asked} == {202} and len({a.text for a in asked}) == 1
        [sent] = eventually(lambda: [m for m in mail_to(sink, insurer_mail) if CODE.search(body_text(m))],
                            what="the code by e-mail")
        text = body_text(sent)
        code = CODE.findall(text)[0]
        assert LEGAL in text and OPENED not in text and "Dominique" not in text
        eventually(lambda: [r for r in code_rows(hub, OPENED) if r["kind"] == "activation_code"
                            and r["channel"] == "email" and r["state"] == "sent"], what="the code's notice sent")
        # erased once the channel took it; the roster's letter, never printed, was withdrawn at the opening
        assert [(r["channel"], r["state"], r["code"]) for r in code_rows(hub, OPENED)
                if r["kind"] == "activation_code"] == [("postal", "failed", ""), ("email", "sent", "")]
        with hub.admin() as admin:
            assert admin.get(f"/v1/patients/{OPENED}/profile").json()["status"] == "opened"  # not yet active
        done = person.post("/v1/activation", json=activation(OPENED, code.lower(), email="Mine@Example.ORG",
                                                             phone="06 12 34 56 78"))
    assert done.status_code == 200, done.text
    answer = done.json()
    assert (answer["status"], answer["activation"]) == ("active", "code") and answer["token"]
    assert answer["activated_at"] == state["activated_at"]  # the opening stays the reimbursements' key
    assert answer["contact"] == {"email": "Mine@example.org", "phone": "+33612345678", "pending": None}

    # From now on the patient is told where they asked to be, as an active profile (in-app too).
    with hub.client(answer["token"]) as own:
        assert own.get(f"/v1/patients/{OPENED}/contact").json()["email"] == "Mine@example.org"
    assert submit(hub, variant(MINIMAL, extension="OPENED-2", ins=OPENED))["status"] == "indexed"
    [mine] = eventually(lambda: mail_to(sink, "Mine@example.org"), what="the e-mail at the patient's address")
    assert LEGAL in body_text(mine)


def pdf_text(data: bytes, tmp_path: Path) -> str:
    path = tmp_path / "letters.pdf"
    path.write_bytes(data)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True,
                          text=True).stdout


def test_a_corsican_ins_activates_and_a_printed_code_is_no_longer_in_the_database(hub: RunningHub,
                                                                                  tmp_path: Path) -> None:
    if shutil.which("pdftotext") is None:
        missing("pdftotext (poppler-utils) is not installed")
    [row] = [r for r in code_rows(hub, CORSE) if r["kind"] == "activation_code"]
    assert row["state"] == "queued" and CODE.fullmatch(row["code"])  # waiting for the print run
    with hub.admin() as admin:
        batch = admin.post("/v1/letters").json()["batch"]
        text = pdf_text(admin.get(f"/v1/letters/{batch['batch_id']}.pdf").content, tmp_path)
    pages = [p for p in text.split("\f") if GIVEN[CORSE].upper() in p.upper()]
    [code] = CODE.findall(pages[-1])
    assert code == row["code"]
    rows = code_rows(hub, CORSE)
    assert [(r["state"], r["code"]) for r in rows] == [("sent", "")]  # printed: blanked in the same UPDATE
    assert all(r["code"] == "" for ins in STATUS for r in code_rows(hub, ins))
    with hub.client("nobody") as person:
        bad_key = person.post("/v1/activation", json=activation(CORSE[:-2] + f"{(int(CORSE[-2:]) + 1) % 97:02d}",
                                                                code))
        assert bad_key.status_code == 422                                   # intake's rules: the key is wrong
        assert person.post("/v1/opposition", json=activation(builders.with_key("185022B654321"))).status_code == 403
        done = person.post("/v1/activation", json=activation(CORSE, code))
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "active" and done.json()["ins"] == CORSE


def test_every_failure_gets_one_answer_and_the_lockout_meets_known_and_unknown_ins_alike(hub: RunningHub) -> None:
    with hub.client("nobody") as person:
        activations = {ins: person.post("/v1/activation", json=activation(ins))
                       for ins in (UNKNOWN, OPENED, ACTIVE, OPPOSED, CLOSED)}
        activations["wrong-serial"] = person.post("/v1/activation", json=activation(OPENED, vitale="80250000000000"))
        oppositions = {ins: person.post("/v1/opposition", json=activation(ins))
                       for ins in (UNKNOWN, OPENED, ACTIVE, OPPOSED, CLOSED)}
        requests = {ins: person.post("/v1/activation/code-request",
                                     json={"ins": ins, "vitale_serial": "80250000000000", "channel": "sms"})
                    for ins in (UNKNOWN, OPENED, ACTIVE, OPPOSED, CLOSED)}
        for answers, status in ((activations, 403), (oppositions, 403), (requests, 202)):
            assert {a.status_code for a in answers.values()} == {status}, {k: a.text for k, a in answers.items()}
            assert len({a.content for a in answers.values()}) == 1, {k: a.text for k, a in answers.items()}
        assert activations[UNKNOWN].json()["error"]["code"] == "lifecycle.activation-refused"
        assert oppositions[UNKNOWN].content == activations[UNKNOWN].content

        known = [person.post("/v1/activation", json=activation(LOCKED)).status_code for _ in range(5)]
        unknown = [person.post("/v1/activation", json=activation(UNKNOWN_2)).status_code for _ in range(5)]
        assert known == unknown == [403, 403, 403, 403, 429]
        locked_known = person.post("/v1/opposition", json=activation(LOCKED))
        locked_unknown = person.post("/v1/activation/code-request",
                                     json={"ins": UNKNOWN_2, "vitale_serial": "80250000000000"})
        assert locked_known.status_code == locked_unknown.status_code == 429
        assert int(locked_known.headers["retry-after"]) > 0 and int(locked_unknown.headers["retry-after"]) > 0


def test_the_patient_changes_their_contact_with_a_code_sent_to_the_new_address(hub: RunningHub,
                                                                               sink: Running) -> None:
    no_quiet_hours(hub, ACTIVE)
    with hub.client("t-other") as other, hub.admin() as admin:
        for client in (other, admin):  # only the patient themself
            assert client.put(f"/v1/patients/{ACTIVE}/contact", json={"email": "x@evil.example"}).status_code == 403
            assert client.get(f"/v1/patients/{ACTIVE}/contact").status_code == 403
    with hub.client("t-patient") as own:
        assert own.put(f"/v1/patients/{ACTIVE}/contact", json={"email": "not an address"}).status_code == 422
        pending = own.put(f"/v1/patients/{ACTIVE}/contact", json={"email": "new@example.org"})
        assert pending.status_code == 202, pending.text
        assert pending.json()["pending"]["email"] == "new@example.org" and pending.json()["email"] == ""
        [check] = eventually(lambda: mail_to(sink, "new@example.org"), what="the confirmation e-mail")
        text = body_text(check)
        code = CODE.findall(text)[0]
        assert LEGAL in text and ACTIVE not in text
        eventually(lambda: all(r["code"] == "" for r in code_rows(hub, ACTIVE)), what="the sent code erased")
        # not applied yet: a new document is still told at the insurer's address
        assert submit(hub, variant(MINIMAL, extension="CONTACT-1"))["status"] == "indexed"
        eventually(lambda: mail_to(sink, "jeanne@insurer.example.org"), what="the e-mail at the old address")
        wrong = own.post(f"/v1/patients/{ACTIVE}/contact/confirm", json={"code": "AAAA-BBBB-CCCC"})
        assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "contact.code"
        done = own.post(f"/v1/patients/{ACTIVE}/contact/confirm", json={"code": code})
        assert done.status_code == 200, done.text
        assert done.json() == {"email": "new@example.org", "phone": "", "pending": None}
        assert own.post(f"/v1/patients/{ACTIVE}/contact/confirm", json={"code": code}).status_code == 403  # once
    assert submit(hub, variant(MINIMAL, extension="CONTACT-2"))["status"] == "indexed"
    told = eventually(lambda: [m for m in mail_to(sink, "new@example.org") if not CODE.search(body_text(m))],
                      what="the e-mail at the new address")
    assert LEGAL in body_text(told[0])


def test_the_cli_asks_for_a_code_and_gets_the_uniform_answer(hub: RunningHub, sink: Running,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    outputs = []
    for ins, serial in ((UNKNOWN, "80250000000000"), (LOCKED, VITALE[LOCKED])):
        code = cli.main(["patients", "request-code", ins, "--vitale", serial, "--channel", "email",
                         "--url", hub.url, "--token", ADMIN_TOKEN])
        outputs.append((code, capsys.readouterr().out))
    assert outputs[0] == outputs[1] and outputs[0][0] == 0 and "code" in outputs[0][1]
    [sent] = eventually(lambda: mail_to(sink, "lea@insurer.example.org"), what="the code by e-mail")
    assert CODE.search(body_text(sent))
