"""Which patients' trails already hold a refusal written while serving the current request (pure).

Owns: a per-request scope (a context variable the HTTP edge opens for each request) and the note the
audit trail makes of every `refused` entry appended within it, so the edge's last-resort tracer
(connectors.inbound.http.errors) writes a refusal into the patient's trail only when no service did.
Does not: write the trail (hub.audit.AuditTrail does) or decide anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar, Token

_traced: ContextVar[set[str] | None] = ContextVar("meshub_traced_refusals", default=None)


def open_scope() -> Token[set[str] | None]:
    """A fresh scope for one request (threads the request runs work in share it: contexts are copied)."""
    return _traced.set(set())


def close_scope(token: Token[set[str] | None]) -> None:
    _traced.reset(token)


def note(ins_values: Iterable[str]) -> None:
    """The trails of `ins_values` received a refusal in this scope (no-op outside a request)."""
    traced = _traced.get()
    if traced is not None:
        traced.update(ins_values)


def already_traced(ins: str) -> bool:
    traced = _traced.get()
    return traced is not None and ins in traced
