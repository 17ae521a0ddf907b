"""Who is calling the HTTP door: the bearer token -> Credential -> Actor, shared by every router.

Owns: `identify` (401 with WWW-Authenticate for a missing or unknown token; an issued-tokens store down
raises TransientError, answered 503, never a pretended 401), the role dependencies `admin` and
`operator` (403 `forbidden`), and `actor_of`, the Actor a credential stands for (403 `read.role` for a
role that cannot read records).  `request.state.credential` is who is refused, if the request is.
Does not: check tokens itself (hub.auth.Authenticator) or decide what a role may read (the services).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from connectors.inbound.http.common import Port
from connectors.inbound.http.errors import api_error
from hub.actors import Actor, ActorKind
from hub.auth import Authenticator
from hub.credentials import Credential, Role

AUTH: Port[Authenticator] = Port("authenticator")


def identify(request: Request, auth: Annotated[Authenticator, Depends(AUTH.get)]) -> Credential:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    cred = auth.identify(token.strip()) if scheme.lower() == "bearer" else None
    if cred is None:
        raise api_error(401, "unauthenticated", "Missing or unknown bearer token (Authorization: Bearer ...).",
                        "Jeton d'accès absent ou inconnu (Authorization: Bearer ...).",
                        {"WWW-Authenticate": "Bearer"})
    request.state.credential = cred  # who is refused, if this request is (errors._trace_refusal)
    return cred


def admin(cred: Annotated[Credential, Depends(identify)]) -> Credential:
    if cred.role is not Role.ADMIN:
        raise api_error(403, "forbidden", "This operation needs an admin credential.",
                        "Cette opération demande un accès administrateur.")
    return cred


def operator(cred: Annotated[Credential, Depends(identify)]) -> Credential:
    """An admin or the insurer (roster, new codes, operator-made oppositions and closures)."""
    if cred.role not in (Role.ADMIN, Role.INSURER):
        raise api_error(403, "forbidden", "This operation needs an admin or insurer credential.",
                        "Cette opération demande un accès administrateur ou Assurance Maladie.")
    return cred


Identified = Annotated[Credential, Depends(identify)]
Admin = Annotated[Credential, Depends(admin)]
Operator = Annotated[Credential, Depends(operator)]


def actor_of(cred: Credential) -> Actor:
    """The Actor a credential stands for."""
    if cred.role is Role.PATIENT:
        return Actor(ActorKind.PATIENT, cred.ins)
    if cred.role is Role.PROFESSIONAL:
        return Actor(ActorKind.PROFESSIONAL, cred.idnps, profession=cred.profession, specialty=cred.specialty,
                     regulator=cred.regulator)
    if cred.role is Role.ADMIN:
        return Actor(ActorKind.ADMIN, cred.name)
    if cred.role is Role.INSURER:
        return Actor(ActorKind.INSURER, cred.name)
    raise api_error(403, "read.role", "This credential cannot read patient records.",
                    "Cet accès ne permet pas de consulter les dossiers des patients.")
