"""Patient notifications end to end on the production stack (RabbitMQ, SeaweedFS, PostgreSQL): a document
filed over HTTP or a mail to a patient -> policy -> e-mail through a real SMTP smart host on loopback
(aiosmtpd), in-app notification centre, postal batch as a PDF; digests, bounces falling back to the
post, a smart host down then back, and the CLI listing."""

from __future__ import annotations

import email
import email.message
import json
import re
import shutil
import smtplib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from hub.notices import Channel, EventKind, NoticeState
from meshub import cli
from pipelines.notify.core.policy import next_month
from pipelines.notify.service import french_date
from tests import builders
from tests.integration.hub_harness import ADMIN_TOKEN, RunningHub, running_hub
from tests.integration.test_intake_e2e import import_roster, submit, variant
from tests.services import eventually, free_port, missing
from tests.smtp_sink import Running, Sink, start_sink

pytestmark = pytest.mark.integration
INS = builders.TEST_INS
CREATED_INS = builders.with_key("1790399123456")
MINIMAL = (Path(__file__).parents[1] / "data" / "minimal_cda.xml").read_bytes()
TITLE = "Lettre de liaison (test)"


def roster(ins: str, *, status: str = "active", email: str = "jeanne@example.org",
           postal: str = "1 rue de Test; 75000 PARIS") -> str:
    return f"{ins},{builders.TEST_OID},TEST,Jeanne,1979-03-01,F,51215,{email},+33600000000,\"{postal}\",{status}\n"


@pytest.fixture
def sink() -> Iterator[Running]:
    yield from start_sink(Sink())


def notify_settings(settings: Settings, port: int, **changes: Any) -> Settings:
    return replace(settings, notify=replace(settings.notify, smtp_host="127.0.0.1", smtp_port=port,
                                            sender="ne-pas-repondre@mes.test", link="https://mes.test/notifications",
                                            retry_base_s=1.0, retry_max_delay_s=2.0, **changes))


@pytest.fixture
def hub(stack_settings: Settings, sink: Running) -> Iterator[RunningHub]:
    with running_hub(notify_settings(stack_settings, sink.port, digest_window_s=4)) as running:
        yield running


def no_quiet_hours(hub: RunningHub, ins: str) -> None:
    """The test must not depend on the hour it runs at: this patient has no quiet hours."""
    with hub.admin() as admin:
        response = admin.put(f"/v1/patients/{ins}/notification-preferences", json={"quiet_hours": ""})
    assert response.status_code == 200, response.text


def notices(hub: RunningHub, ins: str) -> list[dict[str, Any]]:
    with hub.admin() as admin:
        response = admin.get(f"/v1/patients/{ins}/notifications")
    assert response.status_code == 200, response.text
    return list(response.json()["notifications"])


def mails(sink: Running) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(r.content, policy=policy.default) for r in sink.sink.received]


def body_text(message: email.message.EmailMessage) -> str:
    return "\n".join(part.get_content() for part in message.walk() if part.get_content_type().startswith("text/"))


def test_active_patient_gets_one_email_and_an_inapp_notice_without_health_data(hub: RunningHub,
                                                                              sink: Running) -> None:
    import_roster(hub, roster(INS))
    no_quiet_hours(hub, INS)
    assert submit(hub, MINIMAL)["status"] == "indexed"
    eventually(lambda: sink.sink.received, what="the notification e-mail")
    [message] = mails(sink)
    assert message["To"] == "jeanne@example.org" and message["Auto-Submitted"] == "auto-generated"
    text = body_text(message)
    assert "nouveau document" in text.lower() and "https://mes.test/notifications" in text
    for secret in (TITLE, "Lettre de liaison", INS, "TEST-0001", "Jeanne", "11490-0"):
        assert secret not in text and secret not in str(message["Subject"])
    rows = notices(hub, INS)
    by_channel = {r["channel"]: r for r in rows}
    assert set(by_channel) == {"inapp", "email"}
    assert by_channel["inapp"]["state"] == "delivered" and by_channel["email"]["state"] == "sent"
    assert by_channel["email"]["provider_ref"] == message["Message-ID"]

    # The same document again is a duplicate: nothing new is announced, nothing sent twice.
    assert submit(hub, MINIMAL)["status"] == "duplicate"
    time.sleep(1.5)
    assert len(sink.sink.received) == 1 and len(notices(hub, INS)) == 2


def test_documents_within_the_digest_window_make_one_email(hub: RunningHub, sink: Running) -> None:
    import_roster(hub, roster(INS))
    no_quiet_hours(hub, INS)
    submit(hub, MINIMAL)
    eventually(lambda: sink.sink.received, what="the first e-mail")
    for n in range(3):
        assert submit(hub, variant(MINIMAL, extension=f"DIGEST-{n}"))["status"] == "indexed"
    eventually(lambda: len(sink.sink.received) >= 2, what="the digest e-mail", timeout_s=30)
    time.sleep(2)  # nothing else follows
    assert len(sink.sink.received) == 2
    digest = mails(sink)[1]
    assert digest["Subject"] == "Mon espace santé : 3 nouveautés"
    emails = [r for r in notices(hub, INS) if r["channel"] == "email"]
    assert [r["state"] for r in emails] == ["sent"] * 4
    assert len({r["batch_id"] for r in emails if r["batch_id"]}) == 1  # the three went out together
    assert len([r for r in notices(hub, INS) if r["channel"] == "inapp"]) == 4  # the centre shows each


def test_opposed_patient_is_never_notified(hub: RunningHub, sink: Running) -> None:
    import_roster(hub, roster(INS, status="opposed"))
    assert submit(hub, MINIMAL)["status"] == "rejected"
    time.sleep(1.5)
    assert notices(hub, INS) == [] and sink.sink.received == []


def test_never_activated_patient_without_email_gets_the_monthly_postal_releve(hub: RunningHub,
                                                                             sink: Running, tmp_path: Path) -> None:
    if shutil.which("pdftotext") is None:
        missing("pdftotext (poppler-utils) is needed to read the letters back")
    import_roster(hub, roster(INS, status="created", email="", postal="Jeanne TEST; 1 rue de Test; 75000 PARIS"))
    assert hub.hub.letter_run().run() is not None  # the roster's activation letter goes out at once
    assert submit(hub, MINIMAL)["status"] == "indexed"
    [postal] = eventually(lambda: [n for n in notices(hub, INS) if n["kind"] == "new_document"],
                          what="the postal notice")
    assert postal["channel"] == "postal" and postal["state"] == "queued"
    assert datetime.fromisoformat(postal["due_at"]) == next_month(datetime.fromisoformat(postal["created_at"]))
    assert hub.hub.letter_run().run() is None  # not due before the first of next month

    later = datetime.fromisoformat(postal["due_at"]) + timedelta(hours=1)
    batch = hub.hub.letter_run(clock=lambda: later).run()
    assert batch is not None and batch.letters == 1
    out = tmp_path / "letters"
    assert cli.main(["letters", "--url", hub.url, "--token", ADMIN_TOKEN, "--json", "-o", str(out)]) == 0
    pdf = out / f"{batch.batch_id}.pdf"
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert "Relevé d'activité" in text and "75000 PARIS" in text and "1 nouveau(x) document(s)" in text
    assert TITLE not in text and INS not in text
    assert [n["state"] for n in notices(hub, INS)] == ["sent", "sent"] and sink.sink.received == []


def test_bounced_email_falls_back_to_the_post(stack_settings: Settings) -> None:
    address = "nobody@example.org"
    with contextlib_sink(Sink(rcpt_script={address: ["550 5.1.1 no such mailbox"]})) as sink, \
            running_hub(notify_settings(stack_settings, sink.port)) as hub:
        import_roster(hub, roster(INS, status="created", email=address))
        no_quiet_hours(hub, INS)
        submit(hub, MINIMAL)
        rows = eventually(lambda: [r for r in notices(hub, INS) if r["channel"] == "postal"
                                   and r["kind"] == "new_document"], what="the postal fallback")
        email_row = next(r for r in notices(hub, INS) if r["channel"] == "email")
        assert email_row["state"] == "bounced" and "550" in email_row["last_error"]
        assert address not in email_row["last_error"]
        assert rows[0]["fallback_of"] == email_row["notice_id"] and rows[0]["state"] == "queued"


def test_smart_host_down_then_back_sends_exactly_once(stack_settings: Settings) -> None:
    port = free_port()  # nothing listens there yet
    with running_hub(notify_settings(stack_settings, port)) as hub:
        import_roster(hub, roster(INS))
        no_quiet_hours(hub, INS)
        submit(hub, MINIMAL)
        down = eventually(lambda: [r for r in notices(hub, INS) if r["channel"] == "email" and r["attempts"] >= 2],
                        what="two failed attempts", timeout_s=30)
        assert down[0]["state"] == "queued" and down[0]["last_error"]
        with contextlib_sink(Sink(), port=port) as sink:
            eventually(lambda: sink.sink.received, what="the e-mail once the smart host is back", timeout_s=30)
            time.sleep(3)  # the wake-ups published while it was down find the notice sent
            assert len(sink.sink.received) == 1
        [row] = [r for r in notices(hub, INS) if r["channel"] == "email"]
        assert row["state"] == "sent" and row["attempts"] >= 3


def test_mail_to_a_patient_is_announced_and_listed_by_the_cli(stack_settings: Settings, sink: Running,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    settings = replace(notify_settings(stack_settings, sink.port),
                       mail=replace(stack_settings.mail, smtp_port=free_port(), smtp_processes=1))
    with running_hub(settings, gateway=True) as hub:
        import_roster(hub, roster(INS))
        no_quiet_hours(hub, INS)
        message = email.message.EmailMessage()
        message["From"], message["To"] = "dr.test@hopital.mssante.fr", f"{INS}@patient.mssante.fr"
        message["Subject"] = "Résultats de votre bilan"
        message.set_content("Bonjour, voici vos résultats.")
        with smtplib.SMTP("127.0.0.1", settings.mail.smtp_port, timeout=30) as client:
            client.send_message(message)
        eventually(lambda: sink.sink.received, what="the new-message e-mail")
        text = body_text(mails(sink)[0])
        assert "nouveau message" in text.lower() and "bilan" not in text and "dr.test" not in text
        capsys.readouterr()
        assert cli.main(["notifications", INS, "--url", hub.url, "--token", ADMIN_TOKEN, "--json"]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert {(r["channel"], r["kind"]) for r in rows} == {("inapp", "new_message"), ("email", "new_message")}
        assert cli.main(["notifications", INS, "--url", hub.url, "--token", ADMIN_TOKEN]) == 0
        assert "new_message" in capsys.readouterr().out


def test_notice_states_in_the_store_match_the_api(hub: RunningHub, sink: Running) -> None:
    import_roster(hub, roster(INS))
    no_quiet_hours(hub, INS)
    submit(hub, MINIMAL)
    eventually(lambda: sink.sink.received, what="the e-mail")
    rows = hub.hub.notices.for_patient(INS)
    assert {(n.channel, n.kind, n.state) for n in rows} == {
        (Channel.INAPP, EventKind.NEW_DOCUMENT, NoticeState.DELIVERED),
        (Channel.EMAIL, EventKind.NEW_DOCUMENT, NoticeState.SENT)}
    # A provider's delivery report moves the e-mail on; a patient marks the in-app one read.
    email_row = next(n for n in rows if n.channel is Channel.EMAIL)
    with hub.admin() as admin:
        report = admin.post("/v1/notifications/delivery-reports",
                            json={"provider_ref": email_row.provider_ref, "state": "delivered"})
        assert report.json() == {"updated": 1}
        inapp = next(n for n in rows if n.channel is Channel.INAPP)
        assert admin.post(f"/v1/patients/{INS}/notifications/{inapp.notice_id}/read").status_code == 200
    refreshed = {n.channel: n for n in hub.hub.notices.for_patient(INS)}
    assert refreshed[Channel.EMAIL].state is NoticeState.DELIVERED
    read_at = refreshed[Channel.INAPP].read_at
    assert read_at is not None and read_at <= datetime.now(UTC)


def contextlib_sink(sink: Sink, *, port: int | None = None) -> Any:
    """start_sink as a context manager, optionally on a given port (a smart host coming back)."""
    from contextlib import contextmanager

    from tests.smtp_sink import SinkController

    @contextmanager
    def run() -> Iterator[Running]:
        if port is None:
            yield from start_sink(sink)
            return
        controller = SinkController(sink, hostname="127.0.0.1", port=port, server_hostname="sink.test")
        controller.start()
        try:
            yield Running(sink, port)
        finally:
            controller.stop()
    return run()


def test_activation_code_letter_is_printed_at_once_with_its_code_and_validity(hub: RunningHub,
                                                                              tmp_path: Path) -> None:
    if shutil.which("pdftotext") is None:
        missing("pdftotext (poppler-utils) is needed to read the letters back")
    now = datetime.now(UTC)
    import_roster(hub, roster(INS, status="created", email="", postal="1 rue de Test; 75000 PARIS"))
    [letter] = [n for n in hub.hub.notices.for_patient(INS) if n.kind is EventKind.ACTIVATION_CODE]
    assert letter.channel is Channel.POSTAL and letter.due_at == letter.created_at  # codes are not held
    import_roster(hub, roster(INS, status="created", email="", postal="1 rue de Test; 75000 PARIS"))
    assert len(hub.hub.notices.for_patient(INS)) == 1  # the roster again: no second letter
    batch = hub.hub.letter_run().run()
    assert batch is not None and batch.letters == 1
    with hub.admin() as admin:
        pdf = admin.get(f"/v1/letters/{batch.batch_id}.pdf")
        listed = admin.get(f"/v1/patients/{INS}/notifications").json()["notifications"]
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    path = tmp_path / "activation.pdf"
    path.write_bytes(pdf.content)
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert re.search(r"\b[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}\b", text)  # the provisional code
    assert f"valable jusqu'au {french_date(now + timedelta(weeks=6))}" in text
    assert listed[0]["state"] == "sent" and "code" not in listed[0]  # the API never shows the code
