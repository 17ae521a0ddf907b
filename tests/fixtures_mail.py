"""pytest plugin: the loopback Dovecot (IMAP + LMTP) that scripts/dovecot.sh starts (register with `pytest_plugins`).

Owns: `dovecot` (session): where that instance listens, its one password and its folder, read from the
environment variables scripts/dovecot.sh reads, with the same defaults; `mailbox_address`: a fresh
mailbox address per test (`pharma-<uuid>@<first domain>`), so tests never see each other's mail.
When the ports are closed: skip locally, fail when CI=true (scripts/test starts Dovecot first).
Does not: start or stop Dovecot (scripts/services.sh -> scripts/dovecot.sh start) or mark tests.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services import missing, port_open

HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Dovecot:
    """A running Dovecot: IMAP and LMTP on `host`, every mailbox with `password`, files under `base_dir`."""

    host: str
    imap_port: int
    lmtp_port: int
    password: str
    base_dir: Path
    domain: str

    @property
    def config(self) -> Path:
        """The rendered dovecot.conf, for `doveadm -c` (kick, who) and `dovecot -c ... stop`."""
        return self.base_dir / "dovecot.conf"


def _from_env() -> Dovecot:
    env = os.environ
    return Dovecot(host=HOST, imap_port=int(env.get("MESHUB_DOVECOT_IMAP_PORT", "10143")),
                   lmtp_port=int(env.get("MESHUB_DOVECOT_LMTP_PORT", "10024")),
                   password=env.get("MESHUB_DOVECOT_PASSWORD", "meshub-test"),
                   base_dir=Path(env.get("MESHUB_DOVECOT_DIR", "/var/tmp/meshub-dovecot")),
                   domain=env.get("MESHUB_DOVECOT_DOMAINS", "org.test.mssante.fr").split()[0])


@pytest.fixture(scope="session")
def dovecot() -> Dovecot:
    found = _from_env()
    closed = [port for port in (found.imap_port, found.lmtp_port) if not port_open(found.host, port)]
    if closed:
        missing(f"Dovecot is not listening on {found.host} port(s) {closed} (run scripts/dovecot.sh start)")
    return found


@pytest.fixture
def mailbox_address(dovecot: Dovecot) -> str:
    return f"pharma-{uuid.uuid4().hex[:16]}@{dovecot.domain}"
