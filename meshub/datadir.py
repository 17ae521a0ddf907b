"""The embedded default's data directory: secrets, development credentials and the running hub's URL.

Owns: the files a fresh `meshub run` creates on first start (mode 0600) and that
the CLI reads to reach a local hub.  Layout:
  secrets.json      object-key HMAC secret, embedded S3 access/secret keys
  credentials.json  development producer, admin, insurer and professional tokens (CLI and curl)
  hub.json          URL of the hub running on this data dir
  s3/ bus.sqlite3 index.sqlite3 drop/   the embedded services' data (s3/ports.json: SeaweedFS's ports)
Everything under the data dir holds patient data or secrets: `make_private` gives the hub process (and so its
children: SeaweedFS, SMTP gateways) the umask 0o077 and takes group/other bits off what a former run left.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from hub.auth import new_token, token_sha256
from hub.credentials import Credential, Role

DEFAULT_DATA_DIR = Path("meshub-data")
PRIVATE_UMASK = 0o077  # files 0600, folders 0700


def make_private(data_dir: Path) -> int:
    """umask 0o077 for this process and its children, the data dir made (0700) if missing, and every folder
    and file already under it stripped of group/other bits (symlinks are not followed).  Returns how many
    entries had to be fixed."""
    os.umask(PRIVATE_UMASK)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return strip_group_other(data_dir)


def strip_group_other(root: Path) -> int:
    """Take group/other bits off `root` and everything under it (symlinks not followed): for what a child
    writes with an explicit mode whatever the umask (SeaweedFS's .vif volume files are 0644).  Returns how
    many entries were fixed."""
    fixed = _strip_group_other(root)
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in (*dirs, *files):
            fixed += _strip_group_other(Path(folder) / name)
    return fixed


def _strip_group_other(path: Path) -> int:
    try:
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode) or not stat.S_IMODE(mode) & 0o077:
            return 0
        os.chmod(path, stat.S_IMODE(mode) & 0o700)
    except FileNotFoundError:  # went away meanwhile (a temp file)
        return 0
    return 1


def _write_private(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _load_or_create(path: Path, make: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    if path.exists():
        return json.loads(path.read_text()), False
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(path, make)
    return make, True


def secrets_for(data_dir: Path) -> dict[str, str]:
    data, _ = _load_or_create(data_dir / "secrets.json", {
        "key_secret": secrets.token_hex(32), "s3_access_key": "meshub" + secrets.token_hex(4),
        "s3_secret_key": secrets.token_urlsafe(24)})
    return {k: str(v) for k, v in data.items()}


#: the development identities of the embedded default: role -> name (and a professional's identity).
#: `mail_addresses`: what each may send as after SMTP AUTH (the producer: its establishment's domain; the
#: professional: their own box); the admin and the insurer send no MSSanté mail.
DEV_IDENTITIES: dict[str, dict[str, Any]] = {
    "producer": {"name": "dev-producer", "mail_addresses": ["hopital-dev.mssante.fr"]},
    "admin": {"name": "admin"},
    "insurer": {"name": "dev-insurer"},
    "professional": {"name": "dev-medecin", "idnps": "810000000019", "profession": "G15_10", "specialty": "SM54",
                     "mail_addresses": ["dev.medecin@medecin.mssante.fr"]},
}


def dev_credentials(data_dir: Path) -> tuple[tuple[Credential, ...], bool]:
    """The development producer, admin, insurer and professional (a general practitioner); created
    (and reported as new) on first start, and completed when a newer hub knows more roles."""
    path = data_dir / "credentials.json"
    data, created = _load_or_create(path, {role: {**who, "token": new_token()}
                                           for role, who in DEV_IDENTITIES.items()})
    missing = {role: {**who, "token": new_token()} for role, who in DEV_IDENTITIES.items() if role not in data}
    if missing:
        data.update(missing)
        _write_private(path, data)
    creds = tuple(Credential(name=entry["name"], role=Role(role), token_sha256=token_sha256(entry["token"]),
                             idnps=entry.get("idnps", ""), profession=entry.get("profession", ""),
                             specialty=entry.get("specialty", ""),
                             mail_addresses=_mail_addresses(role, entry)) for role, entry in data.items())
    return creds, created


def _mail_addresses(role: str, entry: dict[str, Any]) -> tuple[str, ...]:
    """The entry's addresses; a credentials.json written before addresses existed gets the role's default."""
    given = entry.get("mail_addresses", DEV_IDENTITIES.get(role, {}).get("mail_addresses", ()))
    return tuple(str(a).lower() for a in given)


def read_credentials(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "credentials.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_hub_url(data_dir: Path, url: str) -> None:
    _write_private(data_dir / "hub.json", {"url": url, "pid": os.getpid()})


def read_hub_url(data_dir: Path) -> str | None:
    path = data_dir / "hub.json"
    return str(json.loads(path.read_text())["url"]) if path.exists() else None
