"""`meshub keys` as an operator runs it: a new KEK reaches the running hub, rotation re-wraps what is stored,
the old KEK is retired, and every document still comes back byte for byte over HTTP.  And a production hub
without a key does not start."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage.keyring import Keyring, new_kek
from tests import builders
from tests.integration.test_embedded import BIO, ROOT, embedded_hub, meshub
from tests.integration.test_intake_e2e import variant
from tests.services import free_port, missing

pytestmark = pytest.mark.integration


def _variant(extension: str) -> bytes:
    return variant(BIO.read_bytes(), extension=extension)


@pytest.mark.slow
def test_new_rotate_retire_on_the_embedded_default(tmp_path: Path) -> None:
    if not BIO.exists():
        missing(f"ANS fixture {BIO} not found")
    data, config = tmp_path / "data", tmp_path / "meshub.toml"
    config.write_text(f"[s3]\nembedded_port = {free_port()}\n")
    roster = tmp_path / "roster.csv"
    roster.write_text(builders.ROSTER_HEADER + builders.roster_line())
    second = tmp_path / "second.xml"
    second.write_bytes(_variant("second-after-new-kek"))
    dd = ("--data-dir", str(data))
    with embedded_hub(data, config):
        key_file = data / "keys" / "kek.json"
        assert key_file.stat().st_mode & 0o777 == 0o600 and key_file.parent.stat().st_mode & 0o777 == 0o700
        old = json.loads(meshub("keys", "list", "--json", *dd).stdout)["keys"][0]["id"]
        meshub("patients", "import", str(roster), *dd)
        first = json.loads(meshub("submit", str(BIO), "--wait", "--json", *dd).stdout)
        # a new KEK while the hub runs: it seals the next objects with it, without a restart
        new = json.loads(meshub("keys", "new", "--json", *dd).stdout)["id"]
        time.sleep(1.2)
        later = json.loads(meshub("submit", str(second), "--wait", "--json", *dd).stdout)
        assert first["status"] == later["status"] == "indexed"
        refused = meshub("keys", "rotate", *dd, check=False)
        assert refused.returncode == 2 and "is running" in refused.stderr
    scan = json.loads(meshub("keys", "rotate", "--dry-run", "--json", *dd).stdout)
    assert scan["stale"] >= 1 and scan["by_kek"].get(new, 0) >= 1 and old not in scan["retirable"]
    assert scan["plaintext"] == 0  # everything the hub stored is sealed
    kept = meshub("keys", "retire", old, "--json", *dd, check=False)
    assert kept.returncode == 1 and json.loads(kept.stdout)["retired"] is False  # still wraps objects

    rotated = json.loads(meshub("keys", "rotate", "--json", *dd).stdout)

    assert rotated["rewrapped"] == scan["stale"] and rotated["failed"] == 0 and rotated["retirable"] == [old]
    assert json.loads(meshub("keys", "rotate", "--json", *dd).stdout)["rewrapped"] == 0
    assert json.loads(meshub("keys", "retire", old, "--json", *dd).stdout)["retired"] is True
    assert [k["id"] for k in Keyring.from_file(data / "keys" / "kek.json").describe()] == [new]
    with embedded_hub(data, config):
        for row, original in ((first, BIO.read_bytes()), (later, second.read_bytes())):
            out = tmp_path / "back.xml"
            meshub("get", row["document_id"], "-o", str(out), *dd)
            assert out.read_bytes() == original


def _run_env(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MESHUB_KEK")}
    return subprocess.run([sys.executable, "-m", "meshub.cli", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env={**clean, **env})


def test_a_production_hub_without_a_key_does_not_start(tmp_path: Path) -> None:
    config = tmp_path / "prod.toml"
    config.write_text('[s3]\nendpoint = "127.0.0.1:9"\naccess_key = "a"\nsecret_key = "b"\nkey_secret = "k"\n'
                      '[bus]\nurl = "amqp://guest:guest@127.0.0.1:9//"\n')

    started = time.monotonic()
    done = _run_env(["run", "--config", str(config), "--data-dir", str(tmp_path / "d"), "--http-port", "0"], {})

    assert done.returncode == 2 and time.monotonic() - started < 30
    assert "MESHUB_KEK" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "d" / "keys").exists()  # production keys are never invented


def test_an_environment_keyring_is_listed_and_not_edited(tmp_path: Path) -> None:
    kek = new_kek()
    env = {"MESHUB_KEK": f"{kek.id}={base64.b64encode(kek.key).decode()}"}
    config = tmp_path / "prod.toml"
    config.write_text('[s3]\nendpoint = "127.0.0.1:9"\n')
    common = ["--config", str(config), "--data-dir", str(tmp_path)]

    listed = _run_env(["keys", "list", "--json", *common], env)
    new = _run_env(["keys", "new", *common], env)
    printed = _run_env(["keys", "new", "--print", "--json", *common], env)

    assert json.loads(listed.stdout)["keys"] == [{"id": kek.id, "current": True, "created_at": ""}]
    assert base64.b64encode(kek.key).decode() not in listed.stdout
    assert new.returncode == 2 and "MESHUB_KEK" in new.stderr
    entry = json.loads(printed.stdout)["entry"]
    assert Keyring.from_env_value(entry).current().id == json.loads(printed.stdout)["id"]
