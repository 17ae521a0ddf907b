"""MSSanté mail end to end on the production stack: smtplib -> SMTP gateway (STARTTLS) -> RabbitMQ ->
mail pipeline -> patient record and mailbox (PostgreSQL, SeaweedFS); patient replies and prescriptions
out through the relay (a scripted SMTP sink on loopback) or LMTP into Dovecot, read back over IMAP."""

from __future__ import annotations

import asyncio
import email
import email.message
import json
import shutil
import smtplib
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from email import policy
from pathlib import Path
from typing import Any

import aioimaplib
import httpx
import pytest
import trustme

from config.settings import ImapSource, MailSettings, ParseLimits, Settings
from hub.auth import token_sha256
from hub.credentials import Credential
from hub.envelope import BlobRef, Envelope, Source
from hub.events import DocumentSubmitted
from hub.topology import Topology
from tests import builders, mail_builders
from tests.fixtures_mail import Dovecot
from tests.integration.hub_harness import ADMIN_TOKEN, CREDENTIALS, RunningHub, hub_settings, running_hub
from tests.services import FIXTURES_CDA, eventually, free_port, missing
from tests.smtp_sink import Running, Sink, start_sink

pytestmark = pytest.mark.integration

INS = builders.TEST_INS
PATIENT = f"{INS}@patient.mssante.fr"
DOCTOR = "dr.test@hopital.mssante.fr"
PATIENT_TOKEN = "patient-token-for-tests"
OTHER_INS = builders.with_key("2800575123456")  # patient B: another active patient of the roster
INSURER_LOGIN, INSURER_TOKEN = "insurer-smtp", "insurer-smtp-token-0123456789"
CLINIC_LOGIN, CLINIC_TOKEN, CLINIC_DOMAIN = "clinic-smtp", "clinic-smtp-token-0123456789", "clinique-auth.mssante.fr"
BIO = FIXTURES_CDA / "BIO-CR-BIO_2024.01_TSH_1.xml"
EP = FIXTURES_CDA / "eP-MED-DM_2024.01_PosoStruct.xml"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def sink() -> Iterator[Running]:
    yield from start_sink(Sink())


@pytest.fixture
def pharmacy(dovecot: Dovecot) -> str:
    return f"pharma-{uuid.uuid4().hex[:12]}@{dovecot.domain}"


@pytest.fixture
def hub_inbox(dovecot: Dovecot) -> str:
    """A mailbox in Dovecot that the hub polls over IMAP ([[imap]]), for mail meant for the test patient."""
    return f"hub-in-{uuid.uuid4().hex[:12]}@{dovecot.domain}"


@pytest.fixture
def mail_limits() -> ParseLimits:
    """[mime] / [xdm] of the hub under test; a test parametrizes it to try a lower cap."""
    return ParseLimits()


@pytest.fixture
def mail_hub(tmp_path: Path, seaweed: Any, amqp_url: str, topology: Topology, pg_url: str, ca: trustme.CA,
             sink: Running, dovecot: Dovecot, pharmacy: str, hub_inbox: str,
             mail_limits: ParseLimits) -> Iterator[RunningHub]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "smtp.crt"))
    cert.private_key_pem.write_to_path(str(tmp_path / "smtp.key"))
    base = hub_settings(tmp_path, bus_url=amqp_url, index_url=pg_url, s3_endpoint=seaweed.endpoint,
                        access_key=seaweed.access_key, secret_key=seaweed.secret_key,
                        bucket=f"mail-{uuid.uuid4().hex[:10]}", prefix=topology.prefix)
    mail = MailSettings(smtp_port=free_port(), hostname="hub.test", tls_cert=tmp_path / "smtp.crt",
                        tls_key=tmp_path / "smtp.key", lmtp_host=dovecot.host, lmtp_port=dovecot.lmtp_port,
                        rules={"local_domains": [dovecot.domain], "org_mailboxes": [pharmacy],
                               "pharmacy_first_contact": [pharmacy]},
                        next_hops=({"domains": ["*"], "host": "127.0.0.1", "port": sink.port, "starttls": "off",
                                    "verify_tls": False},),
                        retry={"initial_s": 1, "max_delay_s": 2, "lifetime_s": 3600},
                        imap=(ImapSource(host=dovecot.host, port=dovecot.imap_port, user=hub_inbox,
                                         password=dovecot.password, tls=False, poll_s=1.0, recipient=PATIENT),),
                        limits=mail_limits)
    settings: Settings = replace(base, mail=mail, credentials=(
        *CREDENTIALS, Credential("patient", "patient", token_sha256(PATIENT_TOKEN), ins=INS),
        Credential(INSURER_LOGIN, "insurer", token_sha256(INSURER_TOKEN)),
        Credential(CLINIC_LOGIN, "producer", token_sha256(CLINIC_TOKEN), mail_addresses=(CLINIC_DOMAIN,))))
    with running_hub(settings, gateway=True) as hub:
        roster = builders.ROSTER_HEADER + builders.roster_line() + builders.roster_line(
            builders.with_key("1790175123456"), status="opposed") + builders.roster_line(OTHER_INS)
        hub.admin().post("/v1/patients/import", content=roster).raise_for_status()
        yield hub


def smtp_client(hub: RunningHub, ca: trustme.CA) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", hub.hub.settings.mail.smtp_port, timeout=30)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    client.starttls(context=context)
    return client


def crlf(message: bytes) -> bytes:
    """SMTP lines end in CRLF; smtplib sends bytes as given (the builders use LF)."""
    return message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def patient(hub: RunningHub) -> httpx.Client:
    return hub.client(PATIENT_TOKEN)


def test_a_discharge_letter_is_filed_in_the_record_and_kept_in_the_mailbox(mail_hub: RunningHub, ca: trustme.CA,
                                                                          sink: Running) -> None:
    # Given a hospital's MTA (no AUTH: the MX role, from a trusted MSSanté domain) asking for a success DSN
    message = crlf(mail_builders.make_mail_with_xdm([BIO.read_bytes()], to=PATIENT, from_=DOCTOR))
    with smtp_client(mail_hub, ca) as client:
        refused = client.sendmail(DOCTOR, [PATIENT], message, mail_options=["RET=HDRS", "ENVID=Lettre+2B1"],
                                  rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
    assert refused == {}
    # Then the message is in the patient's mailbox, and the CDA it carried is in the record
    messages = eventually(lambda: patient(mail_hub).get(f"/v1/patients/{INS}/messages").json()["messages"])
    assert len(messages) == 1 and messages[0]["correspondent"] == DOCTOR and messages[0]["direction"] == "in"
    assert messages[0]["attachments"] == ["IHE_XDM.ZIP"]
    [document_submission] = messages[0]["documents"]
    outcome = mail_hub.admin().get(f"/v1/submissions/{document_submission}", params={"wait": 30}).json()
    assert (outcome["status"], outcome["category"]) == ("indexed", "BIOLOGIE")
    listed = mail_hub.admin().get(f"/v1/patients/{INS}/documents").json()["documents"]
    assert [d["document_id"] for d in listed] == [outcome["document_id"]]
    # And the sender gets the delivery report it asked for, from the null sender, with its ENVID
    dsn = eventually(lambda: [r for r in sink.sink.received if r.mail_from in ("", "<>")])[0]
    assert dsn.rcpt_tos == [DOCTOR]
    report = email.message_from_bytes(dsn.content, policy=policy.default)
    assert report.get_content_type() == "multipart/report"
    assert b"Action: delivered" in dsn.content and b"Original-Envelope-Id: Lettre+1" in dsn.content
    # And reading the message marks it read, and its raw bytes are the ones sent
    read = patient(mail_hub).get(f"/v1/patients/{INS}/messages/{messages[0]['message_id']}").json()
    assert read["read_at"] is not None
    raw = patient(mail_hub).get(f"/v1/patients/{INS}/messages/{messages[0]['message_id']}/raw")
    assert raw.content.endswith(message)  # as sent, after the gateway's Received: trace header


@pytest.mark.parametrize(("address", "code", "status"), [
    (f"{builders.with_key('1790175123456')}@patient.mssante.fr", 550, b"5.7.1"),  # opposed patient
    (f"{builders.with_key('2790175123456')}@patient.mssante.fr", 550, b"5.1.1"),  # unknown patient
    ("27903512151898900000@patient.mssante.fr", 553, b"5.1.3"),                    # 20 digits, not an INS
    (f"{INS[:13]}00@patient.mssante.fr", 553, b"5.1.3"),                           # wrong key
    ("someone@example.org", 554, b"5.7.1"),                                        # relay without AUTH
])
def test_recipients_are_refused_at_rcpt_with_a_specific_code(mail_hub: RunningHub, ca: trustme.CA, address: str,
                                                             code: int, status: bytes) -> None:
    with smtp_client(mail_hub, ca) as client:
        client.ehlo()
        client.mail(DOCTOR)
        got_code, text = client.rcpt(address)
    assert got_code == code and text.startswith(status) and INS.encode() not in text


def test_a_sender_outside_the_trust_list_is_refused_without_auth(mail_hub: RunningHub, ca: trustme.CA) -> None:
    with smtp_client(mail_hub, ca) as client:
        client.ehlo()
        code, text = client.mail("someone@gmail.com")
    assert code == 550 and text.startswith(b"5.7.1")


def _plain_mail(sender: str, to: str, headers: dict[str, str]) -> bytes:
    msg = email.message.EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, "Rendez-vous"
    for name, value in headers.items():
        msg[name] = value
    msg.set_content("Bonjour,\nvotre rendez-vous est confirmé.\n")
    return msg.as_bytes()


def _professional_writes(hub: RunningHub, ca: trustme.CA, sender: str, *, closing: bool) -> dict[str, Any]:
    headers = {"X-MSS-MES": "FIN", "Message-ID": f"<{uuid.uuid4().hex}@x>"} if closing else \
        {"Message-ID": f"<{uuid.uuid4().hex}@x>"}
    message = crlf(_plain_mail(sender, PATIENT, headers))
    with smtp_client(hub, ca) as client:
        client.sendmail(sender, [PATIENT], message)

    def arrived() -> list[dict[str, Any]]:
        rows = patient(hub).get(f"/v1/patients/{INS}/messages").json()["messages"]
        return [m for m in rows if m["correspondent"] == sender]
    return dict(eventually(arrived)[0])


def test_a_patient_replies_only_to_who_wrote_first_and_did_not_close(mail_hub: RunningHub, ca: trustme.CA,
                                                                      sink: Running) -> None:
    closed = _professional_writes(mail_hub, ca, "dr.closed@clinique.mssante.fr", closing=True)
    open_ = _professional_writes(mail_hub, ca, "dr.open@clinique.mssante.fr", closing=False)
    # A reply in a thread the professional closed (X-MSS-MES: FIN) is refused, with the rule
    refused = patient(mail_hub).post(f"/v1/patients/{INS}/messages/{closed['message_id']}/reply",
                                     json={"text": "Merci"})
    assert refused.status_code == 403 and refused.json()["error"]["finding"]["rule"] == "mss.reply.closed"
    # A reply to the professional who wrote and left the exchange open goes out through the relay
    accepted = patient(mail_hub).post(f"/v1/patients/{INS}/messages/{open_['message_id']}/reply",
                                      json={"text": "Merci docteur"})
    assert accepted.status_code == 202
    delivered = eventually(lambda: [r for r in sink.sink.received if "dr.open@clinique.mssante.fr" in r.rcpt_tos])
    reply = email.message_from_bytes(delivered[0].content, policy=policy.default)
    assert reply["From"] == PATIENT and reply["In-Reply-To"] and reply["Subject"].startswith("Re:")
    # And the patient's own mailbox keeps the sent copy
    sent = patient(mail_hub).get(f"/v1/patients/{INS}/messages").json()["messages"]
    assert any(m["direction"] == "out" and m["correspondent"] == "dr.open@clinique.mssante.fr" for m in sent)
    # Another patient's token, or none, reads nothing of this mailbox
    assert mail_hub.client().get(f"/v1/patients/{INS}/messages").status_code == 403


def test_deferred_delivery_is_retried_and_a_permanent_failure_returns_a_dsn(mail_hub: RunningHub, ca: trustme.CA,
                                                                           sink: Running) -> None:
    busy, gone = "dr.busy@clinique.mssante.fr", "dr.gone@clinique.mssante.fr"
    sink.sink.rcpt_script = {busy: ["451 4.3.0 try again later"], gone: ["550 5.1.1 no such user"]}
    busy_msg = _professional_writes(mail_hub, ca, busy, closing=False)
    gone_msg = _professional_writes(mail_hub, ca, gone, closing=False)
    for msg in (busy_msg, gone_msg):
        patient(mail_hub).post(f"/v1/patients/{INS}/messages/{msg['message_id']}/reply",
                               json={"text": "Bonjour"}).raise_for_status()
    # 4xx first, then accepted on the retry
    eventually(lambda: [r for r in sink.sink.received if busy in r.rcpt_tos])

    def states(address: str) -> list[dict[str, Any]]:
        return list(mail_hub.admin().get(f"/v1/mailboxes/{address}/deliveries").json()["deliveries"])
    assert eventually(lambda: [d for d in states(busy) if d["state"] == "delivered"])[0]["attempts"] == 2
    # 5xx: bounced, and the DSN comes back to the sender: the patient's own mailbox
    assert eventually(lambda: [d for d in states(gone) if d["state"] == "bounced"])[0]["last_reply"].startswith("550")

    def bounce() -> list[dict[str, Any]]:
        rows = patient(mail_hub).get(f"/v1/patients/{INS}/messages").json()["messages"]
        return [m for m in rows if m["direction"] == "notice"]
    [notice] = eventually(bounce)
    assert notice["subject"].startswith("Message non distribu") and notice["correspondent"].startswith("mailer-daemon@")
    raw = patient(mail_hub).get(f"/v1/patients/{INS}/messages/{notice['message_id']}/raw").content
    assert b"Action: failed" in raw and b"550 5.1.1" in raw


def test_a_prescription_reaches_the_pharmacy_mailbox_in_dovecot_with_its_qr_code(
        mail_hub: RunningHub, dovecot: Dovecot, pharmacy: str, tmp_path: Path) -> None:
    zbarimg = shutil.which("zbarimg")
    if zbarimg is None:
        missing("zbarimg (Debian zbar-tools) is needed to decode the QR code")
    submitted = mail_hub.client().post("/v1/documents", content=EP.read_bytes(),
                                       headers={"Content-Type": "application/xml"}).json()
    outcome = mail_hub.client().get(f"/v1/submissions/{submitted['submission']}", params={"wait": 30}).json()
    assert outcome["status"] == "indexed", outcome
    # The patient sends it to the pharmacy of their choice (first contact allowed for this pharmacy)
    sent = patient(mail_hub).post(f"/v1/patients/{INS}/send-document",
                                  json={"document_id": outcome["document_id"], "to": pharmacy, "text": "Bonjour"})
    assert sent.status_code == 202, sent.text
    eventually(lambda: [d for d in mail_hub.admin().get(f"/v1/mailboxes/{pharmacy}/deliveries").json()[
        "deliveries"] if d["state"] == "delivered"])
    # An operator sees the delivery with the CLI
    shown = subprocess.run([sys.executable, "-m", "meshub.cli", "mailbox", pharmacy, "--json", "--url", mail_hub.url,
                            "--token", ADMIN_TOKEN], capture_output=True, text=True, timeout=60, check=True)
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [(r["state"], r["route"]) for r in rows] == [("delivered", "local-org")]
    # The pharmacy reads it with an IMAP client: the CDA and a QR code that decodes to the prescription number
    raw = asyncio.run(_fetch_first(dovecot, pharmacy))
    message = email.message_from_bytes(raw, policy=policy.default)
    parts = {part.get_filename(): part.get_content() for part in message.iter_attachments()}
    assert any(name.endswith(".xml") for name in parts) and parts["prescription-qr.png"]
    (tmp_path / "qr.png").write_bytes(parts["prescription-qr.png"])
    decoded = subprocess.run([zbarimg, "-q", "--raw", str(tmp_path / "qr.png")], capture_output=True, text=True)
    assert decoded.stdout.strip() == "01S2TBPZ2JCNZZYGHZ"
    assert "01S2TBPZ2JCNZZYGHZ" in message.get_body(preferencelist=("plain",)).get_content()
    # A document cannot be sent to someone who never wrote (not a listed pharmacy)
    refused = patient(mail_hub).post(f"/v1/patients/{INS}/send-document", json={
        "document_id": outcome["document_id"], "to": "inconnu@clinique.mssante.fr", "text": ""})
    assert refused.status_code == 403 and refused.json()["error"]["finding"]["rule"] == "mss.reply.not-initiated"


def test_a_document_invisible_to_the_patient_is_never_sent_to_the_pharmacy(mail_hub: RunningHub,
                                                                          pharmacy: str) -> None:
    submitted = mail_hub.client().post("/v1/documents", content=EP.read_bytes(), headers={
        "Content-Type": "application/xml", "X-Confidentiality": "INVISIBLE_PATIENT"}).json()
    outcome = mail_hub.client().get(f"/v1/submissions/{submitted['submission']}", params={"wait": 30}).json()
    assert outcome["status"] == "indexed", outcome
    sent = patient(mail_hub).post(f"/v1/patients/{INS}/send-document",
                                  json={"document_id": outcome["document_id"], "to": pharmacy, "text": ""})
    assert sent.status_code == 404, sent.text  # as reading it: the patient must not learn it exists
    time.sleep(1.0)
    assert mail_hub.admin().get(f"/v1/mailboxes/{pharmacy}/deliveries").json()["deliveries"] == []
    trail = mail_hub.admin().get(f"/v1/patients/{INS}/audit").json()["entries"]
    assert ("refused", "access.invisible") in {(e["outcome"], e["detail"].get("rule")) for e in trail
                                               if e["target"] == outcome["document_id"]}


async def _fetch_first(dovecot: Dovecot, address: str) -> bytes:
    client = aioimaplib.IMAP4(host=dovecot.host, port=dovecot.imap_port, timeout=10)
    await client.wait_hello_from_server()
    await client.login(address, dovecot.password)
    await client.select("INBOX")
    response = await client.fetch("1", "(RFC822)")
    await client.logout()
    return bytes(next(line for line in response.lines if isinstance(line, bytearray | bytes) and len(line) > 200))


def _bomb_xdm() -> bytes:
    payload, crc = mail_builders.deflated_zeros(1024)  # 1 GiB of zeros in about 1 MiB
    return mail_builders.make_raw_zip([mail_builders.RawMember("IHE_XDM/SUBSET01/DOC0001.XML", payload, crc, 1 << 30)])


def _xxe_xdm() -> bytes:
    metadata = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                b'<r>&x;</r>')
    return mail_builders.make_xdm_zip([BIO.read_bytes()], metadata=metadata)


@pytest.mark.parametrize(("name", "xdm", "rule"), [
    ("corrupt", b"PK\x03\x04 this is not a zip", "xdm.corrupt"),
    ("bomb", _bomb_xdm(), "xdm.bomb"),
    ("xxe", _xxe_xdm(), "xdm.metadata-unsafe"),
])
def test_a_hostile_or_broken_xdm_files_nothing_but_keeps_the_message_and_tells_the_sender(
        mail_hub: RunningHub, ca: trustme.CA, sink: Running, name: str, xdm: bytes, rule: str) -> None:
    sender = f"dr.{name}@hopital.mssante.fr"
    message = crlf(mail_builders.make_mail_with_xdm([], to=PATIENT, from_=sender, xdm=xdm, headers={
        "Disposition-Notification-To": sender, "Message-ID": f"<{uuid.uuid4().hex}@hopital.mssante.fr>"}))
    with smtp_client(mail_hub, ca) as client:
        client.sendmail(sender, [PATIENT], message)
    # The patient still gets the message; nothing reached the record
    kept = eventually(lambda: [m for m in patient(mail_hub).get(f"/v1/patients/{INS}/messages").json()["messages"]
                               if m["correspondent"] == sender])
    assert kept[0]["documents"] == []
    assert mail_hub.admin().get(f"/v1/patients/{INS}/documents").json()["documents"] == []
    # The sender gets the MSSanté integration-error receipt naming the rule
    receipt = eventually(lambda: [r for r in sink.sink.received if r.rcpt_tos == [sender]])[0]
    parsed = email.message_from_bytes(receipt.content, policy=policy.default)
    assert parsed["Subject"].startswith("[KO Int") and f"^{rule}".encode() in receipt.content
    assert b"processed/Error" in receipt.content


def test_read_receipts_are_sent_when_asked_for(mail_hub: RunningHub, ca: trustme.CA, sink: Running) -> None:
    sender = "dr.receipt@hopital.mssante.fr"
    message = crlf(mail_builders.make_mail_with_xdm([BIO.read_bytes()], to=PATIENT, from_=sender, headers={
        "Disposition-Notification-To": sender, "Message-ID": "<receipt-1@hopital.mssante.fr>"}))
    with smtp_client(mail_hub, ca) as client:
        client.sendmail(sender, [PATIENT], message)
    [kept] = eventually(lambda: [m for m in patient(mail_hub).get(f"/v1/patients/{INS}/messages").json()["messages"]
                                 if m["correspondent"] == sender])

    def receipts() -> list[bytes]:
        return [r.content for r in sink.sink.received if r.rcpt_tos == [sender] and r.mail_from in ("", "<>")]
    processed = eventually(receipts)
    assert b"; processed" in processed[0] and b"Original-Message-ID: <receipt-1@hopital.mssante.fr>" in processed[0]
    # The first reading sends "displayed"; a second reading sends nothing more
    for _ in range(2):
        patient(mail_hub).get(f"/v1/patients/{INS}/messages/{kept['message_id']}").raise_for_status()
    displayed = eventually(lambda: [c for c in receipts() if b"displayed" in c])
    time.sleep(1.0)
    assert len(displayed) == 1 and len([c for c in receipts() if b"displayed" in c]) == 1


def test_unreadable_mime_is_rejected_and_bounced_with_the_rule(mail_hub: RunningHub, ca: trustme.CA,
                                                              sink: Running) -> None:
    sender = "dr.mime@hopital.mssante.fr"
    nested = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(100))
    message = (f"From: {sender}\r\nTo: {PATIENT}\r\nSubject: x\r\nMIME-Version: 1.0\r\n").encode() + nested
    with smtp_client(mail_hub, ca) as client:
        client.sendmail(sender, [PATIENT], message)
    bounce = eventually(lambda: [r for r in sink.sink.received if r.rcpt_tos == [sender]])[0]
    assert b"Action: failed" in bounce.content and b"mime.too-many-parts" in bounce.content
    assert patient(mail_hub).get(f"/v1/patients/{INS}/messages").json()["messages"] == []


def test_mail_polled_over_imap_is_filed_and_flagged_seen(mail_hub: RunningHub, dovecot: Dovecot,
                                                         hub_inbox: str) -> None:
    # Given a message waiting in a mailbox the hub polls (delivered there by LMTP, as an MTA would)
    sender = "dr.imap@hopital.mssante.fr"
    message = crlf(mail_builders.make_mail_with_xdm([BIO.read_bytes()], to=PATIENT, from_=sender))
    with smtplib.LMTP(dovecot.host, dovecot.lmtp_port) as lmtp:
        lmtp.sendmail(sender, [hub_inbox], b"Return-Path: <" + sender.encode() + b">\r\n" + message)
    # Then it reaches the patient's mailbox and record, and is flagged \Seen only then
    [kept] = eventually(lambda: [m for m in patient(mail_hub).get(f"/v1/patients/{INS}/messages").json()[
        "messages"] if m["correspondent"] == sender])
    assert len(kept["documents"]) == 1
    assert eventually(lambda: asyncio.run(_seen(dovecot, hub_inbox)))


async def _seen(dovecot: Dovecot, address: str) -> bool:
    client = aioimaplib.IMAP4(host=dovecot.host, port=dovecot.imap_port, timeout=10)
    await client.wait_hello_from_server()
    await client.login(address, dovecot.password)
    await client.select("INBOX")
    response = await client.search("SEEN")
    await client.logout()
    return any(line.strip() for line in response.lines[:-1] if isinstance(line, bytes | bytearray)
               and line.strip() not in (b"", b"SEARCH"))


# -- integration reports: one per mail, once every document it filed is final ------------------------


def _mail_asking_for_a_receipt(sender: str, documents: list[bytes]) -> bytes:
    return crlf(mail_builders.make_mail_with_xdm(documents, to=PATIENT, from_=sender, headers={
        "Disposition-Notification-To": sender, "Message-ID": f"<{uuid.uuid4().hex}@hopital.mssante.fr>"}))


def _receipts(sink: Running, sender: str) -> list[bytes]:
    return [r.content for r in sink.sink.received if r.rcpt_tos == [sender] and r.mail_from in ("", "<>")]


def _redeliver(hub: RunningHub, submission_id: str) -> None:
    """Publish a document's envelope again, as the broker does after a worker died before its ack."""
    record = hub.hub.index.submission(submission_id)
    assert record is not None
    hub.hub.publisher.publish(DocumentSubmitted(Envelope(
        submission_id=record.submission_id, received_at=record.received_at,
        source=Source(kind=record.source_kind, producer=record.producer),
        raw=BlobRef(bucket=hub.hub.settings.store.bucket, key=record.blob_key, sha256=record.sha256,
                    size=record.size))))


def test_a_document_rejected_later_is_reported_once_with_its_rule(mail_hub: RunningHub, ca: trustme.CA,
                                                                  sink: Running) -> None:
    # Given a mail whose XDM holds a good lab report and a prescription whose INS OID is not an accepted one
    # (the patient's INS itself: a document naming another INS would be refused with the whole mail)
    sender = "dr.integration@hopital.mssante.fr"
    bad = EP.read_bytes().replace(b'root="1.2.250.1.213.1.4.10"', b'root="1.2.250.1.213.1.4.5"')
    with smtp_client(mail_hub, ca) as client:
        client.sendmail(sender, [PATIENT], _mail_asking_for_a_receipt(sender, [BIO.read_bytes(), bad]))
    # When the CDA pipeline has decided on both documents
    [kept] = eventually(lambda: [m for m in patient(mail_hub).get(f"/v1/patients/{INS}/messages").json()[
        "messages"] if m["correspondent"] == sender])
    good_id, bad_id = kept["documents"]
    outcomes = [mail_hub.admin().get(f"/v1/submissions/{s}", params={"wait": 30}).json() for s in (good_id, bad_id)]
    assert [o["status"] for o in outcomes] == ["indexed", "rejected"]
    # Then the sender gets one MDN processed/Error naming the rejected document's entry, rule and DMP code
    [receipt] = eventually(lambda: _receipts(sink, sender))
    parsed = email.message_from_bytes(receipt, policy=policy.default)
    assert parsed["Subject"].startswith("[KO Intégration système !][904]")
    assert b"processed/Error: 904^ins.oid" in receipt.replace(b"\r\n ", b" ")  # unfolded
    body = parsed.get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content()
    assert "SUBSET01#Document02 [ins.oid] (code 904)" in text and "Document01" not in text
    assert INS not in text  # the listing names entries and rules, never the patient
    # And a redelivery of both documents (a worker killed before its ack) sends nothing more
    for submission in (good_id, bad_id):
        _redeliver(mail_hub, submission)
    time.sleep(3.0)
    assert len(_receipts(sink, sender)) == 1


def test_a_mail_whose_documents_are_all_indexed_gets_one_processed_receipt(mail_hub: RunningHub, ca: trustme.CA,
                                                                         sink: Running) -> None:
    sender = "dr.all-good@hopital.mssante.fr"
    with smtp_client(mail_hub, ca) as client:
        client.sendmail(sender, [PATIENT], _mail_asking_for_a_receipt(sender, [BIO.read_bytes(), EP.read_bytes()]))
    [receipt] = eventually(lambda: _receipts(sink, sender))
    assert b"Disposition: automatic-action/MDN-sent-automatically; processed" in receipt
    assert b"processed/Error" not in receipt
    # Only once both documents were indexed
    [kept] = [m for m in patient(mail_hub).get(f"/v1/patients/{INS}/messages").json()["messages"]
              if m["correspondent"] == sender]
    statuses = [mail_hub.admin().get(f"/v1/submissions/{s}").json()["status"] for s in kept["documents"]]
    assert statuses == ["indexed", "indexed"]
    time.sleep(2.0)
    assert len(_receipts(sink, sender)) == 1


@pytest.mark.parametrize("mail_limits", [ParseLimits(xdm={"max_members": 4})])
def test_a_configured_lower_xdm_limit_takes_effect(mail_hub: RunningHub, ca: trustme.CA, sink: Running) -> None:
    # Given [xdm] max_members = 4, and an XDM of 5 members (INDEX.HTM, README.TXT, METADATA.XML, 2 documents)
    sender = "dr.limits@hopital.mssante.fr"
    with smtp_client(mail_hub, ca) as client:
        client.sendmail(sender, [PATIENT], _mail_asking_for_a_receipt(sender, [BIO.read_bytes(), EP.read_bytes()]))
    # Then nothing is filed, and the receipt names the cap's rule
    [receipt] = eventually(lambda: _receipts(sink, sender))
    assert b"processed/Error" in receipt and b"^xdm.too-many-members" in receipt
    assert mail_hub.admin().get(f"/v1/patients/{INS}/documents").json()["documents"] == []


def test_the_xdm_masking_codes_are_kept_with_the_filed_document(mail_hub: RunningHub, ca: trustme.CA) -> None:
    # Given a hospital mailing a CDA whose XDS metadata masks it from professionals (MASQUE_PS)
    xdm = mail_builders.make_xdm_zip([BIO.read_bytes()], confidentiality=("N", "MASQUE_PS"))
    message = crlf(mail_builders.make_mail_with_xdm([], to=PATIENT, from_=DOCTOR, xdm=xdm))
    with smtp_client(mail_hub, ca) as client:
        assert client.sendmail(DOCTOR, [PATIENT], message) == {}
    # Then the document in the record carries the code, so professionals other than its author do not see it
    messages = eventually(lambda: patient(mail_hub).get(f"/v1/patients/{INS}/messages").json()["messages"])
    [submission] = messages[0]["documents"]
    outcome = mail_hub.admin().get(f"/v1/submissions/{submission}", params={"wait": 30}).json()
    document = mail_hub.admin().get(f"/v1/documents/{outcome['document_id']}").json()
    assert document["confidentiality"] == ["N", "MASQUE_PS"]


# -- issue 12: only the mailbox's patient, only an identified sender, all or nothing --------------------------


def _for_other_patient(cda: bytes) -> bytes:
    """The same document, about patient B (another active patient of the roster)."""
    return cda.replace(INS.encode(), OTHER_INS.encode())


def _report_text(receipt: bytes) -> str:
    body = email.message_from_bytes(receipt, policy=policy.default).get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def _documents_of(hub: RunningHub, ins: str) -> list[dict[str, Any]]:
    return list(hub.admin().get(f"/v1/patients/{ins}/documents").json()["documents"])


def _kept_from(hub: RunningHub, sender: str) -> dict[str, Any]:
    return dict(eventually(lambda: [m for m in patient(hub).get(f"/v1/patients/{INS}/messages").json()[
        "messages"] if m["correspondent"] == sender])[0])


@pytest.mark.parametrize(("case", "patient_id"), [
    ("metadata-names-the-mailbox", f"{INS}^^^&{builders.TEST_OID}&ISO"),  # XDM metadata says A, the CDA is B's
    ("metadata-empty", ""),                                                # no patientId at all, the CDA is B's
])
def test_a_cda_for_another_patient_is_refused_904_and_reported_to_the_sender(
        mail_hub: RunningHub, ca: trustme.CA, sink: Running, case: str, patient_id: str) -> None:
    # Given a mail to patient A whose XDM carries a lab report for patient B, next to one for A
    sender = f"dr.{case}@hopital.mssante.fr"
    xdm = mail_builders.make_xdm_zip([BIO.read_bytes(), _for_other_patient(EP.read_bytes())], patient_id=patient_id)
    message = crlf(mail_builders.make_mail_with_xdm([], to=PATIENT, from_=sender, xdm=xdm, headers={
        "Disposition-Notification-To": sender, "Message-ID": f"<{uuid.uuid4().hex}@hopital.mssante.fr>"}))
    with smtp_client(mail_hub, ca) as client:
        assert client.sendmail(sender, [PATIENT], message) == {}
    # Then the message is kept in A's mailbox, and nothing reached either record
    assert _kept_from(mail_hub, sender)["documents"] == []
    [receipt] = eventually(lambda: _receipts(sink, sender))
    assert _documents_of(mail_hub, OTHER_INS) == [] and _documents_of(mail_hub, INS) == []
    # And the sender is told why, with DMP code 904, naming no patient
    assert b"processed/Error: 904^xdm.patient-mismatch" in receipt.replace(b"\r\n ", b" ")
    text = _report_text(receipt)
    assert "[xdm.patient-mismatch] (code 904)" in text and "[xdm.rejected]" in text
    assert OTHER_INS not in text and INS not in text


def test_a_null_reverse_path_carrying_documents_is_refused_at_data(mail_hub: RunningHub, ca: trustme.CA) -> None:
    # Given an unauthenticated peer sending, from the null reverse-path, a mail with an XDM for patient A
    message = crlf(mail_builders.make_mail_with_xdm([BIO.read_bytes()], to=PATIENT, from_="x@attacker.example"))
    with smtp_client(mail_hub, ca) as client:
        client.ehlo()
        assert client.mail("")[0] == 250  # reports (DSN, MDN) come from <>: the path itself is allowed
        assert client.rcpt(PATIENT)[0] == 250
        code, text = client.data(message)
    # Then DATA is refused with the rule, and nothing is kept or filed
    assert code == 550 and text.startswith(b"5.7.1") and b"mss.sender.untrusted" in text
    time.sleep(1.0)
    assert patient(mail_hub).get(f"/v1/patients/{INS}/messages").json()["messages"] == []
    assert _documents_of(mail_hub, INS) == []


def test_a_report_from_the_null_reverse_path_is_kept_as_a_notice_but_files_nothing(mail_hub: RunningHub,
                                                                                   ca: trustme.CA) -> None:
    # Given a delivery report (multipart/report) from <> that also carries an XDM for patient A
    raw = mail_builders.make_mail_with_xdm([BIO.read_bytes()], to=PATIENT, from_="mailer-daemon@relay.example")
    report = raw.replace(b"Content-Type: multipart/mixed;",
                         b"Content-Type: multipart/report; report-type=disposition-notification;", 1)
    assert report != raw
    with smtp_client(mail_hub, ca) as client:
        assert client.sendmail("", [PATIENT], crlf(report)) == {}
    # Then the patient sees it as a notice, and the record is untouched
    notice = _kept_from(mail_hub, "mailer-daemon@relay.example")
    assert (notice["direction"], notice["documents"]) == ("notice", [])
    time.sleep(2.0)
    assert _documents_of(mail_hub, INS) == []


def _hostile_members() -> list[tuple[str, dict[str, bytes]]]:
    xxe = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>')
    return [("traversal", {"../../evil.xml": b"<x/>"}),
            ("xxe-second-subset", {"IHE_XDM/SUBSET02/METADATA.XML": xxe}),
            ("bomb-member", {"IHE_XDM/SUBSET01/ZEROS.BIN": bytes(4 << 20)})]


@pytest.mark.parametrize(("name", "extra", "rule"), [(n, e, r) for (n, e), r in zip(
    _hostile_members(), ["xdm.unsafe-path", "xdm.metadata-unsafe", "xdm.bomb"], strict=True)])
def test_an_xdm_with_one_hostile_member_files_nothing_not_even_its_benign_documents(
        mail_hub: RunningHub, ca: trustme.CA, sink: Running, name: str, extra: dict[str, bytes], rule: str) -> None:
    # Given an XDM whose lab report for patient A is fine, next to one hostile member
    sender = f"dr.{name}@hopital.mssante.fr"
    xdm = mail_builders.make_xdm_zip([BIO.read_bytes()], extra_members=extra)
    message = crlf(mail_builders.make_mail_with_xdm([], to=PATIENT, from_=sender, xdm=xdm, headers={
        "Disposition-Notification-To": sender, "Message-ID": f"<{uuid.uuid4().hex}@hopital.mssante.fr>"}))
    with smtp_client(mail_hub, ca) as client:
        assert client.sendmail(sender, [PATIENT], message) == {}
    # Then nothing from that XDM is filed, and the report names the hostile member's rule and xdm.rejected
    assert _kept_from(mail_hub, sender)["documents"] == []
    [receipt] = eventually(lambda: _receipts(sink, sender))
    assert f"^{rule}".encode() in receipt and b"processed/Error" in receipt
    assert f"[{rule}]" in _report_text(receipt) and "[xdm.rejected]" in _report_text(receipt)
    assert _documents_of(mail_hub, INS) == []


def _plain_cda_mail(sender: str, cda: bytes) -> bytes:
    msg = email.message.EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, PATIENT, "Compte rendu"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@hopital.mssante.fr>"
    msg.set_content("Bonjour,\nci-joint votre compte rendu.\n")
    msg.add_attachment(cda, maintype="text", subtype="xml", filename="cr.xml")
    return crlf(msg.as_bytes())


def test_the_patient_files_a_message_only_into_their_own_record(mail_hub: RunningHub, ca: trustme.CA) -> None:
    # Given two messages in A's mailbox carrying a plain CDA attachment: one about B, one about A
    other, own = "dr.file-other@hopital.mssante.fr", "dr.file-own@hopital.mssante.fr"
    with smtp_client(mail_hub, ca) as client:
        client.sendmail(other, [PATIENT], _plain_cda_mail(other, _for_other_patient(BIO.read_bytes())))
        client.sendmail(own, [PATIENT], _plain_cda_mail(own, BIO.read_bytes()))
    about_b, about_a = _kept_from(mail_hub, other), _kept_from(mail_hub, own)
    # When A files the one about B: 403 with the rule and DMP code, nothing filed anywhere
    refused = patient(mail_hub).post(f"/v1/patients/{INS}/messages/{about_b['message_id']}/file")
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["code"] == "xdm.patient-mismatch" and error["finding"]["code"] == "904"
    # An operator files nothing into a record (admin is no feeder)
    by_admin = mail_hub.admin().post(f"/v1/patients/{INS}/messages/{about_a['message_id']}/file")
    assert by_admin.status_code == 403 and by_admin.json()["error"]["code"] == "write.role"
    time.sleep(1.0)
    assert _documents_of(mail_hub, OTHER_INS) == [] and _documents_of(mail_hub, INS) == []
    # And the one about A is filed into A's record
    filed = patient(mail_hub).post(f"/v1/patients/{INS}/messages/{about_a['message_id']}/file")
    assert filed.status_code == 202, filed.text
    [submission] = filed.json()["submissions"]
    outcome = mail_hub.admin().get(f"/v1/submissions/{submission}", params={"wait": 30}).json()
    assert outcome["status"] == "indexed"
    assert [d["document_id"] for d in _documents_of(mail_hub, INS)] == [outcome["document_id"]]


def test_filing_a_message_whose_xdm_names_no_patient_files_nothing(mail_hub: RunningHub, ca: trustme.CA) -> None:
    # Given a message whose XDM metadata has an empty patientId over B's document (refused at delivery)
    sender = "dr.file-xdm@hopital.mssante.fr"
    xdm = mail_builders.make_xdm_zip([_for_other_patient(BIO.read_bytes())], patient_id="")
    with smtp_client(mail_hub, ca) as client:
        client.sendmail(sender, [PATIENT], crlf(mail_builders.make_mail_with_xdm([], to=PATIENT, from_=sender,
                                                                                  xdm=xdm)))
    kept = _kept_from(mail_hub, sender)
    # When the patient asks to file it anyway: refused, nothing filed into B's record
    refused = patient(mail_hub).post(f"/v1/patients/{INS}/messages/{kept['message_id']}/file")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "xdm.patient-mismatch"
    time.sleep(1.0)
    assert _documents_of(mail_hub, OTHER_INS) == []


def _authenticated(hub: RunningHub, ca: trustme.CA, login: str, token: str) -> smtplib.SMTP:
    client = smtp_client(hub, ca)
    client.ehlo()
    client.login(login, token)
    return client


@pytest.mark.parametrize(("login", "token", "mail_from"), [
    (INSURER_LOGIN, INSURER_TOKEN, "dr.fake@chu.mssante.fr"),           # the insurer posing as a professional
    (CLINIC_LOGIN, CLINIC_TOKEN, "dr.fake@chu.mssante.fr"),             # a clinic posing as another establishment
    (CLINIC_LOGIN, CLINIC_TOKEN, "anyone@example.org"),                 # a relay with any MAIL FROM
    (CLINIC_LOGIN, CLINIC_TOKEN, ""),                                   # the null reverse-path is nobody's
])
def test_an_authenticated_credential_sends_only_as_its_own_addresses(mail_hub: RunningHub, ca: trustme.CA,
                                                                     login: str, token: str, mail_from: str) -> None:
    with _authenticated(mail_hub, ca, login, token) as client:
        code, text = client.mail(mail_from)
    assert code == 550 and text.startswith(b"5.7.1") and b"mss.sender.not-yours" in text


def test_a_credential_sends_as_its_own_domain_and_may_relay(mail_hub: RunningHub, ca: trustme.CA,
                                                            sink: Running) -> None:
    sender = f"secretariat@{CLINIC_DOMAIN}"
    message = crlf(_plain_mail(sender, "dr.remote@example.org", {"Message-ID": f"<{uuid.uuid4().hex}@x>"}))
    with _authenticated(mail_hub, ca, CLINIC_LOGIN, CLINIC_TOKEN) as client:
        assert client.sendmail(sender, ["dr.remote@example.org", PATIENT], message) == {}
    assert eventually(lambda: [r for r in sink.sink.received if r.rcpt_tos == ["dr.remote@example.org"]])
    assert _kept_from(mail_hub, sender)["direction"] == "in"


def test_an_operator_opening_a_message_marks_nothing_read_and_sends_no_read_receipt(
        mail_hub: RunningHub, ca: trustme.CA, sink: Running) -> None:
    sender = "dr.operator-read@hopital.mssante.fr"
    message = crlf(_plain_mail(sender, PATIENT, {"Disposition-Notification-To": sender,
                                                 "Message-ID": f"<{uuid.uuid4().hex}@hopital.mssante.fr>"}))
    with smtp_client(mail_hub, ca) as client:
        client.sendmail(sender, [PATIENT], message)
    kept = _kept_from(mail_hub, sender)

    def displayed() -> list[bytes]:
        return [c for c in _receipts(sink, sender) if b"displayed" in c]
    # When the operator opens it: the metadata, still unread, and no MDN displayed
    seen = mail_hub.admin().get(f"/v1/patients/{INS}/messages/{kept['message_id']}")
    assert seen.status_code == 200 and seen.json()["read_at"] is None
    time.sleep(2.0)
    assert displayed() == []
    assert patient(mail_hub).get(f"/v1/patients/{INS}/messages").json()["messages"][0]["read_at"] is None
    # Then the patient's own reading marks it read and sends the read receipt, once
    read = patient(mail_hub).get(f"/v1/patients/{INS}/messages/{kept['message_id']}").json()
    assert read["read_at"] is not None
    assert len(eventually(displayed)) == 1
