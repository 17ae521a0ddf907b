"""`meshub migrate`: bring the index database's schema to this version's migrations head (storage.sql.migrate).

| option | what it does |
|---|---|
| (none) | the database of `--config` (its [index] url) or of the embedded default in `--data-dir` |
| `--sql-url URL` | that database instead (sqlite:///PATH, postgresql://...) |
| `--check` | only say where it is: exit 0 at head, 1 behind (nothing is changed) |
| `--json` | one JSON object: url (password hidden), current, target, migrated, adopted |

It prints the current and the target revision, then what it did.  A database made before migrations (the
hub's tables without alembic_version) is adopted, keeping every row.  Safe beside running hubs: migrators
take turns (an advisory lock on PostgreSQL, the write lock on SQLite), and `meshub run` migrates at start
anyway.  Exit codes: 0 done (or at head), 1 `--check` found it behind, 2 usage, configuration or database
errors.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from config.settings import settings_from_file
from hub.errors import ConfigError, IndexUnavailable
from meshub import datadir
from meshub.cli_client import EXIT_FAILED, EXIT_OK
from storage.sql import migrate
from storage.sql.database import Database, postgres_url


def add_parsers(sub: Any) -> None:
    parser = sub.add_parser("migrate", help="bring the index database to the current schema (Alembic migrations)")
    parser.add_argument("--data-dir", type=Path, default=datadir.DEFAULT_DATA_DIR)
    parser.add_argument("--config", type=Path, help="the hub's TOML config file (its [index] url)")
    parser.add_argument("--sql-url", help="the database to migrate (default: the config's or the embedded one)")
    parser.add_argument("--check", action="store_true", help="change nothing: exit 1 unless at the head")
    parser.add_argument("--json", action="store_true")


def _url(args: argparse.Namespace) -> str:
    if args.sql_url:
        return str(args.sql_url)
    settings = settings_from_file(args.config or None, data_dir=args.data_dir)
    if settings.index_url.startswith("sqlite:///"):
        datadir.make_private(settings.data_dir)  # the embedded default: its folder, private, as `meshub run` makes it
    return settings.index_url


def _shown(revision: str | None, database: Database) -> str:
    if revision is not None:
        return revision
    return "none (made before migrations)" if migrate.legacy(database) else "none (empty)"


def cmd_migrate(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="meshub: %(message)s")
    url = _url(args)
    hidden = sa.make_url(postgres_url(url)).render_as_string(hide_password=True)
    database = Database.connect(url)
    try:
        before, target = migrate.current(database), migrate.head()
        report: dict[str, Any] = {"url": hidden, "current": before, "target": target, "migrated": False,
                                  "adopted": False}
        lines = [f"meshub: index database {hidden}",
                 f"meshub: current revision {_shown(before, database)}, target {target}"]
        code = EXIT_OK
        if args.check:
            code = EXIT_OK if before == target else EXIT_FAILED
            lines.append("meshub: at the head" if before == target else "meshub: behind: run `meshub migrate`")
        elif before == target:
            lines.append("meshub: already at the head, nothing to do")
        else:
            done = migrate.upgrade(database)
            report.update(current=done.after, migrated=done.changed, adopted=done.adopted)
            lines.append(f"meshub: migrated to {done.after}" + (
                " (adopted a database made before migrations; every row kept)" if done.adopted else ""))
    except IndexUnavailable as exc:
        raise ConfigError(f"cannot reach the index database {hidden}: {exc}") from exc
    finally:
        database.dispose()
    print(json.dumps(report) if args.json else "\n".join(lines), flush=True)
    return code
