"""One Handler for the intake queue: each envelope goes to the pipeline of its content type.

Owns: the table content type -> pipeline, with the CDA pipeline as the default (envelopes
written before mail existed carry `text/xml`).
Does not: look inside the payload (each pipeline reads its own bytes).
"""

from __future__ import annotations

from collections.abc import Mapping

from hub.envelope import Envelope
from hub.ports import Handler


class Router:
    """Handler: dispatch on envelope.content_type."""

    def __init__(self, routes: Mapping[str, Handler], *, default: Handler) -> None:
        self._routes = dict(routes)
        self._default = default

    def __call__(self, envelope: Envelope) -> None:
        self._routes.get(envelope.content_type, self._default)(envelope)
