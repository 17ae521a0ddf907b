"""HTTP routes of a profile's life: activation, opposition and its PDF receipt, a new code, closure,
restitution (ZIP), and the insurer's reimbursement-history batches.

Owns: who may ask for what (the person themself with the factors of their letter: provisional code,
INS and Vitale card serial number; the patient with their credential; an admin or the insurer for
operator steps), HTTP status codes (403 with the rule's finding for a refusal, 429 with Retry-After
when too many wrong attempts locked activation, 202 once a batch is durable), and streaming the ZIP;
and the patient's own contact addresses (given at activation; changed with a confirmation code).
Rule (the person's routes, without a credential: activation, opposition, code request): every failure
gets ONE answer, the same status and body whatever happened (unknown INS, wrong code or serial,
expired code, a state that refuses it, opposed, closed): 403 `lifecycle.activation-refused`; the code
request always answers 202 with the same body.  Only the lockout differs (429 with Retry-After), and it
is met alike on every INS, known or not (pipelines.record.core.lifecycle.StrangerAttempts).  The INS is checked
with intake's rules (hub.ins: Corsican 2A/2B included; a bad shape or key is 422).
Does not: check codes or change states (pipelines.record.ports.LifecycleService) or parse batches (InsurerService).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO, Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import AfterValidator, BaseModel, Field
from starlette.concurrency import run_in_threadpool

from connectors.inbound.http_api import ApiContext, api_error, identify, operator, read_body, unavailable
from connectors.inbound.read_gate import gated
from connectors.inbound.record_api import actor_of
from hub.credentials import Credential, Role
from hub.errors import NotFound, Refused, TransientError
from hub.ins import valid_matricule
from hub.notices import Channel
from hub.reading import Reading
from pipelines.insurer.ports import InsurerService
from pipelines.notify.ports import ContactService
from pipelines.record.ports import LifecycleService

EXPORT_CHUNK = 256 * 1024
EXPORT_IN_MEMORY = 8 * 1024 * 1024  # a bigger ZIP spills to a temporary file


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


class ContactChange(BaseModel):
    """The addresses the patient wants to be told at ("" removes one)."""

    email: str = Field(default="", max_length=254)
    phone: str = Field(default="", max_length=32)


class ContactCode(BaseModel):
    code: str = Field(min_length=4, max_length=40)


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


def _own(ins: str, cred: Annotated[Credential, Depends(identify)]) -> Credential:
    if cred.role is Role.PATIENT and cred.ins == ins:
        return cred
    raise _not_yours() if cred.role is Role.PATIENT else api_error(
        403, "forbidden", "Only the patient themself manages their contact addresses.",
        "Seul le patient lui-même gère ses adresses de contact.")


def insurer(cred: Annotated[Credential, Depends(identify)]) -> Credential:
    if cred.role is not Role.INSURER:
        raise api_error(403, "forbidden", "Only the insurer sends reimbursement history.",
                        "Seule l'Assurance Maladie transmet l'historique des remboursements.")
    return cred


def _self_or_operator(ins: str, cred: Annotated[Credential, Depends(identify)]) -> Credential:
    if cred.role in (Role.ADMIN, Role.INSURER) or (cred.role is Role.PATIENT and cred.ins == ins):
        return cred
    raise _not_yours() if cred.role is Role.PATIENT else api_error(
        403, "forbidden", "Only the patient themself (or an operator) may do this.",
        "Seul le patient lui-même (ou un opérateur) peut faire cette demande.")


def _self_or_admin(ins: str, cred: Annotated[Credential, Depends(identify)]) -> Credential:
    """Restitution: another patient is refused here (`access.not-own-record`); every other role goes on to
    the read table (the insurer, producers and professionals: `read.role`, traced with its scope)."""
    if cred.role is Role.PATIENT and cred.ins != ins:
        raise _not_yours()
    return cred


def _not_yours() -> HTTPException:
    return api_error(403, "access.not-own-record", "A patient credential reaches only its own record.",
                     "Un accès patient n'ouvre que son propre dossier.")


def lifecycle_routes(app: FastAPI, ctx: ApiContext) -> None:
    """Register the lifecycle routes (ctx.lifecycle is set) and, when set, the insurer's batches."""
    assert ctx.lifecycle is not None
    _person_routes(app, ctx, ctx.lifecycle)
    if ctx.contacts is not None:
        _contact_routes(app, ctx.contacts)
    _operator_routes(app, ctx.lifecycle)
    if ctx.insurer is not None:
        _insurer_routes(app, ctx, ctx.insurer)


def _pdf(data: bytes, name: str) -> Response:
    return Response(data, media_type="application/pdf", headers={"Content-Disposition": f'inline; filename="{name}"'})


async def _step(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A lifecycle step: a lockout is 429 with Retry-After, any other refusal 403."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except Refused as exc:
        retry = exc.finding.get("retry_after_s")
        if retry is not None:
            raise HTTPException(429, detail={"code": "locked", "finding": exc.finding,
                                             "message_en": exc.finding.get("message_en", ""),
                                             "message_fr": exc.finding.get("message_fr", "")},
                                headers={"Retry-After": str(int(str(retry)))}) from exc
        raise HTTPException(403, detail={"code": "refused", "finding": exc.finding,
                                         "message_en": exc.finding.get("message_en", ""),
                                         "message_fr": exc.finding.get("message_fr", "")}) from exc
    except NotFound as exc:
        raise api_error(404, "unknown-patient", "No profile for this INS.", "Aucun profil pour cet INS.") from exc
    except TransientError as exc:
        raise unavailable(exc) from exc


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
    except TransientError as exc:
        raise unavailable(exc) from exc


def _activation_route(app: FastAPI, ctx: ApiContext, lifecycle: LifecycleService) -> None:
    @app.post("/v1/activation", tags=["lifecycle"], summary="Activate a profile with the letter's code")
    async def activate(body: Activation) -> dict[str, Any]:
        """The provisional code, the INS and the Vitale card serial number, checked together; refused
        attempts are counted and lock activation for a while (429).  Every other failure is the same 403.
        `email` / `phone` (optional): where the person wants to be told, in use at once.  The answer
        carries the patient's own bearer token (`token`, shown this once): their access to their record
        and mailbox, and `contact` when addresses were given."""
        contacts = ctx.contacts
        if contacts is not None:
            await _contact_step(contacts.check, body.email, body.phone)  # 422 before anything changes
        profile = await _person_step(lifecycle.activate, body.ins, body.code, body.vitale_serial)
        answer = dict(profile.to_dict())
        if contacts is not None:
            given = await _contact_step(contacts.given_at_activation, body.ins, body.email, body.phone)
            if given is not None:
                answer["contact"] = given.to_dict()
        if ctx.issue_token is not None:
            answer["token"] = await _step(ctx.issue_token, body.ins)
        return answer


def _person_routes(app: FastAPI, ctx: ApiContext, lifecycle: LifecycleService) -> None:
    _activation_route(app, ctx, lifecycle)

    @app.post("/v1/activation/code-request", tags=["lifecycle"], status_code=202,
              summary="Ask for an activation code (a created or automatically opened profile)")
    async def code_request(body: CodeRequest) -> dict[str, Any]:
        """INS and Vitale card serial; the code goes by SMS to the phone the insurer knows, by e-mail to
        the address it knows, or by letter (`channel`; a letter when that channel is not known).  The
        answer is the same whatever happened (202); only the lockout is 429."""
        await _person_step(lifecycle.request_code, body.ins, body.vitale_serial, CHANNELS[body.channel])
        return dict(CODE_REQUESTED)

    @app.post("/v1/opposition", tags=["lifecycle"], summary="Oppose the creation of the profile",
              response_class=Response)
    async def oppose(body: Factors) -> Response:
        """Within the 6 weeks, with the letter's factors: the profile is not opened, and the answer
        is the PDF receipt of the opposition.  Every failure is the same 403 (the lockout: 429)."""
        await _person_step(lifecycle.oppose, body.ins, code=body.code, vitale_serial=body.vitale_serial)
        return _pdf(await _person_step(lifecycle.receipt, body.ins), "justificatif-opposition.pdf")

    @app.get("/v1/patients/{ins}/profile", tags=["lifecycle"])
    async def profile(ins: str, request: Request,
                      _cred: Annotated[Credential, Depends(_self_or_operator)]) -> dict[str, Any]:
        """The profile's state: the patient, the insurer, an admin (closed profiles too; traced)."""
        await gated(request, _cred, ins, Reading.PROFILE)
        found = await _step(lifecycle.profile, ins)
        if found is None:
            raise api_error(404, "unknown-patient", "No profile for this INS.", "Aucun profil pour cet INS.")
        return dict(found.to_dict())

    @app.post("/v1/patients/{ins}/close", tags=["lifecycle"])
    async def close(ins: str, cred: Annotated[Credential, Depends(_self_or_operator)]) -> dict[str, Any]:
        """Close the profile: its content is no longer reachable (and the patient's issued tokens stop
        working); archived 10 years, then purged.  Ask for the restitution ZIP first."""
        closed = await _step(lifecycle.close, ins, actor=actor_of(cred))
        if ctx.revoke_tokens is not None:
            await _step(ctx.revoke_tokens, ins)
        return dict(closed.to_dict())

    @app.get("/v1/patients/{ins}/export", tags=["lifecycle"], summary="Restitution: the whole record as a ZIP")
    async def export(ins: str, request: Request,
                     cred: Annotated[Credential, Depends(_self_or_admin)]) -> StreamingResponse:
        """The patient's restitution (or an admin's, for them): 403 `read.role` for the insurer, 404 once
        the profile is closed; its audit.json is the trail as the patient is shown it."""
        await gated(request, cred, ins, Reading.EXPORT)
        out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=EXPORT_IN_MEMORY)  # noqa: SIM115 - closed by _chunks
        try:
            await _step(lifecycle.export, ins, out, actor=actor_of(cred))
        except BaseException:
            out.close()
            raise
        out.seek(0)
        return StreamingResponse(_chunks(out), media_type="application/zip",
                                 headers={"Content-Disposition": 'attachment; filename="mon-espace-sante.zip"'})


async def _contact_step(fn: Any, *args: Any) -> Any:
    """A contact step: a malformed address is 422, a wrong confirmation code 403 (contact.code)."""
    try:
        return await run_in_threadpool(fn, *args)
    except Refused as exc:
        rule = str(exc.finding.get("rule", "contact"))
        raise api_error(403 if rule == "contact.code" else 422, rule, str(exc.finding.get("message_en", "")),
                        str(exc.finding.get("message_fr", ""))) from exc
    except TransientError as exc:
        raise unavailable(exc) from exc


def _contact_routes(app: FastAPI, contacts: ContactService) -> None:
    @app.get("/v1/patients/{ins}/contact", tags=["lifecycle"], summary="The patient's own contact addresses")
    async def contact(ins: str, _cred: Annotated[Credential, Depends(_own)]) -> dict[str, Any]:
        return dict((await _contact_step(contacts.current, ins)).to_dict())

    @app.put("/v1/patients/{ins}/contact", tags=["lifecycle"], status_code=202,
             summary="Change the contact addresses (applied once confirmed with the code sent to them)")
    async def change(ins: str, body: ContactChange, _cred: Annotated[Credential, Depends(_own)]) -> dict[str, Any]:
        """The new addresses wait: a code goes to each new one (e-mail, SMS), valid 24 hours; POST it to
        /v1/patients/{ins}/contact/confirm to apply the change."""
        return dict((await _contact_step(contacts.request_change, ins, body.email, body.phone)).to_dict())

    @app.post("/v1/patients/{ins}/contact/confirm", tags=["lifecycle"], summary="Confirm a contact change")
    async def confirm(ins: str, body: ContactCode, _cred: Annotated[Credential, Depends(_own)]) -> dict[str, Any]:
        return dict((await _contact_step(contacts.confirm, ins, body.code)).to_dict())


def _chunks(out: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := out.read(EXPORT_CHUNK):
            yield chunk
    finally:
        out.close()


def _operator_routes(app: FastAPI, lifecycle: LifecycleService) -> None:
    @app.post("/v1/patients/{ins}/oppose", tags=["lifecycle"], response_class=Response)
    async def oppose_for(ins: str, cred: Annotated[Credential, Depends(operator)]) -> Response:
        """An operator records an opposition received in writing; the answer is the PDF receipt."""
        await _step(lifecycle.oppose, ins, actor=actor_of(cred))
        return _pdf(await _step(lifecycle.receipt, ins), "justificatif-opposition.pdf")

    @app.get("/v1/patients/{ins}/opposition-receipt", tags=["lifecycle"], response_class=Response)
    async def receipt(ins: str, _cred: Annotated[Credential, Depends(operator)]) -> Response:
        return _pdf(await _step(lifecycle.receipt, ins), "justificatif-opposition.pdf")

    @app.post("/v1/patients/{ins}/code", tags=["lifecycle"])
    async def new_code(ins: str, cred: Annotated[Credential, Depends(operator)]) -> dict[str, Any]:
        """A new provisional code, sent by letter: a lost letter, or reversing an opposition."""
        return dict((await _step(lifecycle.reissue_code, ins, actor=actor_of(cred))).to_dict())


def _insurer_routes(app: FastAPI, ctx: ApiContext, batches: InsurerService) -> None:
    @app.post("/v1/insurer/batches", tags=["insurer"], status_code=202,
              summary="Reimbursement history: a batch of reimbursed acts, or one CNAM-HR CDA document")
    async def batch(request: Request, _cred: Annotated[Credential, Depends(insurer)]) -> dict[str, Any]:
        """Held durably when this answers 202; filed 48 hours after the profile's activation."""
        raw = await read_body(request, ctx.max_body_bytes)
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        accept = batches.accept_document if media.endswith("xml") else batches.accept_batch
        try:
            return dict(await run_in_threadpool(accept, raw))
        except Refused as exc:  # all or nothing: a rejected batch keeps nothing
            raise HTTPException(422, detail={"code": "batch-rejected", "finding": exc.finding,
                                             "message_en": exc.finding.get("message_en", ""),
                                             "message_fr": exc.finding.get("message_fr", "")}) from exc
        except TransientError as exc:
            raise unavailable(exc) from exc
