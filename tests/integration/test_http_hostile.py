"""Hostile input at the HTTP door, as an attacker would send it, on the embedded default and on the production
stack (PostgreSQL refuses what SQLite stores: a NUL, a 20-character INS): FastAPI's TestClient on the app
the hub serves (create_app(hub.api_context())), one hub per stack for the module.

Who may use which route is the access matrix's (tests/access); here: missing and garbled tokens, another
patient's INS or document in the path, the query and the body, malformed INS, control characters and
over-long strings, numbers that are not, unknown enum values, wrong content types, empty, oversize and
non-UTF-8 bodies, XML bombs, hostile roster CSV, path traversal in ids, and side routes to hidden
documents.  Every answer is the refusal a user expects (status and rule), never a 500, and a refused
write stores nothing.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from config.settings import Settings, settings_from_mapping
from connectors.inbound.http.app import create_app
from hub.auth import token_sha256
from hub.credentials import Credential
from hub.notices import Channel, EventKind, Notice, NoticeState
from hub.records import MessageRecord
from storage.sql.index import submissions
from tests import builders
from tests.access.world import AUTHOR, MEDECIN, cda, roster
from tests.fixtures_db import PG_ADMIN_URL
from tests.integration.hub_harness import (
    ADMIN_TOKEN,
    CREDENTIALS,
    PRODUCER_TOKEN,
    RunningHub,
    hub_settings,
    running_hub,
)
from tests.integration.test_intake_e2e import variant
from tests.services import free_port

pytestmark = pytest.mark.integration

A, B, MINOR, UNKNOWN, EXTRA = (builders.with_key(n) for n in (
    "1790375301001", "1790375301002", "2150375301003", "1790375301004", "1790375301008"))
SENDER = "dr.emetteur@chu.mssante.fr"
MAX_BODY = 4 * 1024 * 1024
TOKENS = {"a": "t-hostile-a", "b": "t-hostile-b", "medecin": "t-hostile-medecin", "author": "t-hostile-author",
          "insurer": "t-hostile-insurer", "admin": ADMIN_TOKEN, "producer": PRODUCER_TOKEN}
PEOPLE = (Credential("pa", "patient", token_sha256(TOKENS["a"]), ins=A),
          Credential("pb", "patient", token_sha256(TOKENS["b"]), ins=B),
          Credential("dr-m", "professional", token_sha256(TOKENS["medecin"]), idnps=MEDECIN, profession="G15_10"),
          Credential("dr-a", "professional", token_sha256(TOKENS["author"]), idnps=AUTHOR, profession="G15_10"),
          Credential("cnam", "insurer", token_sha256(TOKENS["insurer"])))
CREDENTIAL_FREE = {"/healthz", "/v1/activation", "/v1/activation/code-request", "/v1/opposition"}
BILLION_LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;'
                  b'&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><ClinicalDocument '
                  b'xmlns="urn:hl7-org:v3">&c;</ClinicalDocument>')
XXE = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
       b'<ClinicalDocument xmlns="urn:hl7-org:v3">&x;</ClinicalDocument>')
DEEP = b"<ClinicalDocument xmlns='urn:hl7-org:v3'>" + b"<a>" * 100_000 + b"</a>" * 100_000 + b"</ClinicalDocument>"


@dataclass
class Door:
    """The door of one stack, with the people and things the probes name."""

    name: str
    hub: RunningHub
    http: TestClient
    docs: dict[str, str]  # "none" | "MASQUE_PS" | "INVISIBLE_PATIENT" | "replaced" | "b" -> document id
    message: str  # a message a professional wrote to A
    report: str  # a delivery report (null reverse-path) in A's mailbox
    notice_b: str  # a notification of B's
    routes: list[tuple[str, str]]  # (method, path template) of /openapi.json

    def call(self, method: str, path: str, who: str | None = "admin", **kwargs: Any) -> httpx.Response:
        """One request as `who` (None: no Authorization); a 500 fails the test wherever it happens."""
        headers = dict(kwargs.pop("headers", {}))
        if who is not None:
            headers.setdefault("Authorization", f"Bearer {TOKENS[who]}")
        response = self.http.request(method, path, headers=headers, **kwargs)
        assert response.status_code != 500, (method, path, response.text[:300])
        return response

    def trail_size(self, ins: str) -> int:
        return len(self.hub.hub.records.audit.for_patient(ins, after_seq=0, limit=10_000))


def refusal(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The error body of a refusal with this status (and code): bilingual, and in the door's shape."""
    assert response.status_code == status, (response.status_code, response.text[:400])
    error = response.json()["error"]
    assert error["message_en"] and error["message_fr"], error
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


def filled(path: str, **values: str) -> str:
    defaults = {"ins": A, "document_id": "none", "message_id": "none", "notice_id": "none", "submission_id": "none",
                "batch_id": "none", "idnps": "810000000099", "address": f"{A}@patient.mssante.fr"}
    return re.sub(r"\{([^}]+)\}", lambda m: {**defaults, **values}[m.group(1)], path)


# -- the hub --------------------------------------------------------------------------------------------------


def _embedded(tmp: Path) -> Settings:
    settings = settings_from_mapping({"s3": {"embedded_port": free_port()}}, data_dir=tmp)
    return replace(settings, http_port=free_port(), workers=2, credentials=CREDENTIALS + PEOPLE,
                   mail=replace(settings.mail, smtp_port=0), max_body_bytes=MAX_BODY)


@pytest.fixture(scope="module", params=["embedded", "production"])
def door(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    tmp = tmp_path_factory.mktemp(f"hostile-{request.param}")
    if request.param == "embedded":
        yield from _served("embedded", _embedded(tmp))
        return
    seaweed, pg_admin = request.getfixturevalue("seaweed"), request.getfixturevalue("pg_admin")
    name = f"meshub_hostile_{uuid.uuid4().hex[:10]}"
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        base = hub_settings(tmp, bus_url=request.getfixturevalue("amqp_url"),
                            index_url=PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", s3_endpoint=seaweed.endpoint,
                            access_key=seaweed.access_key, secret_key=seaweed.secret_key,
                            bucket=f"hostile-{uuid.uuid4().hex[:10]}", prefix=f"hostile-{uuid.uuid4().hex[:10]}")
        yield from _served("production", replace(base, credentials=CREDENTIALS + PEOPLE,
                                                 mail=replace(base.mail, smtp_port=0)))
    finally:
        with pg_admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _served(name: str, settings: Settings) -> Iterator[Door]:
    with running_hub(settings) as hub, TestClient(create_app(hub.hub.api_context()),
                                                  raise_server_exceptions=False) as http:
        door = Door(name, hub, http, {}, "", "", "", [])
        _setup(door)
        yield door


def _setup(door: Door) -> None:
    lines = [(A, "1979-03-01", "active"), (B, "1979-03-01", "active"), (MINOR, "2015-03-01", "active")]
    assert door.call("POST", "/v1/patients/import", content=roster(lines)).status_code == 200
    assert door.call("PUT", f"/v1/patients/{MINOR}/representatives", json={"representatives": [A]}).is_success
    for flag in ("none", "MASQUE_PS", "INVISIBLE_PATIENT"):
        door.docs[flag] = _filed(door, cda(extension=f"h-{flag}-{uuid.uuid4().hex[:6]}", ins=A), flag)
    hidden_child = variant(cda(extension="unused", ins=A), extension=f"h-child-{uuid.uuid4().hex[:6]}",
                           replaces=door.docs["none"])
    door.docs["replacement"] = _filed(door, hidden_child, "INVISIBLE_PATIENT")
    door.docs["b"] = _filed(door, cda(extension=f"h-b-{uuid.uuid4().hex[:6]}", ins=B), "none")
    door.message, door.report = _message(door, "in", SENDER), _message(door, "notice", "")
    door.notice_b = _notice(door, B)
    paths = door.call("GET", "/openapi.json").json()["paths"]
    door.routes = [(method.upper(), path) for path, ops in paths.items() for method in ops]


def _filed(door: Door, data: bytes, flag: str) -> str:
    headers = {"Content-Type": "application/xml", **({"X-Confidentiality": flag} if flag != "none" else {})}
    accepted = door.call("POST", "/v1/documents", "producer", content=data, headers=headers)
    assert accepted.status_code == 202, accepted.text
    final = door.call("GET", f"/v1/submissions/{accepted.json()['submission']}", "producer",
                      params={"wait": 30}).json()
    assert final["status"] == "indexed", final
    return str(final["document_id"])


def _message(door: Door, direction: str, mail_from: str) -> str:
    """A message in A's mailbox as the gateway keeps it: a professional's ("in"), or a delivery report from the
    null reverse-path ("notice")."""
    address = f"{A}@patient.mssante.fr"
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = mail_from or "mailer-daemon@chu.mssante.fr", address, "Objet"
    mail["Date"], mail["Message-ID"] = format_datetime(datetime.now(UTC)), make_msgid(domain="chu.mssante.fr")
    mail.set_content("Bonjour.")
    raw = mail.as_bytes()
    ref = door.hub.hub.store.put(raw, kind="msg", content_type="message/rfc822")
    message_id = f"hostile-{uuid.uuid4().hex[:12]}"
    door.hub.hub.mailboxes.store_message(MessageRecord(
        message_id=message_id, mailbox=address, submission_id=str(uuid.uuid4()), direction=direction,
        correspondent=mail_from or str(mail["From"]), subject="Objet", rfc_message_id=str(mail["Message-ID"]),
        in_reply_to="", blob_bucket=ref.bucket, blob_key=ref.key, sha256=ref.sha256, size=ref.size,
        received_at=datetime.now(UTC)))
    return message_id


def _notice(door: Door, ins: str) -> str:
    now, notice_id = datetime.now(UTC), f"hostile-{uuid.uuid4().hex[:12]}"
    door.hub.hub.notices.add([Notice(notice_id=notice_id, event_id=f"hostile:{notice_id}", kind=EventKind.NEW_MESSAGE,
                                     ins=ins, about_ins=ins, channel=Channel.INAPP, address="",
                                     state=NoticeState.SENT, created_at=now, due_at=now, sent_at=now)])
    return notice_id


def submission_rows(door: Door) -> int:
    with door.hub.hub.index.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(submissions)).scalar_one())


# -- who is calling ---------------------------------------------------------------------------------------------

GARBLED = [{}, {"Authorization": "Bearer"}, {"Authorization": "Bearer "}, {"Authorization": "Basic dXNlcjpwYXNz"},
           {"Authorization": "Bearer " + "x" * 8000}, {"Authorization": f"Token {TOKENS['a']}"},
           {"Authorization": f"Bearer {TOKENS['a']}x"}, {"Authorization": f"Bearer {TOKENS['a'].upper()}"}]


@pytest.mark.parametrize("headers", GARBLED, ids=range(len(GARBLED)))
def test_no_token_or_a_garbled_one_is_401_on_every_route(door: Door, headers: dict[str, str]) -> None:
    for method, path in door.routes:
        if path in CREDENTIAL_FREE:
            continue
        error = refusal(door.call(method, filled(path), None, headers=headers), 401, "unauthenticated")
        assert error["message_en"].startswith("Missing or unknown bearer token"), (method, path)


def test_a_patient_reaches_no_other_patient_through_the_query_or_the_body(door: Door) -> None:
    listed = door.call("GET", f"/v1/patients/{A}/documents", "a", params={"ins": B, "patient": B}).json()
    assert door.docs["b"] not in {d["document_id"] for d in listed["documents"]}  # extra parameters change nothing
    sent = door.call("POST", f"/v1/patients/{A}/send-document", "a",
                     json={"document_id": door.docs["b"], "to": "pharmacie.centrale@pharma.mssante.fr"})
    refusal(sent, 404)
    refusal(door.call("POST", f"/v1/patients/{A}/notifications/{door.notice_b}/read", "a"), 404, "not_found")
    refusal(door.call("PATCH", f"/v1/documents/{door.docs['b']}/flags", "a", json={"masked": True}), 403,
            "access.not-own-record")
    assert door.call("GET", f"/v1/patients/{B}/notifications", "admin").json()["notifications"][0]["read_at"] is None


def test_a_patient_on_an_ins_without_a_profile_is_refused_and_writes_no_trail(door: Door) -> None:
    for method, path, who in (("GET", f"/v1/patients/{UNKNOWN}/documents", "a"),
                              ("GET", f"/v1/patients/{UNKNOWN}/messages", "a"),
                              ("GET", f"/v1/patients/{UNKNOWN}/access-settings", "medecin"),
                              ("PUT", f"/v1/patients/{UNKNOWN}/blocked/810000000099", "a")):
        assert door.call(method, path, who).status_code == 403, (method, path)
    assert door.trail_size(UNKNOWN) == 0  # no profile, no trail: nothing written under an INS nobody holds


# -- parameters -------------------------------------------------------------------------------------------------

BAD_INS = ["12345", "1" * 16, A[:13] + f"{(int(A[13:]) + 1) % 100:02d}", A[:6] + "\uff11" + A[7:],
           "17903" + "2a" + "75301001", "../../etc/passwd", "1" * 600]


@pytest.mark.parametrize("bad", BAD_INS, ids=["short", "long", "key", "fullwidth", "corsica-lower", "traversal",
                                              "huge"])
def test_a_malformed_ins_in_the_path_is_422_naming_ins_on_every_route(door: Door, bad: str) -> None:
    before = door.trail_size(A)
    for method, path in door.routes:
        if "{ins}" not in path:
            continue
        response = door.call(method, filled(path, ins=bad), "admin", json={})
        if "/" in bad:  # it does not even name a route
            refusal(response, 404, "not-found")
            continue
        error = refusal(response, 422)
        assert error["code"] in ("param.out-of-range", "param.too-long"), (method, path, error)
        assert [p["name"] for p in error["parameters"]] == ["ins"], (method, path, error)
        assert bad not in error["message_en"]  # never the value sent
    assert door.trail_size(A) == before


@pytest.mark.parametrize(("method", "path", "params", "code"), [
    ("GET", "/v1/submissions/abc%00", {}, "param.control-character"),
    ("GET", "/v1/documents/1.2.3%5E%00x", {}, "param.control-character"),
    ("GET", "/v1/documents/" + "x" * 600, {}, "param.too-long"),
    ("GET", f"/v1/patients/{A}/documents", {"category": "a\x00"}, "param.control-character"),
    ("GET", f"/v1/patients/{A}/documents", {"type": "t" * 600}, "param.too-long"),
    ("GET", f"/v1/patients/{A}/documents", {"class": "10\r\nX-Injected: 1"}, "param.control-character"),
    ("GET", "/v1/mailboxes/a%00b@patient.mssante.fr/deliveries", {}, "param.control-character"),
    ("POST", f"/v1/patients/{A}/notifications/n%00/read", {}, "param.control-character"),
    ("GET", "/v1/letters/%00.pdf", {}, "param.control-character"),
    ("GET", f"/v1/patients/{A}/messages/m%00/raw", {}, "param.control-character"),
])
def test_control_characters_and_overlong_strings_in_the_path_or_query_are_422(
        door: Door, method: str, path: str, params: dict[str, str], code: str) -> None:
    error = refusal(door.call(method, path, "admin", params=params), 422, code)
    assert error["parameters"] and "\x00" not in error["message_en"]


@pytest.mark.parametrize("query", ["limit=1.5", "limit=1e3", "limit=", "limit=0x10", "limit=%EF%BC%91",
                                   "limit=5&limit=100000", "offset=-1&limit=5", "offset=99999999999999999999"])
def test_a_page_parameter_that_is_not_a_bounded_integer_is_422(door: Door, query: str) -> None:
    response = door.call("GET", f"/v1/patients/{A}/messages?{query}", "a")
    assert refusal(response, 422, "param.out-of-range")["parameters"]


@pytest.mark.parametrize(("params", "name"), [
    ({"from": "2024-13-45"}, "from"), ({"to": "2024-02-30"}, "to"), ({"from": "٢٠٢٤-٠١-٠١"}, "from"),
    ({"from": "2025-01-02", "to": "2025-01-01"}, "from"), ({"from": "yesterday"}, "from"),
])
def test_a_date_range_is_two_calendar_days_in_order(door: Door, params: dict[str, str], name: str) -> None:
    error = refusal(door.call("GET", f"/v1/patients/{A}/documents", "a", params=params), 422, "param.out-of-range")
    assert [p["name"] for p in error["parameters"]] == [name]
    assert door.call("GET", f"/v1/patients/{A}/documents", "a",
                     params={"from": "2000-01-01", "to": "2000-01-01"}).json() == {"documents": []}


def test_unknown_enum_values_name_their_field(door: Door) -> None:
    error = refusal(door.call("GET", f"/v1/patients/{A}/notifications", "a", params={"channel": "fax"}), 422,
                    "param.out-of-range")
    assert error["parameters"][0]["name"] == "channel"
    refusal(door.call("GET", f"/v1/patients/{A}/documents", "medecin", headers={"X-Access-Mode": "god"}), 400,
            "bad-access-mode")
    body = door.call("POST", "/v1/activation/code-request", None,
                     json={"ins": A, "vitale_serial": "80250000000000", "channel": "fax"})
    assert refusal(body, 422, "body.invalid")["fields"][0]["name"] == "body.channel"
    assert body.json()["detail"][0]["loc"] == ["body", "channel"]  # FastAPI's own list, kept
    refusal(door.call("POST", "/v1/notifications/delivery-reports", json={"provider_ref": "x", "state": "lost"}),
            422, "body.invalid")


# -- bodies -----------------------------------------------------------------------------------------------------

CONTACT = f"/v1/patients/{A}/contact"


@pytest.mark.parametrize(("kwargs", "status", "code"), [
    ({"content": b'{"email": "a@example.org"}', "headers": {"Content-Type": "text/plain"}}, 422, "body.invalid"),
    ({"content": b'{"email": "a@example.org"}'}, 422, "body.invalid"),  # no Content-Type: not read as JSON
    ({"content": b"email=a@example.org", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 422,
     "body.invalid"),
    ({"content": b"", "headers": {"Content-Type": "application/json"}}, 422, "body.invalid"),
    ({"content": b'{"email": ', "headers": {"Content-Type": "application/json"}}, 422, "body.invalid"),
    ({"content": b'{"email": "\xff\xfe"}', "headers": {"Content-Type": "application/json"}}, 400, "bad-request"),
    ({"content": b"[" * 100_000, "headers": {"Content-Type": "application/json"}}, 400, "bad-request"),
    ({"json": {"email": "a" * 300}}, 422, "body.invalid"),
    ({"json": ["not", "an", "object"]}, 422, "body.invalid"),
])
def test_a_body_that_is_not_the_routes_json_is_refused_clearly(door: Door, kwargs: dict[str, Any], status: int,
                                                                code: str) -> None:
    refusal(door.call("PUT", CONTACT, "a", **kwargs), status, code)
    assert door.call("GET", CONTACT, "a").json()["pending"] is None  # nothing waits for a confirmation


def test_oversize_bodies_are_413_declared_or_streamed(door: Door) -> None:
    big_json = b'{"email": "' + b"a" * (3 * 1024 * 1024) + b'"}'
    refusal(door.call("PUT", CONTACT, "a", content=big_json, headers={"Content-Type": "application/json"}), 413,
            "body-too-large")
    streamed = door.call("PUT", CONTACT, "a", content=iter([big_json[:1024 * 1024]] * 3),
                         headers={"Content-Type": "application/json"})
    refusal(streamed, 413, "body-too-large")
    mislabelled = door.call("PUT", CONTACT, "a", content=b"x" * (MAX_BODY + 1), headers={"Content-Type": "text/plain"})
    refusal(mislabelled, 413, "body-too-large")
    batch = door.call("POST", "/v1/insurer/batches", "insurer", content=iter([b"x" * 1024 * 1024] * 5),
                      headers={"Content-Type": "text/plain"})
    refusal(batch, 413, "body-too-large")


@pytest.mark.parametrize(("path", "body", "rule"), [
    ("/v1/patients/{A}/send-document", {"document_id": "d\x00", "to": "p@pharma.mssante.fr"}, "body.document_id"),
    ("/v1/patients/{A}/send-document", {"document_id": "d", "to": "p@x\r\nBcc: z@evil.example"}, "body.to"),
    ("/v1/patients/{A}/send-document", {"document_id": "d", "to": "p@" + "x" * 400}, "body.to"),
    ("/v1/patients/{A}/send-document", {"document_id": "d" * 300, "to": "p@pharma.mssante.fr"}, "body.document_id"),
    ("/v1/notifications/delivery-reports", {"provider_ref": "r\x00", "state": "delivered"}, "body.provider_ref"),
    ("/v1/activation", {"ins": A, "code": "c" * 41, "vitale_serial": "80250000000000"}, "body.code"),
    ("/v1/activation", {"ins": "1" * 15, "code": "AAAA-BBBB", "vitale_serial": "80250000000000"}, "body.ins"),
])
def test_over_long_or_control_strings_in_bodies_are_422_naming_the_field(door: Door, path: str, body: dict[str, str],
                                                                         rule: str) -> None:
    who = {"/v1/activation": None, "/v1/notifications/delivery-reports": "admin"}.get(path, "a")
    error = refusal(door.call("POST", path.replace("{A}", A), who, json=body), 422, "body.invalid")
    assert rule in [f["name"] for f in error["fields"]], error


@pytest.mark.parametrize(("prefs", "code"), [
    ({"quiet_hours": "25:00-08:00"}, "preferences.quiet-hours"), ({"quiet_hours": "22:00-22:00"},
                                                                  "preferences.quiet-hours"),
    ({"quiet_hours": "٢٢:٠٠-٠٨:٠٠"}, "preferences.quiet-hours"), ({"quiet_hours": "22h-8h"}, "body.invalid"),
    ({"timezone": "../../../etc/passwd"}, "invalid"), ({"timezone": "Mars/Olympus"}, "invalid"),
    ({"timezone": "E" * 5000}, "body.invalid"), ({"email": "yes please"}, "body.invalid"),
])
def test_preferences_the_notifier_could_not_read_are_refused_and_not_stored(door: Door, prefs: dict[str, Any],
                                                                             code: str) -> None:
    path = f"/v1/patients/{A}/notification-preferences"
    before = door.call("GET", path, "a").json()
    refusal(door.call("PUT", path, "a", json={**before, **prefs}), 422, code)
    assert door.call("GET", path, "a").json() == before


@pytest.mark.parametrize("reps", [[A, A], [MINOR], [A[:13] + "00"], ["١" * 15], [A, B, builders.with_key(
    "1790375301005"), builders.with_key("1790375301006"), builders.with_key("1790375301007")]],
    ids=["twice", "self", "key", "arabic", "five"])
def test_legal_representatives_are_valid_distinct_ins_other_than_the_minor(door: Door, reps: list[str]) -> None:
    response = door.call("PUT", f"/v1/patients/{MINOR}/representatives", json={"representatives": reps})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] in ("representatives.invalid", "body.invalid")
    refusal(door.call("PUT", f"/v1/patients/{'1' * 20}/representatives", json={"representatives": [A]}), 422)


# -- documents, batches and rosters --------------------------------------------------------------------------------


@pytest.mark.parametrize("bomb", [BILLION_LAUGHS, XXE, DEEP, b"\xff\xfe<\x00C\x00", b"<ClinicalDocument"],
                         ids=["billion-laughs", "xxe", "deep", "utf16-garbage", "truncated"])
def test_xml_a_patient_sends_that_cannot_be_read_is_refused_at_the_door_and_stores_nothing(door: Door,
                                                                                           bomb: bytes) -> None:
    rows = submission_rows(door)
    response = door.call("POST", "/v1/documents", "a", content=bomb, headers={"Content-Type": "application/xml"})
    error = refusal(response, 403, "write.own-record")
    assert "header cannot be read" in error["message_en"] and "root:" not in response.text
    assert submission_rows(door) == rows


@pytest.mark.parametrize(("body", "media", "rule"), [
    (BILLION_LAUGHS, "application/xml", "xml.dtd-forbidden"), (XXE, "application/xml", "xml.dtd-forbidden"),
    (DEEP, "application/xml", None), (b"\xff\xfeMESHUB", "text/plain", "remb.encoding"),
    (b"", "text/plain", "remb.empty"), (b"", "application/xml", None),
])
def test_an_insurer_batch_that_cannot_be_read_is_422_and_holds_nothing(door: Door, body: bytes, media: str,
                                                                       rule: str | None) -> None:
    response = door.call("POST", "/v1/insurer/batches", "insurer", content=body, headers={"Content-Type": media})
    error = refusal(response, 422, "batch-rejected")
    if rule is not None:
        assert rule in response.text, error
    assert "root:" not in response.text


def _roster_with(cell: str, column: str = "birth_name") -> bytes:
    line = builders.roster_line(UNKNOWN).replace("TEST", cell) if column == "birth_name" else \
        builders.roster_line(UNKNOWN).replace(",51215,", f",{cell},")
    return (builders.ROSTER_HEADER + line).encode()


@pytest.mark.parametrize(("body", "found"), [
    (_roster_with("=HYPERLINK(\"http://evil.example\")"), "formula"),
    (_roster_with("+1+cmd|' /C calc'!A0"), "formula"), (_roster_with("@SUM(A1)", "birth_place"), "formula"),
    (_roster_with("-2+3"), "formula"), (_roster_with("\t=1+1"), "formula"),
    (_roster_with("A\x00B"), "control character"), (_roster_with("x" * 2000), "longer than"),
    (_roster_with("x" * 200_000), "not readable as CSV"),
    ((builders.ROSTER_HEADER + builders.roster_line(UNKNOWN) * 2).encode(), "the same INS as line 2"),
    (b"ins,oid,name\n" + UNKNOWN.encode() + b",x,y\n", "missing column"),
    (builders.ROSTER_HEADER.encode() + b"\xff\xfe" + builders.roster_line(UNKNOWN).encode(), "not UTF-8"),
    (b"", "missing column"),
    ((builders.ROSTER_HEADER + builders.roster_line(EXTRA).replace(",active", ",active,extra,cells")).encode(),
     None),
], ids=["hyperlink", "dde", "at", "minus", "tab-equals", "nul", "long-cell", "huge-cell", "duplicate",
        "columns", "utf8", "empty", "extra-cells"])
def test_a_hostile_roster_is_refused_whole_and_imports_nobody(door: Door, body: bytes, found: str | None) -> None:
    response = door.call("POST", "/v1/patients/import", content=body, headers={"Content-Type": "text/csv"})
    if found is None:  # cells past the header's columns are ignored (the roster's own rule)
        assert response.status_code == 200, response.text
        return
    error = refusal(response, 422, "roster-rejected")
    assert found in error["message_en"], error
    refusal(door.call("GET", f"/v1/patients/{UNKNOWN}/profile"), 404, "unknown-patient")


# -- ids, side routes and the framework's own answers ----------------------------------------------------------


@pytest.mark.parametrize("path", [
    "/v1/documents/..%2F..%2Fetc%2Fpasswd/content", "/v1/documents/%2E%2E/content", "/v1/letters/..%2F..%2Fsecret.pdf",
    f"/v1/patients/{A}/messages/..%2F..%2Fetc/raw", "/v1/submissions/..%2F..%2F", "/v1/documents/%FF%FE",
    "/v1/documents/..\\..\\windows", "/v1/mailboxes/..%2F..%2F/deliveries",
])
def test_path_traversal_in_an_id_finds_nothing(door: Door, path: str) -> None:
    response = door.call("GET", path, "admin")
    assert response.status_code == 404, (path, response.status_code, response.text)
    assert "root:" not in response.text and response.json()["error"]["code"]


def test_a_document_hidden_from_the_patient_is_reached_through_no_side_route(door: Door) -> None:
    hidden = door.docs["INVISIBLE_PATIENT"]
    refusal(door.call("GET", f"/v1/documents/{hidden}", "a"), 404, "unknown-document")
    refusal(door.call("GET", f"/v1/documents/{hidden}/content", "a"), 404, "unknown-document")
    refusal(door.call("POST", f"/v1/patients/{A}/send-document", "a",
                      json={"document_id": hidden, "to": "pharmacie.centrale@pharma.mssante.fr"}), 404)
    listed = door.call("GET", f"/v1/patients/{A}/documents", "a", params={"include_deprecated": "true"}).json()
    shown = {d["document_id"]: d for d in listed["documents"]}
    assert hidden not in shown and door.docs["replacement"] not in shown
    parent = shown[door.docs["none"]]  # replaced by a document the patient may not see: that link is not shown
    assert parent["replaced_by"] in (None, "") and door.docs["replacement"] not in str(listed)
    one = door.call("GET", f"/v1/documents/{door.docs['none']}", "a").json()
    assert door.docs["replacement"] not in str(one)
    assert door.docs["replacement"] in str(door.call("GET", f"/v1/documents/{door.docs['none']}", "admin").json())


def test_a_document_masked_from_professionals_is_refused_to_them_on_every_route(door: Door) -> None:
    masked = door.docs["MASQUE_PS"]
    for path in (f"/v1/documents/{masked}", f"/v1/documents/{masked}/content"):
        refusal(door.call("GET", path, "medecin"), 403, "access.masked")
    listed = door.call("GET", f"/v1/patients/{A}/documents", "medecin").json()
    assert masked not in str(listed)
    refusal(door.call("POST", f"/v1/patients/{A}/send-document", "a",
                      json={"document_id": masked, "to": "pharmacie.centrale@pharma.mssante.fr"}), 403)


def test_a_delivery_report_from_the_null_sender_files_nothing_and_opens_no_thread(door: Door) -> None:
    refusal(door.call("POST", f"/v1/patients/{A}/messages/{door.report}/file", "a"), 403, "mss.sender.untrusted")
    assert door.call("POST", f"/v1/patients/{A}/messages/{door.report}/reply", "a",
                     json={"text": "bonjour"}).status_code == 403


def test_the_frameworks_own_answers_have_the_doors_error_body(door: Door) -> None:
    refusal(door.call("GET", "/v1/no-such-route"), 404, "not-found")
    refusal(door.call("DELETE", "/v1/letters"), 405, "method-not-allowed")
    refusal(door.call("PUT", "/healthz", None), 405, "method-not-allowed")


def test_a_last_event_id_that_is_not_an_ascii_number_starts_the_stream_from_the_newest(door: Door) -> None:
    with httpx.Client(base_url=door.hub.url, timeout=10) as client, client.stream(
            "GET", f"/v1/patients/{A}/notifications/stream",
            headers={"Authorization": f"Bearer {TOKENS['a']}", "Last-Event-ID": b"\xb2\xb3"}) as stream:
        assert stream.status_code == 200
        assert next(stream.iter_bytes()).startswith(b"retry:")
    long_id = door.call("GET", f"/v1/patients/{A}/notifications/stream", "a", headers={"Last-Event-ID": "9" * 19})
    refusal(long_id, 422, "param.out-of-range")
