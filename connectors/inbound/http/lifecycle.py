"""The lifecycle feature's HTTP routers: activation, opposition and its PDF receipt, a new code,
closure and restitution (ZIP) of a profile.

Owns: who may ask for what (the person themself with the factors of their letter: provisional code,
INS and Vitale card serial number; the patient with their credential; an admin or the insurer for
operator steps), HTTP status codes (403 with the rule's finding for a refusal, 429 with Retry-After
when too many wrong attempts locked activation), and streaming the ZIP.
Rule (the person's routes, without a credential: activation, opposition, code request): every failure
gets ONE answer, the same status and body whatever happened (unknown INS, wrong code or serial,
expired code, a state that refuses it, opposed, closed): 403 `lifecycle.activation-refused`; the code
request always answers 202 with the same body.  Only the lockout differs (429 with Retry-After), and it
is met alike on every INS, known or not (pipelines.record.core.lifecycle.StrangerAttempts).  The INS is checked
with intake's rules (hub.ins: Corsican 2A/2B included; a bad shape or key is 422).
Does not: check codes or change states (pipelines.record.ports.LifecycleService), keep contact addresses
(connectors.inbound.http.contacts) or take the insurer's batches (connectors.inbound.http.insurer).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response, StreamingResponse
from pydantic import AfterValidator, BaseModel, Field
from starlette.concurrency import run_in_threadpool

from connectors.inbound.http.auth import Identified, Operator, actor_of
from connectors.inbound.http.common import Port
from connectors.inbound.http.contacts import contact_step, not_yours
from connectors.inbound.http.errors import api_error
from connectors.inbound.http.params import InsPath
from connectors.inbound.http.read_gate import Gate, gated
from hub.credentials import Credential, Role
from hub.errors import NotFound, Refused
from hub.ins import valid_matricule
from hub.notices import Channel
from hub.reading import Reading
from pipelines.notify.ports import ContactService
from pipelines.record.ports import LifecycleService

EXPORT_CHUNK = 256 * 1024
EXPORT_IN_MEMORY = 8 * 1024 * 1024  # a bigger ZIP spills to a temporary file


@dataclass(frozen=True, slots=True)
class LifecyclePorts:
    """What the lifecycle routers need."""

    lifecycle: LifecycleService  # activation, opposition, closure, restitution
    contacts: ContactService | None = None  # addresses given at activation; None: not asked for
    issue_token: Callable[[str], str] | None = None  # a new bearer token for a patient (INS), after activation
    revoke_tokens: Callable[[str], int] | None = None  # a closed profile's issued tokens stop working


LIFECYCLE: Port[LifecyclePorts] = Port("lifecycle")
Lifecycle = Annotated[LifecyclePorts, Depends(LIFECYCLE.get)]
person = APIRouter()  # the person's and the patient's own steps
operators = APIRouter()  # an admin's or the insurer's steps


def _matricule(value: str) -> str:
    if not valid_matricule(value):
        raise ValueError("not a valid INS matricule (15 characters, 2A/2B allowed, key 97 - NIR mod 97)")
    return value


Matricule = Annotated[str, Field(min_length=15, max_length=15), AfterValidator(_matricule)]


class Factors(BaseModel):
    """What the information letter gives the person: their INS, the provisional code, and the serial
    number printed on their Vitale card."""

    ins: Matricule
    code: str = Field(min_length=4, max_length=40)
    vitale_serial: str = Field(min_length=4, max_length=40)


class Activation(Factors):
    """The factors, and where the person wants to be told (optional; in use at once)."""

    email: str = Field(default="", max_length=254)
    phone: str = Field(default="", max_length=32)


class CodeRequest(BaseModel):
    """The holder of a created or opened profile asks for a code: INS, Vitale serial, how to receive it
    (sms: the phone the insurer knows; email: the e-mail the insurer knows; post: a letter)."""

    ins: Matricule
    vitale_serial: str = Field(min_length=4, max_length=40)
    channel: Literal["sms", "email", "post"] = "post"


CHANNELS = {"sms": Channel.SMS, "email": Channel.EMAIL, "post": Channel.POSTAL}
REFUSED = ("lifecycle.activation-refused",
           "These details do not match, or this step is not possible for them: check the code, your INS and "
           "the serial number of your Vitale card. A code no longer valid can be replaced: ask for a new one "
           "(POST /v1/activation/code-request). After several attempts, requests are paused for a while.",
           "Ces informations ne correspondent pas, ou cette démarche n'est pas possible : vérifiez le code, "
           "votre INS et le numéro de série de votre carte Vitale. Un code qui n'est plus valable peut être "
           "remplacé : demandez-en un nouveau. Après plusieurs essais, les demandes sont suspendues un temps.")
CODE_REQUESTED = {
    "status": "accepted",
    "message_en": "If these details match a profile that can be activated, a code is on its way (by SMS, "
                  "e-mail or letter as asked; by letter when that channel is not known).",
    "message_fr": "Si ces informations correspondent à un profil qui peut être activé, un code vous est envoyé "
                  "(par SMS, e-mail ou courrier comme demandé ; par courrier si ce canal n'est pas connu)."}


def _self_or_operator(ins: InsPath, cred: Identified) -> Credential:
    if cred.role in (Role.ADMIN, Role.INSURER) or (cred.role is Role.PATIENT and cred.ins == ins):
        return cred
    raise not_yours() if cred.role is Role.PATIENT else api_error(
        403, "forbidden", "Only the patient themself (or an operator) may do this.",
        "Seul le patient lui-même (ou un opérateur) peut faire cette demande.")


def _self_or_admin(ins: InsPath, cred: Identified) -> Credential:
    """Restitution: another patient is refused here (`access.not-own-record`); every other role goes on to
    the read table (the insurer, producers and professionals: `read.role`, traced with its scope)."""
    if cred.role is Role.PATIENT and cred.ins != ins:
        raise not_yours()
    return cred


def _pdf(data: bytes, name: str) -> Response:
    return Response(data, media_type="application/pdf", headers={"Content-Disposition": f'inline; filename="{name}"'})


def _finding(status: int, code: str, exc: Refused, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status, detail={"code": code, "finding": exc.finding,
                                         "message_en": exc.finding.get("message_en", ""),
                                         "message_fr": exc.finding.get("message_fr", "")}, headers=headers)


async def _step(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A lifecycle step: a lockout is 429 with Retry-After, any other refusal 403."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except Refused as exc:
        retry = exc.finding.get("retry_after_s")
        if retry is not None:
            raise _finding(429, "locked", exc, {"Retry-After": str(int(str(retry)))}) from exc
        raise _finding(403, "refused", exc) from exc
    except NotFound as exc:
        raise api_error(404, "unknown-patient", "No profile for this INS.", "Aucun profil pour cet INS.") from exc


async def _person_step(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A step of the person without a credential: the lockout is 429 with Retry-After; every other
    refusal, and an unknown INS, is the one uniform 403 (nothing tells what failed)."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except Refused as exc:
        retry = exc.finding.get("retry_after_s")
        if retry is not None:
            raise api_error(429, "lifecycle.locked", str(exc.finding.get("message_en", "")),
                            str(exc.finding.get("message_fr", "")), {"Retry-After": str(int(str(retry)))}) from exc
        raise api_error(403, *REFUSED) from exc
    except NotFound as exc:
        raise api_error(403, *REFUSED) from exc


@person.post("/v1/activation", tags=["lifecycle"], summary="Activate a profile with the letter's code")
async def activate(body: Activation, ports: Lifecycle) -> dict[str, Any]:
    """The provisional code, the INS and the Vitale card serial number, checked together; refused
    attempts are counted and lock activation for a while (429).  Every other failure is the same 403.
    `email` / `phone` (optional): where the person wants to be told, in use at once.  The answer
    carries the patient's own bearer token (`token`, shown this once): their access to their record
    and mailbox, and `contact` when addresses were given."""
    contacts = ports.contacts
    if contacts is not None:
        await contact_step(contacts.check, body.email, body.phone)  # 422 before anything changes
    profile = await _person_step(ports.lifecycle.activate, body.ins, body.code, body.vitale_serial)
    answer = dict(profile.to_dict())
    if contacts is not None:
        given = await contact_step(contacts.given_at_activation, body.ins, body.email, body.phone)
        if given is not None:
            answer["contact"] = given.to_dict()
    if ports.issue_token is not None:
        answer["token"] = await _step(ports.issue_token, body.ins)
    return answer


@person.post("/v1/activation/code-request", tags=["lifecycle"], status_code=202,
             summary="Ask for an activation code (a created or automatically opened profile)")
async def code_request(body: CodeRequest, ports: Lifecycle) -> dict[str, Any]:
    """INS and Vitale card serial; the code goes by SMS to the phone the insurer knows, by e-mail to
    the address it knows, or by letter (`channel`; a letter when that channel is not known).  The
    answer is the same whatever happened (202); only the lockout is 429."""
    await _person_step(ports.lifecycle.request_code, body.ins, body.vitale_serial, CHANNELS[body.channel])
    return dict(CODE_REQUESTED)


@person.post("/v1/opposition", tags=["lifecycle"], summary="Oppose the creation of the profile",
             response_class=Response)
async def oppose(body: Factors, ports: Lifecycle) -> Response:
    """Within the 6 weeks, with the letter's factors: the profile is not opened, and the answer
    is the PDF receipt of the opposition.  Every failure is the same 403 (the lockout: 429)."""
    lifecycle = ports.lifecycle
    await _person_step(lifecycle.oppose, body.ins, code=body.code, vitale_serial=body.vitale_serial)
    return _pdf(await _person_step(lifecycle.receipt, body.ins), "justificatif-opposition.pdf")


@person.get("/v1/patients/{ins}/profile", tags=["lifecycle"])
async def profile(ins: InsPath, _cred: Annotated[Credential, Depends(_self_or_operator)], gate: Gate,
                  ports: Lifecycle) -> dict[str, Any]:
    """The profile's state: the patient, the insurer, an admin (closed profiles too; traced)."""
    await gated(gate, _cred, ins, Reading.PROFILE)
    found = await _step(ports.lifecycle.profile, ins)
    if found is None:
        raise api_error(404, "unknown-patient", "No profile for this INS.", "Aucun profil pour cet INS.")
    return dict(found.to_dict())


@person.post("/v1/patients/{ins}/close", tags=["lifecycle"])
async def close(ins: InsPath, cred: Annotated[Credential, Depends(_self_or_operator)],
                ports: Lifecycle) -> dict[str, Any]:
    """Close the profile: its content is no longer reachable (and the patient's issued tokens stop
    working); archived 10 years, then purged.  Ask for the restitution ZIP first."""
    closed = await _step(ports.lifecycle.close, ins, actor=actor_of(cred))
    if ports.revoke_tokens is not None:
        await _step(ports.revoke_tokens, ins)
    return dict(closed.to_dict())


@person.get("/v1/patients/{ins}/export", tags=["lifecycle"], summary="Restitution: the whole record as a ZIP")
async def export(ins: InsPath, cred: Annotated[Credential, Depends(_self_or_admin)], gate: Gate,
                 ports: Lifecycle) -> StreamingResponse:
    """The patient's restitution (or an admin's, for them): 403 `read.role` for the insurer, 404 once
    the profile is closed; its audit.json is the trail as the patient is shown it."""
    await gated(gate, cred, ins, Reading.EXPORT)
    out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=EXPORT_IN_MEMORY)  # noqa: SIM115 - closed by _chunks
    try:
        await _step(ports.lifecycle.export, ins, out, actor=actor_of(cred))
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return StreamingResponse(_chunks(out), media_type="application/zip",
                             headers={"Content-Disposition": 'attachment; filename="mon-espace-sante.zip"'})


def _chunks(out: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := out.read(EXPORT_CHUNK):
            yield chunk
    finally:
        out.close()


@operators.post("/v1/patients/{ins}/oppose", tags=["lifecycle"], response_class=Response)
async def oppose_for(ins: InsPath, cred: Operator, ports: Lifecycle) -> Response:
    """An operator records an opposition received in writing; the answer is the PDF receipt."""
    await _step(ports.lifecycle.oppose, ins, actor=actor_of(cred))
    return _pdf(await _step(ports.lifecycle.receipt, ins), "justificatif-opposition.pdf")


@operators.get("/v1/patients/{ins}/opposition-receipt", tags=["lifecycle"], response_class=Response)
async def receipt(ins: InsPath, _cred: Operator, ports: Lifecycle) -> Response:
    return _pdf(await _step(ports.lifecycle.receipt, ins), "justificatif-opposition.pdf")


@operators.post("/v1/patients/{ins}/code", tags=["lifecycle"])
async def new_code(ins: InsPath, cred: Operator, ports: Lifecycle) -> dict[str, Any]:
    """A new provisional code, sent by letter: a lost letter, or reversing an opposition."""
    return dict((await _step(ports.lifecycle.reissue_code, ins, actor=actor_of(cred))).to_dict())
