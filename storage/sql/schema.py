"""The models: every table of the index's database, in one MetaData (what the migrations must produce).

Owns: nothing but the list of store modules whose tables make the schema; importing this module imports
them all, so `metadata` is complete (alembic's env.py and the migration tests compare against it).
Does not: create anything (storage/migrations does) or hold a query.
"""

from __future__ import annotations

from storage.sql import audit, controls, index, mailbox, notifications, profiles, purge, reimbursements, tokens
from storage.sql.database import metadata

STORE_MODULES = (index, mailbox, notifications, audit, controls, profiles, purge, reimbursements, tokens)

__all__ = ["STORE_MODULES", "metadata"]
