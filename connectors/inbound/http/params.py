"""Bounds of request parameters, and the 422 a bad one gets.

Owns: the upper bounds every numeric query parameter is declared with (Query(ge=..., le=...)), the shape
of a path's INS (`InsPath`: intake's rules, hub.ins), the plain-text rule of every path and query string
(`plain_parameters`, an app-wide dependency: at most MAX_PARAM_CHARS characters, no control character,
so no NUL reaches a store), the same rule for id-like body fields (`Plain`), and the answers:
* a query, header or path parameter out of its range, of the wrong shape or not a number: `422` with
  {"error": {"code": "param.out-of-range", "message_en", "message_fr", "parameters": [{name, problem}]}};
  an over-long one `param.too-long`, one with a control character `param.control-character` (same body);
* a body that fails its model: `422` {"error": {"code": "body.invalid", ..., "fields": [{name, problem}]},
  "detail": FastAPI's own list (kept for the clients that read it)}.
Messages name the parameter (or body field) and the bound, never the value sent.
Does not: choose page sizes or wait times (each route declares its own `limit` / `wait` bounds).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import AfterValidator

from hub.ins import valid_matricule

#: the largest sequence number a client may name (`after=`): 2**53 - 1, exact in JSON and in any store.
MAX_SEQ = 2**53 - 1
#: the deepest page a list may be asked for (`offset=`): deeper paging is a query, not a page.
MAX_OFFSET = 1_000_000
#: an SSE Last-Event-ID: at most 18 characters, so below 2**63 whatever it holds.
MAX_EVENT_ID_CHARS = 18
#: the longest path or query string (ids are at most 256, a mailbox address 320)
MAX_PARAM_CHARS = 512

_PARAMETER_KINDS = frozenset({"query", "header", "path"})


def _ins(value: str) -> str:
    if not valid_matricule(value):
        raise ValueError("not a valid INS (15 characters: 13 digits, 2A/2B for Corsica, then the key "
                         "97 - NIR mod 97)")
    return value


#: an {ins} path parameter: a well-formed INS whose key matches (else 422 param.out-of-range)
InsPath = Annotated[str, Path(min_length=15, max_length=15), AfterValidator(_ins)]


def _control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def _plain(value: str) -> str:
    if _control(value):
        raise ValueError("must not contain control characters (NUL, line breaks, tabs...)")
    return value


#: an id-like body string (a document id, an address, a provider reference): no control character
Plain = Annotated[str, AfterValidator(_plain)]


def plain_parameters(request: Request) -> None:
    """Every path and query string of every route: bounded, and no control character (422)."""
    values = [*request.path_params.items(), *request.query_params.multi_items()]
    for code, problem, broken in (
            ("param.too-long", f"longer than {MAX_PARAM_CHARS} characters", lambda v: len(v) > MAX_PARAM_CHARS),
            ("param.control-character", "contains a control character (NUL, line break, tab...)", _control)):
        names = sorted({str(name) for name, value in values if isinstance(value, str) and broken(value)})
        if names:
            raise bad_parameters(code, {n: problem for n in names})


def bad_parameters(code: str, problems: dict[str, str]) -> HTTPException:
    """A route's own parameter check failed: 422 with the same body as a declared bound (name -> problem)."""
    return HTTPException(422, detail=_body(code, [{"name": n, "problem": p} for n, p in problems.items()]))


def install_param_errors(app: FastAPI) -> None:
    """A bad parameter is a `422 param.out-of-range`, a bad body `422 body.invalid`, with a clear body."""
    app.exception_handler(RequestValidationError)(_validation_error)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [e for e in exc.errors() if _kind(e) in _PARAMETER_KINDS]
    if not errors:
        fields = [{"name": ".".join(str(p) for p in e.get("loc") or ()) or "body",
                   "problem": str(e.get("msg", "invalid"))} for e in exc.errors()]
        return JSONResponse({"error": _body("body.invalid", fields, key="fields"),
                             "detail": jsonable_encoder(exc.errors())}, status_code=422)
    # a parameter a route and its dependency both declare (an {ins}) fails once for each: said once
    found = dict.fromkeys((_name(e), str(e.get("msg", "invalid"))) for e in errors)
    parameters = [{"name": name, "problem": problem} for name, problem in found]
    return JSONResponse({"error": _body("param.out-of-range", parameters)}, status_code=422)


def _body(code: str, problems: list[dict[str, str]], *, key: str = "parameters") -> dict[str, Any]:
    """The error body: which parameters (or body fields), and what is wrong with each."""
    names = ", ".join(sorted({p["name"] for p in problems}))
    what_en, what_fr = ("Body field", "Champ du corps") if key == "fields" else ("Parameter", "Paramètre")
    return {"code": code,
            "message_en": f"{what_en} {names} is out of range or not a valid value: "
                          + "; ".join(f"{p['name']}: {p['problem']}" for p in problems) + ".",
            "message_fr": f"{what_fr} {names} hors des bornes ou invalide : voir `{key}` pour la règle.",
            key: problems}


def _kind(error: dict[str, Any]) -> str:
    loc: tuple[Any, ...] = tuple(error.get("loc") or ())
    return str(loc[0]) if loc else ""


def _name(error: dict[str, Any]) -> str:
    loc: tuple[Any, ...] = tuple(error.get("loc") or ())
    return str(loc[1]) if len(loc) > 1 else "?"
