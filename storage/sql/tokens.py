"""Bearer tokens the hub issues itself (a patient's, on activation), on the index's database.

Owns: the `api_tokens` table: the SHA-256 of each token (never the token), whose credential it is
(name, role, INS), when it was issued and revoked.  Configured credentials ([[credentials]]) stay in
the settings; these are the ones the hub hands out, so that activating a profile gives its owner access.
Implements hub.ports.IssuedTokens (its twin in memory: storage.memory.tokens; both pass
tests/contract/test_tokens_store.py).
Does not: decide who gets a token (the API does, after a successful activation) or compare tokens in
constant time over the network (a lookup by digest reveals nothing about other tokens).
"""

from __future__ import annotations

import sqlalchemy as sa

from hub.credentials import Credential, Role
from hub.errors import PermanentError
from storage.sql.database import SqlStore, metadata, utc_now

tokens = sa.Table(
    "api_tokens", metadata,
    sa.Column("token_sha256", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("ins", sa.String(15), nullable=False, index=True),
    sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
)


class SqlTokens(SqlStore):
    """Issued credentials: issue, look up by digest, revoke a patient's."""

    def issue(self, credential: Credential) -> None:
        """Keep `credential` (its token's digest); durable when this returns.  A digest already kept
        (live or revoked) is PermanentError, not the driver's error (the primary key refuses it)."""
        try:
            with self._db.begin() as conn:
                conn.execute(tokens.insert().values(token_sha256=credential.token_sha256, name=credential.name,
                                                    role=credential.role, ins=credential.ins,
                                                    issued_at=utc_now()))
        except sa.exc.IntegrityError as exc:
            raise PermanentError("token digest already issued") from exc

    def lookup(self, token_sha256: str) -> Credential | None:
        """The live credential whose token has this digest, or None."""
        with self._db.read() as conn:
            row = conn.execute(tokens.select().where(tokens.c.token_sha256 == token_sha256,
                                                     tokens.c.revoked_at.is_(None))).first()
        return None if row is None else Credential(name=row.name, role=Role(row.role), token_sha256=row.token_sha256,
                                                   ins=row.ins)

    def revoke(self, ins: str) -> int:
        """Every token issued for this patient stops working (closure, opposition); how many."""
        with self._db.begin() as conn:
            return int(conn.execute(tokens.update().where(tokens.c.ins == ins, tokens.c.revoked_at.is_(None))
                                    .values(revoked_at=utc_now())).rowcount)
