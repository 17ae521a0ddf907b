"""Ports of the insurer feature: the reimbursement history service."""


from __future__ import annotations

from typing import Any, Protocol


class InsurerService(Protocol):
    """The insurer's reimbursement history (pipelines.insurer.reimbursements implements it): held until 48 h
    after the profile's activation, then filed; a re-delivery adds nothing."""

    def accept_batch(self, raw: bytes) -> dict[str, Any]: ...

    def accept_document(self, raw: bytes) -> dict[str, Any]: ...
