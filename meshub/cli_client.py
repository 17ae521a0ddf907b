"""What every client command shares: finding the hub and its token, checking answers, printing rows.

Owns: --url/--token/--data-dir/--json, the hub URL and development tokens written by `meshub run`
in the data dir (or MESHUB_URL / MESHUB_TOKEN), and the exit codes: 0 success; 1 a submission was
rejected or something asked for is missing or broken; 2 usage, connection or server errors.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from meshub import datadir

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


class CliError(Exception):
    """A problem to print on stderr and exit 2."""


def add_client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="hub URL (default: the hub running on --data-dir, or $MESHUB_URL)")
    p.add_argument("--token", help="bearer token (default: the dev credential in --data-dir, or $MESHUB_TOKEN)")
    p.add_argument("--data-dir", type=Path, default=datadir.DEFAULT_DATA_DIR)
    p.add_argument("--json", action="store_true", help="machine-readable output, one JSON object per line")


def client(args: argparse.Namespace, role: str) -> httpx.Client:
    url = args.url or os.environ.get("MESHUB_URL") or datadir.read_hub_url(args.data_dir)
    if not url:
        raise CliError(f"no hub URL: start `meshub run --data-dir {args.data_dir}` or pass --url")
    token = args.token or os.environ.get("MESHUB_TOKEN") or datadir.read_credentials(args.data_dir).get(
        role, {}).get("token")
    if not token:
        raise CliError(f"no {role} token: pass --token, or point --data-dir at the hub's data dir")
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=70.0)


def check(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        try:
            err = response.json().get("error", {})
            message = err.get("message_en") or json.dumps(err)
        except ValueError:
            message = response.text[:300]
        raise CliError(f"HTTP {response.status_code}: {message}")
    return dict(response.json())


def print_rows(rows: list[dict[str, Any]], as_json: bool, line: Callable[[dict[str, Any]], str]) -> None:
    """One JSON object per line with --json, else one human line per row."""
    for row in rows:
        print(json.dumps(row, ensure_ascii=False) if as_json else line(row))
