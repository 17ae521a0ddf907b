"""Alembic's environment for the index database.

Run by storage.sql.migrate, which hands it a connection already inside its migration lock and transaction
(config.attributes["connection"]), or by a developer's `alembic -c storage/migrations/alembic.ini -x url=...`
(a connection is made here; the models' metadata is the target of --autogenerate).
Does not: decide when to migrate (storage.sql.migrate) or support offline (--sql) mode: the first revision
looks at what a database made before migrations already has.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection

from storage.sql.database import postgres_url


def _run(connection: Connection, target: sa.MetaData | None) -> None:
    context.configure(connection=connection, target_metadata=target, compare_type=True,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    if context.is_offline_mode():
        raise SystemExit("meshub's migrations run online only (the first one inspects the database)")
    given = context.config.attributes.get("connection")
    if isinstance(given, Connection):
        _run(given, None)
        return
    from storage.sql.schema import metadata  # the models: only a developer's autogenerate needs them

    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("give the database: alembic -c storage/migrations/alembic.ini -x url=URL ...")
    engine = sa.create_engine(postgres_url(url))
    try:
        with engine.begin() as connection:
            _run(connection, metadata)
    finally:
        engine.dispose()


main()
