"""The baseline: the schema of the hub before migrations (storage/migrations/baseline.py), created or adopted.

On an empty database every table is created with its keys and indexes.  On a database made before
migrations (tables there, no alembic_version) the same revision adopts it: a missing table or index is
created, a late column (LATE_COLUMNS) is added as its ALTER TABLE did, and any other difference stops the
upgrade (nothing is changed: the revision runs in one transaction) with the table and columns named.
No row is touched.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.errors import ConfigError
from storage.migrations.baseline import BASELINE, LATE_COLUMNS

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    present = set(inspector.get_table_names())
    for table in BASELINE.sorted_tables:
        if table.name in present:
            _adopt(bind, inspector, table)
        else:
            table.create(bind)


def _adopt(bind: sa.Connection, inspector: sa.Inspector, table: sa.Table) -> None:
    """Bring a table made before migrations to the baseline, or refuse with what differs."""
    columns = {c["name"] for c in inspector.get_columns(table.name)}
    for name in [c.name for c in table.columns if c.name not in columns]:
        if (table.name, name) not in LATE_COLUMNS:
            raise ConfigError(f"cannot adopt table {table.name}: column {name} is missing, and no release of "
                              "the hub added it later (a damaged database?)")
        late = table.c[name]
        default = late.server_default.arg if isinstance(late.server_default, sa.DefaultClause) else None
        assert default is None or isinstance(default, str)
        op.add_column(table.name, sa.Column(name, late.type, nullable=late.nullable, server_default=default))
    unknown = columns - {c.name for c in table.columns}
    if unknown:
        raise ConfigError(f"cannot adopt table {table.name}: unknown columns {', '.join(sorted(unknown))} "
                          "(made by another program?)")
    indexes = {i["name"] for i in inspector.get_indexes(table.name)}
    for index in table.indexes:
        if index.name not in indexes:
            index.create(bind)


def downgrade() -> None:
    """Back to an empty database: every table of the baseline is dropped, with its rows."""
    bind = op.get_bind()
    for table in reversed(BASELINE.sorted_tables):
        table.drop(bind, checkfirst=True)
