"""`meshub keys`: the key-encryption keys of encryption at rest (storage.keyring, storage.rotation).

| command | what it does |
|---|---|
| `keys list` | the KEKs (id, current, created), never a key |
| `keys new` | a new KEK in the key file, made current (the file is created if absent); running hubs |
| | pick it up within a second.  `--print`: only print a new `id=BASE64` entry for `MESHUB_KEK` |
| `keys rotate` | every object's data key re-wrapped under the current KEK (metadata only, no body read); |
| | plaintext objects from before encryption are encrypted; idempotent, `--start-after KEY` |
| | resumes; says which KEKs no object uses any more |
| `keys retire ID` | removes a KEK from the key file, only if not current and a full scan finds no object under it |

They take the server's `--config` and `--data-dir`.  Rotate and retire talk to S3 directly: on the embedded
default they start its SeaweedFS, so the hub on that data dir must be stopped first (they say so); with an
external S3 store they run beside the hubs.  Exit codes: 0 done, 1 something left (failed objects, a KEK
still in use), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

from config.settings import Settings, settings_from_file
from hub.errors import ConfigError
from meshub import datadir
from meshub.cli_client import EXIT_FAILED, EXIT_OK
from storage import keyring as keys
from storage.objects import MinioBlobStore
from storage.rotation import RotationReport, rotate


def add_parsers(sub: Any) -> None:
    parser = sub.add_parser("keys", help="key-encryption keys of encryption at rest: list, new, rotate, retire")
    actions = parser.add_subparsers(dest="keys_command", required=True)
    for name, text in (("list", "list the KEKs (never a key)"), ("new", "add a KEK and make it current"),
                       ("rotate", "re-wrap every object's data key under the current KEK"),
                       ("retire", "remove a KEK that no object uses")):
        action = actions.add_parser(name, help=text)
        action.add_argument("--data-dir", type=Path, default=datadir.DEFAULT_DATA_DIR)
        action.add_argument("--config", type=Path, help="the hub's TOML config file")
        action.add_argument("--json", action="store_true")
        if name == "new":
            action.add_argument("--print", action="store_true", dest="print_only",
                                help="print a new id=BASE64 entry for MESHUB_KEK; write nothing")
        if name == "rotate":
            action.add_argument("--start-after", help="resume after this object key (printed by a previous run)")
            action.add_argument("--workers", type=int, default=8, help="objects handled at once")
            action.add_argument("--dry-run", action="store_true", help="count only, change nothing")
        if name == "retire":
            action.add_argument("kek_id")


def _settings(args: argparse.Namespace) -> Settings:
    return settings_from_file(args.config or None, data_dir=args.data_dir)


def _keyring(settings: Settings) -> keys.Keyring:
    return keys.open_keyring(environ=os.environ, kek_file=settings.store.kek_file, data_dir=settings.data_dir,
                             embedded=settings.embedded_store)


def _key_file(settings: Settings) -> Path:
    path = keys.key_file_path(environ=os.environ, kek_file=settings.store.kek_file, data_dir=settings.data_dir,
                              embedded=settings.embedded_store)
    if path is None:
        raise ConfigError(f"the keys come from {keys.ENV_KEYS}, not from a file: edit that variable "
                          "(`meshub keys new --print` makes an entry; put it first to make it current)")
    return path


def _out(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data, ensure_ascii=False) if args.json else text, flush=True)


def cmd_keys(args: argparse.Namespace) -> int:
    settings = _settings(args)
    command = args.keys_command
    if command == "list":
        ring = _keyring(settings)
        rows = ring.describe()
        _out(args, {"source": ring.source, "keys": rows}, "\n".join(
            [f"keys from {ring.source}"] + [f"{'*' if r['current'] else ' '} {r['id']}  {r['created_at']}"
                                            for r in rows]))
        return EXIT_OK
    if command == "new":
        return _new(args, settings)
    if command == "rotate":
        return _rotate(args, settings)
    return _retire(args, settings)


def _new(args: argparse.Namespace, settings: Settings) -> int:
    if args.print_only:
        kek = keys.new_kek()
        _out(args, {"id": kek.id, "entry": f"{kek.id}={base64.b64encode(kek.key).decode()}"},
             f"{kek.id}={base64.b64encode(kek.key).decode()}")
        return EXIT_OK
    path = _key_file(settings)
    if path.exists():
        kek = keys.add_key(path)
    else:
        ring, _ = keys.ensure_key_file(path)
        kek = ring.current()
    _out(args, {"id": kek.id, "current": True, "key_file": str(path)},
         f"meshub: new KEK {kek.id} is current (key file {path}); new objects are sealed under it. "
         "Run `meshub keys rotate` to re-wrap the existing ones.")
    return EXIT_OK


def _hub_running(data_dir: Path) -> int | None:
    try:
        pid = int(json.loads((data_dir / "hub.json").read_text())["pid"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid


def _store(settings: Settings, stack: ExitStack) -> MinioBlobStore:
    from meshub.compose_store import object_store as _object_store  # heavy imports only when S3 is needed

    if settings.embedded_store:
        pid = _hub_running(settings.data_dir)
        if pid is not None:
            raise ConfigError(f"the hub on {settings.data_dir} is running (pid {pid}) and holds its embedded "
                              "SeaweedFS: stop it, run this command, start it again (with an external S3 store "
                              "this runs beside the hubs)")
    if not settings.key_secret:
        settings = replace(settings, key_secret=datadir.secrets_for(settings.data_dir)["key_secret"].encode())
    store = _object_store(settings, stack)
    stack.callback(store.close)
    return store


def _rotate(args: argparse.Namespace, settings: Settings) -> int:
    with ExitStack() as stack:
        store = _store(settings, stack)

        def progress(report: RotationReport) -> None:
            if not args.json:
                print(f"  ... {report.scanned} objects, last key {report.last_key}", file=sys.stderr, flush=True)

        report = rotate(store, apply=not args.dry_run, workers=args.workers, start_after=args.start_after,
                        on_batch=progress)
    _out(args, report.to_dict(), _rotation_text(report))
    return EXIT_FAILED if report.failed else EXIT_OK


def _rotation_text(r: RotationReport) -> str:
    lines = [f"meshub: {'rotation' if r.applied else 'scan (dry run)'}: {r.scanned} objects, current KEK {r.current}",
             f"  already current {r.already_current}, re-wrapped {r.rewrapped}, plaintext encrypted "
             f"{r.sealed_plaintext}, left: stale {r.stale} plaintext {r.plaintext} foreign {r.foreign}, "
             f"vanished {r.vanished}, failed {r.failed}"]
    lines += [f"  KEK {kek_id}: {count} object(s)" for kek_id, count in sorted(r.by_kek.items())]
    lines += [f"  KEK {kek_id} is not in the keyring: {count} object(s) cannot be read"
              for kek_id, count in sorted(r.unknown_kek.items())]
    if r.complete:
        lines.append("  retirable (no object uses them): " + (", ".join(r.retirable) or "none"))
    else:
        lines.append("  resumed part-way: run once from the start to know which KEKs can be retired")
    if r.failed:
        lines.append(f"  some objects failed: run again (resume with --start-after {r.last_key} after a stop)")
    return "\n".join(lines)


def _retire(args: argparse.Namespace, settings: Settings) -> int:
    path = _key_file(settings)
    with ExitStack() as stack:
        store = _store(settings, stack)
        ring = store.keyring
        assert ring is not None  # compose always gives the store a keyring
        if args.kek_id not in ring.ids():
            raise ConfigError(f"KEK {args.kek_id} is not in {ring.source}")
        if args.kek_id == ring.current().id:
            raise ConfigError(f"KEK {args.kek_id} is the current key: `meshub keys new` first, then rotate")
        report = rotate(store, apply=False, workers=8)
    used = report.by_kek.get(args.kek_id, 0)
    if used:
        _out(args, {"retired": False, "id": args.kek_id, "objects": used},
             f"meshub: KEK {args.kek_id} still wraps {used} object(s): run `meshub keys rotate` first")
        return EXIT_FAILED
    keys.remove_key(path, args.kek_id)
    _out(args, {"retired": True, "id": args.kek_id, "objects": 0},
         f"meshub: KEK {args.kek_id} removed from {path} (no object used it)")
    return EXIT_OK
