"""The people, records and requests of the access matrix (tests/access/matrix.toml).

Owns: the credentials of every column, the patients of every record state (an adult and a minor with
their legal representative per state, plus a fresh patient per cell of the lifecycle steps), their
flagged documents, a message and a notification per record (make_states: the ONE place that knows how
a state is made, to adapt when the lifecycle changes), and, for one cell, the request to send (path,
headers, example body) and whose trail a refusal goes to.
Does not: decide expectations (tests/access/matrix.py) or judge answers (the integration test).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from lxml import etree

from hub.auth import token_sha256
from hub.credentials import Credential
from hub.notices import Channel, EventKind, Notice, NoticeState
from hub.records import MessageRecord
from tests import builders
from tests.access.matrix import UNKNOWN, Cell, Matrix
from tests.integration.hub_harness import ADMIN_TOKEN, PRODUCER_TOKEN, RunningHub
from tests.integration.test_intake_e2e import fixture_bytes

NS = {"h": "urn:hl7-org:v3"}
BIO = "BIO-CR-BIO_2024.01_TSH_1.xml"  # biology report, typeCode 11502-2
IDNPS_ROOT = "1.2.250.1.71.4.2.1"
AUTHOR, MEDECIN, PHARMACIEN, OPTICIAN, REGULATOR = (
    "801234534765", "810000000027", "810000000050", "810000000035", "810000000043")
OUTSIDER = "810000000099"  # the professional the blocking routes block (no column of the matrix)
PHARMACY = "pharmacie.centrale@pharma.mssante.fr"
SENDER = "dr.emetteur@chu.mssante.fr"
PATIENT_DOMAIN = "patient.mssante.fr"
INSURER_TOKEN = "t-insurer"
STATIC_TOKENS = {"producer": PRODUCER_TOKEN, "admin": ADMIN_TOKEN, "insurer": INSURER_TOKEN, "author": "t-author",
                 "medecin": "t-medecin", "pharmacien": "t-pharmacien", "optician": "t-optician",
                 "regulator": "t-regulator", "stranger": "t-stranger", "representative": "t-parent"}
#: extra headers each column sends (the regulator asks in regulation mode)
HEADERS = {"regulator": {"X-Access-Mode": "regulation"}}
ADULT_BORN, MINOR_BORN = "1979-03-01", "2015-03-01"


class Numbers:
    """Distinct valid INS, adult (born 1979) or minor (born 2015)."""

    def __init__(self) -> None:
        self._n = 101000

    def adult(self) -> str:
        self._n += 1
        return builders.with_key(f"1790375{self._n:06d}")

    def minor(self) -> str:
        self._n += 1
        return builders.with_key(f"2150375{self._n:06d}")


@dataclass
class Plan:
    """Who is who: every patient the matrix reads or changes, decided before the hub starts (their
    credentials are part of its settings)."""

    matrix: Matrix
    numbers: Numbers = field(default_factory=Numbers)
    adults: dict[str, str] = field(default_factory=dict)   # state -> INS
    minors: dict[str, str] = field(default_factory=dict)   # state -> INS (the parent represents them)
    fresh: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (route, role, state) -> INS
    stranger: str = ""
    parent: str = ""
    unknown: str = ""  # a valid INS nobody imports (state "unknown")

    def __post_init__(self) -> None:
        self.stranger, self.parent, self.unknown = self.numbers.adult(), self.numbers.adult(), self.numbers.adult()
        for state in self.matrix.states:
            self.adults[state], self.minors[state] = self.numbers.adult(), self.numbers.minor()
        for route in self.matrix.routes.values():
            if route.fresh:
                for role in route.roles:
                    for state in self.matrix.states:
                        make = self.numbers.minor if role == "representative" else self.numbers.adult
                        self.fresh[(route.key, role, state)] = make()

    def credentials(self) -> tuple[Credential, ...]:
        people = [
            Credential("cnam", "insurer", token_sha256(INSURER_TOKEN)),
            Credential("dr-author", "professional", token_sha256("t-author"), idnps=AUTHOR, profession="G15_10"),
            Credential("dr-medecin", "professional", token_sha256("t-medecin"), idnps=MEDECIN, profession="G15_10",
                       specialty="SM54"),
            Credential("ph", "professional", token_sha256("t-pharmacien"), idnps=PHARMACIEN, profession="G15_21"),
            Credential("opt", "professional", token_sha256("t-optician"), idnps=OPTICIAN, profession="G15_28"),
            Credential("samu", "professional", token_sha256("t-regulator"), idnps=REGULATOR, profession="G15_10",
                       regulator=True),
            Credential("stranger", "patient", token_sha256("t-stranger"), ins=self.stranger),
            Credential("parent", "patient", token_sha256("t-parent"), ins=self.parent),
        ]
        holders = [*self.adults.values(), *(ins for (_, role, _), ins in self.fresh.items() if role == "patient")]
        people += [Credential(f"p-{ins}", "patient", token_sha256(patient_token(ins)), ins=ins) for ins in holders]
        return tuple(people)

    def target(self, cell: Cell) -> str:
        """Whose record the cell asks about (global routes: the active adult, for bodies that need one)."""
        if cell.state == UNKNOWN:
            return self.unknown
        if cell.route.fresh:
            return self.fresh[(cell.route.key, cell.role, cell.state)]
        state = cell.state if cell.state != "-" else "active"
        return self.minors[state] if cell.role == "representative" else self.adults[state]

    def minors_all(self) -> list[str]:
        return [*self.minors.values(), *(ins for (_, role, _), ins in self.fresh.items() if role == "representative")]


def patient_token(ins: str) -> str:
    return f"t-patient-{ins}"


def token_of(role: str, ins: str) -> str | None:
    if role == "anonymous":
        return None
    return patient_token(ins) if role == "patient" else STATIC_TOKENS[role]


def own_ins(plan: Plan, role: str, target: str) -> str:
    """The INS of a patient-like column's credential."""
    return {"patient": target, "stranger": plan.stranger, "representative": plan.parent}[role]


# -- documents ----------------------------------------------------------------------------------------------


def cda(*, extension: str, ins: str, author: str = AUTHOR, patient_authored: bool = False) -> bytes:
    """The ANS biology report under a new id for `ins`, written by professional `author`; or
    (`patient_authored`) a DOCPAT01 document whose author is the patient `author` (their INS)."""
    root = etree.fromstring(fixture_bytes(BIO))
    _one(root, "h:id").set("extension", extension)
    for ident in root.iterfind("h:recordTarget/h:patientRole/h:id", NS):
        if ident.get("root", "").startswith("1.2.250.1.213.1.4."):
            ident.set("extension", ins)
    for ident in root.iterfind(".//h:assignedAuthor/h:id", NS):
        if ident.get("root") == IDNPS_ROOT:
            ident.set("extension", author)
            if patient_authored:
                ident.set("root", builders.TEST_OID)
    if patient_authored:
        code = _one(root, "h:code")
        code.set("code", "DOCPAT01")
        code.set("codeSystem", "1.2.250.1.213.1.1.4.12")
        code.set("displayName", "Synthèse déposée par le patient")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _one(root: etree._Element, path: str) -> etree._Element:
    found = root.find(path, NS)
    assert found is not None, path
    return found


def roster(lines: list[tuple[str, str, str]]) -> str:
    """(INS, birth date, status) lines of the insurer's roster."""
    return builders.ROSTER_HEADER + "".join(
        f"{ins},{builders.TEST_OID},MATRICE,Camille,{born},F,75056,,,\"1 rue de la Paix, 75002 PARIS\",{status}\n"
        for ins, born, status in lines)


# -- the world ----------------------------------------------------------------------------------------------


@dataclass
class World:
    """What make_states built: ids the cells' requests name, and what could not be made as planned."""

    plan: Plan
    hub: RunningHub
    docs: dict[tuple[str, str], str] = field(default_factory=dict)   # (INS, flag) -> document id
    messages: dict[str, str] = field(default_factory=dict)           # INS -> message id
    notices: dict[str, str] = field(default_factory=dict)            # INS -> notice id
    submission: str = ""
    batch: str = "none"
    problems: list[str] = field(default_factory=list)
    counter: Iterator[int] = field(default_factory=lambda: iter(range(1, 1_000_000)))


def later(hub: RunningHub, delta: timedelta) -> dict[str, Any]:
    """One pass of the record's timers (the scheduler's sweep) with the clock `delta` ahead, then the clock back."""
    records = hub.hub.records
    original = records.clock
    records.clock = lambda: datetime.now(UTC) + delta
    try:
        lifecycle = hub.hub.lifecycle()
        return dict(records.sweep(lifecycle, hub.hub.insurer(lifecycle), full=True))
    finally:
        records.clock = original


def make_states(hub: RunningHub, plan: Plan) -> World:
    """Every patient of the plan in its state, with its documents, message and notification.

    created: roster line `created`.  opened: roster `created`, then the lifecycle's sweep 6 weeks later (the
    automatic opening; main calls the result active/automatic).  active: roster `active`.  opposed (with
    documents): `created`, documents filed, then the operator's opposition.  closed (with documents):
    `active`, documents filed, then closed by the operator.  Fresh patients of the lifecycle steps (no
    documents) take the roster's own status (`opposed`, `closed`) directly."""
    world = World(plan, hub)
    states = plan.matrix.states
    fresh = {state: [ins for (_, _, s), ins in plan.fresh.items() if s == state] for state in states}

    def born(ins: str) -> str:
        return MINOR_BORN if ins[0] == "2" and ins in plan.minors_all() else ADULT_BORN

    with hub.admin() as admin:
        # opened: imported first and opened by the sweep, before anyone else is on the roster
        opened = [plan.adults["opened"], plan.minors["opened"], *fresh["opened"]]
        _ok(admin.post("/v1/patients/import", content=roster([(i, born(i), "created") for i in opened])))
        world.problems += [] if later(hub, timedelta(weeks=6, minutes=5))["lifecycle"]["opened"] == len(opened) \
            else ["the sweep did not open every profile planned as opened"]
        first = {"created": "created", "active": "active", "opposed": "created", "closed": "active"}
        lines = [(plan.stranger, ADULT_BORN, "active"), (plan.parent, ADULT_BORN, "active")]
        for state, status in first.items():
            lines += [(plan.adults[state], ADULT_BORN, status), (plan.minors[state], MINOR_BORN, status)]
            lines += [(i, born(i), state) for i in fresh[state]]
        _ok(admin.post("/v1/patients/import", content=roster(lines)))
        for minor in plan.minors_all():
            _ok(admin.put(f"/v1/patients/{minor}/representatives", json={"representatives": [plan.parent]}))
    carrying = [*plan.adults.values(), *plan.minors.values()]
    wanted = [(ins, flag) for ins in carrying for flag in plan.matrix.flags]
    with ThreadPoolExecutor(8) as pool:  # as several producers would: the setup takes seconds, not a minute
        ids = pool.map(lambda key: file_document(world, cda(extension=f"m-{key[0]}-{key[1]}", ins=key[0]),
                                                 codes=key[1] if key[1] not in ("none", "deleted") else ""), wanted)
        world.docs.update(zip(wanted, ids, strict=True))
    for ins in carrying:
        delete_as_author(world, world.docs[(ins, "deleted")], ins)
        world.messages[ins] = put_message(hub, ins)
        world.notices[ins] = put_notice(hub, ins)
    with hub.admin() as admin:
        for state, step in (("opposed", "oppose"), ("closed", "close")):
            for ins in (plan.adults[state], plan.minors[state]):
                _ok(admin.post(f"/v1/patients/{ins}/{step}"))
        batch = admin.post("/v1/letters").json().get("batch")  # the roster's activation letters
        printed = [batch] if batch else admin.get("/v1/letters").json().get("batches", [])
        world.batch = printed[0]["batch_id"] if printed else "none"
        world.problems += [] if printed else ["setup: no letter batch was printed"]
        made = Counter((state, admin.get(f"/v1/patients/{ins}/profile").json().get("status"))
                       for state in states for ins in [plan.adults[state], plan.minors[state], *fresh[state]])
        world.problems += [f"setup: {n} profiles planned {planned!r} are {got!r}"
                           for (planned, got), n in sorted(made.items()) if planned != got]
    return world


def _ok(response: Any) -> None:
    assert response.status_code < 300, (response.request.url.path, response.status_code, response.text)


def file_document(world: World, data: bytes, *, codes: str = "") -> str:
    """Submit as the lab and wait until indexed: the document id."""
    with world.hub.client() as lab:
        headers = {"Content-Type": "application/xml", **({"X-Confidentiality": codes} if codes else {})}
        accepted = lab.post("/v1/documents", content=data, headers=headers)
        _ok(accepted)
        final = lab.get(f"/v1/submissions/{accepted.json()['submission']}", params={"wait": 30}).json()
    assert final["status"] == "indexed", final
    world.submission = world.submission or str(final["submission"])
    return str(final["document_id"])


def delete_as_author(world: World, document_id: str, ins: str) -> None:
    """The author deletes the document through the API; where the record is not open to professionals yet
    (created), through the record controls the API would use."""
    with world.hub.client("t-author") as author:
        if author.delete(f"/v1/documents/{document_id}").status_code == 200:
            return
    world.hub.hub.records.controls.delete(document_id, ins, by=AUTHOR, at=datetime.now(UTC))


def put_message(hub: RunningHub, ins: str) -> str:
    """A message a professional wrote to the patient, kept in their mailbox as the gateway keeps it."""
    address = f"{ins}@{PATIENT_DOMAIN}"
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = SENDER, address, "Compte rendu"
    mail["Date"], mail["Message-ID"] = format_datetime(datetime.now(UTC)), make_msgid(domain="chu.mssante.fr")
    mail["Disposition-Notification-To"] = SENDER
    mail.set_content("Bonjour, votre compte rendu est disponible.")
    raw = mail.as_bytes()
    ref = hub.hub.store.put(raw, kind="msg", content_type="message/rfc822")
    message_id = f"matrix-{uuid.uuid4().hex[:12]}"
    hub.hub.mailboxes.store_message(MessageRecord(
        message_id=message_id, mailbox=address, submission_id=str(uuid.uuid4()), direction="in",
        correspondent=SENDER, subject="Compte rendu", rfc_message_id=str(mail["Message-ID"]), in_reply_to="",
        blob_bucket=ref.bucket, blob_key=ref.key, sha256=ref.sha256, size=ref.size, received_at=datetime.now(UTC)))
    return message_id


def put_notice(hub: RunningHub, ins: str) -> str:
    """An in-app notification in the patient's centre, as the notifier writes it."""
    now = datetime.now(UTC)
    notice_id = f"matrix-{uuid.uuid4().hex[:12]}"
    hub.hub.notices.add([Notice(notice_id=notice_id, event_id=f"matrix:{notice_id}", kind=EventKind.NEW_MESSAGE,
                                ins=ins, about_ins=ins, channel=Channel.INAPP, address="", state=NoticeState.SENT,
                                created_at=now, due_at=now, sent_at=now)])
    return notice_id


# -- one cell's request -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]   # httpx keyword arguments: json= or content=
    ins: str               # whose trail a refusal goes to ("" when none)


BodyMaker = Callable[[World, Cell, str], dict[str, Any]]


def _cda_body(world: World, cell: Cell, ins: str) -> dict[str, Any]:
    n = next(world.counter)
    if cell.role in ("patient", "stranger", "representative"):
        own = own_ins(world.plan, cell.role, ins)
        data = cda(extension=f"w-{n}", ins=ins, author=own, patient_authored=True)
    else:
        data = cda(extension=f"w-{n}", ins=ins)
    return {"content": data, "headers": {"Content-Type": "application/xml"}}


def _acts(world: World, _cell: Cell, _ins: str) -> dict[str, Any]:
    ins, n = world.plan.adults["active"], next(world.counter)
    line = f"R-{n}|{ins}|{builders.TEST_OID}|2026-11-20|CIP13|3400935673220|LUDEAL CPR3/21|1|12.50|8.75||"
    return {"content": "\n".join([f"MESHUB-REMB|1|B-{n}|CNAM", line, "END|1"]) + "\n",
            "headers": {"Content-Type": "text/plain"}}


BODIES: dict[str, BodyMaker] = {
    "": lambda _w, _c, _i: {},
    "cda": _cda_body,
    "acts": _acts,
    "roster": lambda w, _c, _i: {"content": roster([(w.plan.numbers.adult(), ADULT_BORN, "created")])},
    "flags": lambda _w, _c, _i: {"json": {"masked": False}},
    "access_settings": lambda _w, _c, _i: {"json": {"bris_de_glace_allowed": True}},
    "preferences": lambda _w, _c, _i: {"json": {"email": True, "push": True, "digest": True,
                                                 "quiet_hours": "22:00-08:00", "timezone": "Europe/Paris"}},
    "device": lambda _w, _c, _i: {"json": {"endpoint": "http://127.0.0.1:9/meshub/device-1"}},
    "reply": lambda _w, _c, _i: {"json": {"text": "Merci docteur."}},
    "send_document": lambda w, c, i: {"json": {"document_id": w.docs[(i, c.flag)], "to": PHARMACY, "text": ""}},
    "representatives": lambda w, _c, i: {"json": {"representatives": [w.plan.parent] if i in w.plan.minors_all()
                                                  else []}},
    "factors": lambda _w, _c, i: {"json": {"ins": i, "code": "AAAA-BBBB-CCCC", "vitale_serial": "80250000000000"}},
    "code_request": lambda _w, _c, i: {"json": {"ins": i, "vitale_serial": "80250000000000", "channel": "post"}},
    "contact": lambda _w, _c, _i: {"json": {"email": "nouvelle.adresse@example.org"}},
    "contact_code": lambda _w, _c, _i: {"json": {"code": "WRONGCODE123"}},
    "delivery_report": lambda _w, _c, _i: {"json": {"provider_ref": "matrix-none", "state": "delivered"}},
}


def request_for(world: World, cell: Cell) -> Request:
    """The request of one cell: the route's path filled for the cell's record, the column's credential and
    headers, the route's example body."""
    ins = world.plan.target(cell)
    values = {"ins": ins, "address": f"{ins}@{PATIENT_DOMAIN}", "idnps": OUTSIDER, "batch_id": world.batch,
              "submission_id": world.submission, "message_id": world.messages.get(ins, "none"),
              "notice_id": world.notices.get(ins, "none"),
              "document_id": world.docs.get((ins, cell.flag if cell.flag != "-" else "none"), "none")}
    path = cell.route.path
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    token = token_of(cell.role, ins)
    headers = {**HEADERS.get(cell.role, {}), **({"Authorization": f"Bearer {token}"} if token else {})}
    body = BODIES[cell.route.body](world, cell, ins)
    headers.update(body.pop("headers", {}))
    traced_to = ins if cell.route.scope != "global" else ""
    return Request(cell.route.method, path, headers, body, traced_to)
