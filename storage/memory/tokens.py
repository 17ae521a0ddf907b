"""hub.ports.IssuedTokens in memory: the bearer tokens the hub hands out itself, by digest.

Owns: MemoryTokens, with storage.sql.tokens' rules: only the digest, name, role and INS of a credential
are kept (its other fields come back empty, as from the api_tokens table); a digest is issued once (one
already kept, live or revoked, is PermanentError); lookup finds live tokens only; revoke ends every live
token of one patient and says how many (a second revoke: 0).
Does not: make or hash tokens (hub.auth) or decide who gets one (the API, after an activation).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from hub.credentials import Credential
from hub.errors import PermanentError
from storage.memory.base import now
from storage.memory.index import MemoryIndex


@dataclass
class _Issued:
    credential: Credential
    issued_at: datetime
    revoked_at: datetime | None = None


class MemoryTokens:
    """IssuedTokens on a dict (digest -> row), sharing the index's lock and outage switch."""

    def __init__(self, index: MemoryIndex) -> None:
        self.state = index.state
        self.token_rows: dict[str, _Issued] = {}

    @classmethod
    def beside(cls, index: MemoryIndex) -> MemoryTokens:
        return index.beside(cls, cls)

    def issue(self, credential: Credential) -> None:
        kept = Credential(name=credential.name, role=credential.role, token_sha256=credential.token_sha256,
                          ins=credential.ins)
        with self.state.lock:
            self.state.check()
            if kept.token_sha256 in self.token_rows:
                raise PermanentError("token digest already issued")
            self.token_rows[kept.token_sha256] = _Issued(kept, now())

    def lookup(self, token_sha256: str) -> Credential | None:
        with self.state.lock:
            self.state.check()
            found = self.token_rows.get(token_sha256)
        return found.credential if found is not None and found.revoked_at is None else None

    def revoke(self, ins: str) -> int:
        with self.state.lock:
            self.state.check()
            live = [row for row in self.token_rows.values() if row.credential.ins == ins and row.revoked_at is None]
            at = now()
            for row in live:
                row.revoked_at = at
        return len(live)
