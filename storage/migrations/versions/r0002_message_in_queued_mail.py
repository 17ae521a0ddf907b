"""Mail stored once: a mailbox copy points into the queued mail intake stored at the 250.

Adds `messages.blob_offset` (where the message starts in the object) and `messages.blob_sha256` (the whole
object's SHA-256, checked on every read).  Rows written before keep the defaults (0, ''): they point at a
copy of their own (`msg/` objects), read as before.  No row is rewritten.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("blob_offset", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("blob_sha256", sa.String(64), nullable=False, server_default=""))


def downgrade() -> None:
    """Drop the two columns (copies pointing into a queued mail would then read the wrong bytes)."""
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("blob_sha256")
        batch.drop_column("blob_offset")
