"""Bounds of numeric request parameters, and the 422 a bad one gets.

Owns: the upper bounds every numeric query parameter is declared with (Query(ge=..., le=...)), and the
answer to a query or header parameter that is out of its range or not a number: `422` with the body
{"error": {"code": "param.out-of-range", "message_en", "message_fr", "parameters": [{name, problem}]}}
instead of a 500 from a store that cannot hold the number.  Messages name the parameter and the bound,
never the value sent.  A body that fails its model keeps FastAPI's own 422.
Does not: choose page sizes or wait times (each route declares its own `limit` / `wait` bounds).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

#: the largest sequence number a client may name (`after=`): 2**53 - 1, exact in JSON and in any store.
MAX_SEQ = 2**53 - 1
#: the deepest page a list may be asked for (`offset=`): deeper paging is a query, not a page.
MAX_OFFSET = 1_000_000
#: an SSE Last-Event-ID: at most 18 characters, so below 2**63 whatever it holds.
MAX_EVENT_ID_CHARS = 18

_PARAMETER_KINDS = frozenset({"query", "header", "path"})


def install_param_errors(app: FastAPI) -> None:
    """A bad query/header/path parameter is a `422 param.out-of-range` with a clear body."""
    app.exception_handler(RequestValidationError)(_validation_error)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [e for e in exc.errors() if _kind(e) in _PARAMETER_KINDS]
    if not errors:
        return await request_validation_exception_handler(request, exc)
    parameters = [{"name": _name(e), "problem": str(e.get("msg", "invalid"))} for e in errors]
    names = ", ".join(sorted({p["name"] for p in parameters}))
    body = {"error": {
        "code": "param.out-of-range",
        "message_en": f"Parameter {names} is out of range or not a valid value: "
                      + "; ".join(f"{p['name']}: {p['problem']}" for p in parameters) + ".",
        "message_fr": f"Paramètre {names} hors des bornes ou invalide : voir `parameters` pour la borne.",
        "parameters": parameters,
    }}
    return JSONResponse(body, status_code=422)


def _kind(error: dict[str, Any]) -> str:
    loc: tuple[Any, ...] = tuple(error.get("loc") or ())
    return str(loc[0]) if loc else ""


def _name(error: dict[str, Any]) -> str:
    loc: tuple[Any, ...] = tuple(error.get("loc") or ())
    return str(loc[1]) if len(loc) > 1 else "?"
