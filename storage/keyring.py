"""The key-encryption keys (KEKs) that wrap every object's data key (storage.sealing).

Owns: where the keys come from, which one is current, and changing the key file (new key, retire a key).

| source (first found wins) | form | when |
|---|---|---|
| `MESHUB_KEK` (environment) | `id=BASE64[,id=BASE64...]`, the first entry is current | secrets injected as env |
| `MESHUB_KEK_FILE` (environment) | path of a key file | a mounted secret |
| `[s3] kek_file` (config) | path of a key file | production config |
| `DATA_DIR/keys/kek.json` | key file, created on first start (0600 in a 0700 folder) | embedded default only |
| none of these, production (an external S3 endpoint) | ConfigError at start | never a 500 later |

Key file (JSON): `{"format": "meshub-keyring/1", "current": ID, "keys": {ID: {"key": BASE64, "created_at": ISO}}}`.
A key file is re-read when it changes (checked at most once a second, and at once when an object names a KEK
this process does not know), so `meshub keys new` reaches a running hub without a restart; an environment
keyring changes only with a restart.  Ids are `kek-YYYYMMDD-<8 hex>`, not secret (stored with each object).
Writes are atomic (temporary file, fsync, rename) under an exclusive lock on `<file>.lock`.
Does not: encrypt (storage.sealing), or know which objects use which key (storage.rotation scans the bucket).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hub.errors import ConfigError
from storage.sealing import Kek

log = logging.getLogger(__name__)

ENV_KEYS, ENV_FILE = "MESHUB_KEK", "MESHUB_KEK_FILE"
FILE_FORMAT = "meshub-keyring/1"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_RELOAD_EVERY_S = 1.0


def new_kek_id() -> str:
    return f"kek-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"


def new_kek() -> Kek:
    return Kek(id=new_kek_id(), key=secrets.token_bytes(32))


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.encode(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{where}: a KEK must be base64") from exc
    if len(key) != 32:
        raise ConfigError(f"{where}: a KEK must be 32 bytes (AES-256), got {len(key)}")
    return key


def _check_id(kek_id: str, where: str) -> str:
    if not _ID.match(kek_id):
        raise ConfigError(f"{where}: KEK id {kek_id!r} must be 1-64 of [A-Za-z0-9._-]")
    return kek_id


@dataclass(frozen=True, slots=True)
class _Keys:
    current: Kek
    by_id: Mapping[str, Kek]
    created_at: Mapping[str, str]


class Keyring:
    """The KEKs of this process: `current` wraps new objects, any known one unwraps.  Thread-safe."""

    def __init__(self, keys: _Keys, *, source: str, path: Path | None = None) -> None:
        self._keys = keys
        self._source = source
        self._path = path
        self._stamp = _stamp(path) if path else None
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    @classmethod
    def of(cls, current: Kek, *others: Kek) -> Keyring:
        """An in-memory keyring (tests, benchmarks)."""
        by_id = {k.id: k for k in (current, *others)}
        return cls(_Keys(current, by_id, {}), source="memory")

    @classmethod
    def from_env_value(cls, value: str) -> Keyring:
        """`id=BASE64[,id=BASE64...]`, the first entry current."""
        entries = [e.strip() for e in value.split(",") if e.strip()]
        if not entries:
            raise ConfigError(f"{ENV_KEYS} is set but empty")
        keks = []
        for entry in entries:
            kek_id, sep, text = entry.partition("=")
            if not sep:
                raise ConfigError(f"{ENV_KEYS}: each entry is id=BASE64 (the first is current)")
            keks.append(Kek(id=_check_id(kek_id.strip(), ENV_KEYS), key=_decode_key(text.strip(), ENV_KEYS)))
        return cls(_Keys(keks[0], {k.id: k for k in keks}, {}), source=f"environment {ENV_KEYS}")

    @classmethod
    def from_file(cls, path: Path) -> Keyring:
        return cls(_read_file(path), source=f"key file {path}", path=path)

    @property
    def source(self) -> str:
        """Where the keys come from (no key material)."""
        return self._source

    @property
    def path(self) -> Path | None:
        """The key file, when the keys come from one (None: environment or memory)."""
        return self._path

    def current(self) -> Kek:
        self._maybe_reload(force=False)
        return self._keys.current

    def get(self, kek_id: str) -> Kek | None:
        """The KEK with this id, re-reading the key file first if it is not known yet."""
        kek = self._keys.by_id.get(kek_id)
        if kek is None and self._maybe_reload(force=True):
            kek = self._keys.by_id.get(kek_id)
        return kek

    def ids(self) -> list[str]:
        self._maybe_reload(force=False)
        return sorted(self._keys.by_id)

    def describe(self) -> list[dict[str, Any]]:
        """One row per KEK: id, current, created_at (never the key)."""
        self._maybe_reload(force=False)
        keys = self._keys
        return [{"id": i, "current": i == keys.current.id, "created_at": keys.created_at.get(i, "")}
                for i in sorted(keys.by_id)]

    def reload(self) -> None:
        self._maybe_reload(force=True)

    def _maybe_reload(self, *, force: bool) -> bool:
        """Re-read the key file when it changed; True when it was re-read."""
        if self._path is None:
            return False
        now = time.monotonic()
        if not force and now - self._checked < _RELOAD_EVERY_S:
            return False
        with self._lock:
            self._checked = now
            stamp = _stamp(self._path)
            if stamp == self._stamp:
                return False
            self._keys = _read_file(self._path)
            self._stamp = stamp
            log.info("key file re-read: current KEK %s", self._keys.current.id)
            return True


def _stamp(path: Path) -> tuple[int, int, int]:
    try:
        st = path.stat()
    except OSError:
        return (0, 0, 0)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _read_file(path: Path) -> _Keys:
    where = f"key file {path}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{where} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where} cannot be read: {type(exc).__name__}") from exc
    if not isinstance(data, dict) or data.get("format") != FILE_FORMAT or not isinstance(data.get("keys"), dict):
        raise ConfigError(f"{where} is not a {FILE_FORMAT} key file")
    by_id: dict[str, Kek] = {}
    created: dict[str, str] = {}
    for kek_id, entry in data["keys"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise ConfigError(f"{where}: key {kek_id!r} has no base64 'key'")
        by_id[kek_id] = Kek(id=_check_id(kek_id, where), key=_decode_key(entry["key"], where))
        created[kek_id] = str(entry.get("created_at", ""))
    current = data.get("current")
    if not isinstance(current, str) or current not in by_id:
        raise ConfigError(f"{where}: 'current' must name one of its keys")
    if path.stat().st_mode & 0o077:
        log.warning("%s is readable by other users than its owner: chmod 600 it", where)
    return _Keys(by_id[current], by_id, created)


# -- the key file: create, add, retire (meshub keys ...) ----------------------------------------------------

@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write(path: Path, keys: _Keys) -> None:
    data = {"format": FILE_FORMAT, "current": keys.current.id,
            "keys": {i: {"key": base64.b64encode(k.key).decode(), "created_at": keys.created_at.get(i, "")}
                     for i, k in keys.by_id.items()}}
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def ensure_key_file(path: Path) -> tuple[Keyring, bool]:
    """The key file at `path`, created with one fresh current KEK when absent (embedded default's first start).
    Returns the keyring and whether it was created."""
    with _locked(path):
        if path.exists():
            return Keyring.from_file(path), False
        kek = new_kek()
        _write(path, _Keys(kek, {kek.id: kek}, {kek.id: _now()}))
    os.chmod(path.parent, 0o700)
    return Keyring.from_file(path), True


def add_key(path: Path) -> Kek:
    """A new KEK in the key file, made current; the others stay (they still unwrap older objects)."""
    with _locked(path):
        keys = _read_file(path)
        kek = new_kek()
        _write(path, _Keys(kek, {**keys.by_id, kek.id: kek}, {**keys.created_at, kek.id: _now()}))
    return kek


def remove_key(path: Path, kek_id: str) -> None:
    """Drop a KEK from the key file (the caller checked that no object uses it); never the current one."""
    with _locked(path):
        keys = _read_file(path)
        if kek_id not in keys.by_id:
            raise ConfigError(f"KEK {kek_id} is not in key file {path}")
        if kek_id == keys.current.id:
            raise ConfigError(f"KEK {kek_id} is the current key: `meshub keys new` first, then rotate")
        _write(path, _Keys(keys.current, {i: k for i, k in keys.by_id.items() if i != kek_id},
                           {i: c for i, c in keys.created_at.items() if i != kek_id}))


def key_file_path(*, environ: Mapping[str, str], kek_file: str, data_dir: Path, embedded: bool) -> Path | None:
    """The key file this process uses, or None when the keys come from MESHUB_KEK."""
    if environ.get(ENV_KEYS):
        return None
    if environ.get(ENV_FILE):
        return Path(environ[ENV_FILE])
    if kek_file:
        return Path(kek_file)
    return data_dir / "keys" / "kek.json" if embedded else None


def open_keyring(*, environ: Mapping[str, str], kek_file: str, data_dir: Path, embedded: bool) -> Keyring:
    """The keyring from the first source of the table above; ConfigError when production has none."""
    if environ.get(ENV_KEYS):
        return Keyring.from_env_value(environ[ENV_KEYS])
    path = key_file_path(environ=environ, kek_file=kek_file, data_dir=data_dir, embedded=embedded)
    if path is None:
        raise ConfigError(
            "no key-encryption key: objects are encrypted at rest, so a hub with an external S3 store needs "
            f"{ENV_KEYS}=id=BASE64 or {ENV_FILE}=PATH in its environment, or [s3] kek_file = PATH in its config "
            "(`MESHUB_KEK_FILE=PATH meshub keys new` creates one)")
    if not embedded or environ.get(ENV_FILE) or kek_file:
        return Keyring.from_file(path)  # a configured file must exist: never invent production keys
    keyring, created = ensure_key_file(path)
    if created:
        log.warning("created the embedded default's key-encryption key in %s (mode 0600): back it up, "
                    "without it the stored objects cannot be read", path)
    return keyring
