"""The patient's own contact addresses, over HTTP: read them, change them (applied once confirmed with
the code sent to each new address).

Owns: who may (the patient themself: another patient gets 403 `access.not-own-record`, any other role
403 `forbidden`), and the answers of a contact step (`contact_step`: a malformed address is 422 with
its rule, a wrong confirmation code 403 `contact.code`), also used by activation.
Does not: check addresses or codes (pipelines.notify.ports.ContactService does).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from connectors.inbound.http.auth import Identified
from connectors.inbound.http.common import Port
from connectors.inbound.http.errors import api_error
from connectors.inbound.http.params import InsPath
from hub.credentials import Credential, Role
from hub.errors import Refused
from pipelines.notify.ports import ContactService

CONTACTS: Port[ContactService] = Port("contacts")
Contacts = Annotated[ContactService, Depends(CONTACTS.get)]
router = APIRouter()


class ContactChange(BaseModel):
    """The addresses the patient wants to be told at ("" removes one)."""

    email: str = Field(default="", max_length=254)
    phone: str = Field(default="", max_length=32)


class ContactCode(BaseModel):
    code: str = Field(min_length=4, max_length=40)


def not_yours() -> HTTPException:
    return api_error(403, "access.not-own-record", "A patient credential reaches only its own record.",
                     "Un accès patient n'ouvre que son propre dossier.")


def _own(ins: InsPath, cred: Identified) -> Credential:
    if cred.role is Role.PATIENT and cred.ins == ins:
        return cred
    raise not_yours() if cred.role is Role.PATIENT else api_error(
        403, "forbidden", "Only the patient themself manages their contact addresses.",
        "Seul le patient lui-même gère ses adresses de contact.")


Own = Annotated[Credential, Depends(_own)]


async def contact_step(fn: Any, *args: Any) -> Any:
    """A contact step: a malformed address is 422, a wrong confirmation code 403 (contact.code)."""
    try:
        return await run_in_threadpool(fn, *args)
    except Refused as exc:
        rule = str(exc.finding.get("rule", "contact"))
        raise api_error(403 if rule == "contact.code" else 422, rule, str(exc.finding.get("message_en", "")),
                        str(exc.finding.get("message_fr", ""))) from exc


@router.get("/v1/patients/{ins}/contact", tags=["lifecycle"], summary="The patient's own contact addresses")
async def contact(ins: InsPath, _cred: Own, contacts: Contacts) -> dict[str, Any]:
    return dict((await contact_step(contacts.current, ins)).to_dict())


@router.put("/v1/patients/{ins}/contact", tags=["lifecycle"], status_code=202,
            summary="Change the contact addresses (applied once confirmed with the code sent to them)")
async def change(ins: InsPath, body: ContactChange, _cred: Own, contacts: Contacts) -> dict[str, Any]:
    """The new addresses wait: a code goes to each new one (e-mail, SMS), valid 24 hours; POST it to
    /v1/patients/{ins}/contact/confirm to apply the change."""
    return dict((await contact_step(contacts.request_change, ins, body.email, body.phone)).to_dict())


@router.post("/v1/patients/{ins}/contact/confirm", tags=["lifecycle"], summary="Confirm a contact change")
async def confirm(ins: InsPath, body: ContactCode, _cred: Own, contacts: Contacts) -> dict[str, Any]:
    return dict((await contact_step(contacts.confirm, ins, body.code)).to_dict())
