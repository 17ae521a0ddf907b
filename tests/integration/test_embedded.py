"""The embedded default, as a user runs it: `meshub run` with no configuration (SQLite bus and
index, SeaweedFS child process), driven by the `meshub` CLI; and it survives kill -9."""

from __future__ import annotations

import json
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests import builders, mail_builders
from tests.services import FIXTURES_CDA, free_port, missing

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BIO = FIXTURES_CDA / "BIO-CR-BIO_2024.01_TSH_1.xml"


def meshub(*args: str, check: bool = True, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "meshub.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)
    if check:
        assert done.returncode == 0, (done.stdout, done.stderr)
    return done


@contextmanager
def embedded_hub(data_dir: Path, config: Path, *, cwd: Path = ROOT, ignore_sigint: bool = False,
                 smtp_port: int | None = None) -> Iterator[subprocess.Popen[str]]:
    """`ignore_sigint`: start the hub as a background job of a script does, with SIGINT ignored."""
    port = free_port()
    smtp_port = smtp_port or free_port()
    preexec = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
    proc = subprocess.Popen([sys.executable, "-m", "meshub.cli", "run", "--data-dir", str(data_dir),
                             "--http-port", str(port), "--smtp-port", str(smtp_port), "--config", str(config),
                             "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                            preexec_fn=preexec)
    lines = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "hub ready at" in line:
                break
        assert any("hub ready at" in line for line in lines), "".join(lines)
        proc.output = lines  # type: ignore[attr-defined]
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def embedded_config(tmp_path: Path) -> Path:
    if not BIO.exists():
        missing(f"ANS fixture {BIO} not found")
    config = tmp_path / "meshub.toml"
    config.write_text(f"[s3]\nembedded_port = {free_port()}\n[filedrop]\nproducer = \"lab-drop\"\n")
    return config


def test_first_start_creates_credentials_and_the_cli_round_trip_works(tmp_path: Path,
                                                                      embedded_config: Path) -> None:
    # A relative --data-dir, as a user types it, resolved against the working folder.
    data = Path("data")
    roster = tmp_path / "roster.csv"
    roster.write_text(builders.ROSTER_HEADER + builders.roster_line())
    with embedded_hub(data, embedded_config, cwd=tmp_path) as proc:
        assert any("created development credentials" in line for line in proc.output)  # type: ignore[attr-defined]
        assert (tmp_path / data / "credentials.json").stat().st_mode & 0o077 == 0
        meshub("patients", "import", str(roster), "--data-dir", str(data), cwd=tmp_path)
        out = meshub("submit", str(BIO), "--wait", "--json", "--data-dir", str(data), cwd=tmp_path).stdout
        row = json.loads(out)
        assert {k: row[k] for k in ("file", "status", "category")} == {
            "file": str(BIO), "status": "indexed", "category": "BIOLOGIE"}
        assert row["submission"] and row["document_id"] and row["findings"] == []
        listed = [json.loads(x) for x in meshub("documents", builders.TEST_INS, "--json",
                                                "--data-dir", str(data), cwd=tmp_path).stdout.splitlines()]
        assert [d["document_id"] for d in listed] == [row["document_id"]]
        got = meshub("get", row["document_id"], "-o", str(tmp_path / "back.xml"), "--data-dir", str(data),
                     cwd=tmp_path)
        assert got.returncode == 0 and (tmp_path / "back.xml").read_bytes() == BIO.read_bytes()
        rejected = meshub("submit", str(FIXTURES_CDA / "CSE-CS8_2024.01.xml"), "--wait", "--json",
                          "--data-dir", str(data), check=False, cwd=tmp_path)
        assert rejected.returncode == 1 and json.loads(rejected.stdout)["status"] == "rejected"


def test_an_accepted_submission_survives_kill_9_of_the_hub(tmp_path: Path, embedded_config: Path) -> None:
    data = tmp_path / "data"
    roster = tmp_path / "roster.csv"
    roster.write_text(builders.ROSTER_HEADER + builders.roster_line())
    with embedded_hub(data, embedded_config) as proc:
        meshub("patients", "import", str(roster), "--data-dir", str(data))
        # Given a submission that got its 202 ...
        row = json.loads(meshub("submit", str(BIO), "--json", "--data-dir", str(data)).stdout)
        # ... when the hub is killed -9 right away (before or while the worker handles it)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(0.5)
    # Then after a restart the submission ends indexed, exactly once
    with embedded_hub(data, embedded_config):
        status = json.loads(meshub("status", row["submission"], "--wait", "--json", "--data-dir",
                                   str(data)).stdout)
        assert status["status"] == "indexed"
        listed = meshub("documents", builders.TEST_INS, "--json", "--data-dir", str(data)).stdout.splitlines()
        assert len(listed) == 1


def test_a_mail_that_got_250_is_filed_exactly_once_after_kill_9(tmp_path: Path, embedded_config: Path) -> None:
    data, smtp_port = tmp_path / "data", free_port()
    roster = tmp_path / "roster.csv"
    roster.write_text(builders.ROSTER_HEADER + builders.roster_line())
    message = mail_builders.make_mail_with_xdm([BIO.read_bytes()]).replace(b"\n", b"\r\n")
    with embedded_hub(data, embedded_config, smtp_port=smtp_port) as proc:
        meshub("patients", "import", str(roster), "--data-dir", str(data))
        # Given a message the gateway answered 250 for (STARTTLS offered with the development certificate)
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            client.ehlo()
            assert client.has_extn("starttls")
            client.sendmail("dr.test@hopital.mssante.fr", [mail_builders.PATIENT_ADDRESS], message)
        # ... when the hub is killed -9 right away, before or while the pipeline files it
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(0.5)
    # Then after a restart the message is in the mailbox once, and its document in the record once
    with embedded_hub(data, embedded_config, smtp_port=smtp_port):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            listed = meshub("messages", builders.TEST_INS, "--json", "--data-dir", str(data)).stdout.splitlines()
            documents = meshub("documents", builders.TEST_INS, "--json", "--data-dir", str(data)).stdout.splitlines()
            if listed and documents:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # let any duplicate that would arrive arrive
        listed = meshub("messages", builders.TEST_INS, "--json", "--data-dir", str(data)).stdout.splitlines()
        documents = meshub("documents", builders.TEST_INS, "--json", "--data-dir", str(data)).stdout.splitlines()
    assert len(listed) == 1 and json.loads(listed[0])["correspondent"] == "dr.test@hopital.mssante.fr"
    assert len(documents) == 1


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_sigint_stops_the_hub_and_its_s3_server(tmp_path: Path, embedded_config: Path,
                                                           signum: int) -> None:
    # Given a hub started in the background by a script (SIGINT ignored, as a shell does for `cmd &`)
    with embedded_hub(tmp_path / "data", embedded_config, ignore_sigint=True) as proc:
        children = _children(proc.pid)
        assert children, "the embedded hub runs SeaweedFS as a child process"
        # When it is asked to stop
        proc.send_signal(signum)
        # Then it exits cleanly, and its children (SeaweedFS, the SMTP gateway processes and multiprocessing's
        # resource tracker) are gone with it within seconds
        assert proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 15
        for child in children:
            while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text()


def test_file_drop_moves_files_to_done_or_failed_with_the_reason(tmp_path: Path, embedded_config: Path) -> None:
    data = tmp_path / "data"
    roster = tmp_path / "roster.csv"
    roster.write_text(builders.ROSTER_HEADER + builders.roster_line())
    with embedded_hub(data, embedded_config):
        meshub("patients", "import", str(roster), "--data-dir", str(data))
        incoming = data / "drop" / "incoming"
        shutil.copy(BIO, incoming / "lab-report.xml.part")
        os.rename(incoming / "lab-report.xml.part", incoming / "lab-report.xml")
        (incoming / "broken.xml").write_bytes(b"<ClinicalDocument")
        done, failed = data / "drop" / "done", data / "drop" / "failed"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not ((done / "lab-report.xml").exists()
                                                   and (failed / "broken.xml").exists()):
            time.sleep(0.1)
        assert (done / "lab-report.xml").read_bytes() == BIO.read_bytes()
        assert json.loads((done / "lab-report.xml.result.json").read_text())["status"] == "indexed"
        reason = json.loads((failed / "broken.xml.reason.json").read_text())
        assert reason["status"] == "rejected" and reason["findings"][0]["rule"] == "xml.well-formed"
        assert list(incoming.iterdir()) == [] and list((data / "drop" / "processing").iterdir()) == []


def test_without_a_smart_host_notification_emails_land_in_the_outbox(tmp_path: Path, embedded_config: Path) -> None:
    import httpx

    from meshub import datadir

    data = tmp_path / "data"
    roster = tmp_path / "roster.csv"
    roster.write_text(builders.ROSTER_HEADER + builders.roster_line())
    with embedded_hub(data, embedded_config):
        meshub("patients", "import", str(roster), "--data-dir", str(data))
        admin = datadir.read_credentials(data)["admin"]["token"]
        url = datadir.read_hub_url(data)
        assert url, "the hub writes its URL in the data dir"
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}) as client:
            # no quiet hours for this patient: the test must not depend on the hour it runs at
            assert client.put(f"/v1/patients/{builders.TEST_INS}/notification-preferences",
                              json={"quiet_hours": ""}).status_code == 200
        meshub("submit", str(BIO), "--wait", "--data-dir", str(data))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not list((data / "outbox" / "email").glob("*.eml")):
            time.sleep(0.2)
        [eml] = list((data / "outbox" / "email").glob("*.eml"))
        text = eml.read_text()
        assert "To: jeanne@example.org" in text and "TSH" not in text and builders.TEST_INS not in text
        rows = [json.loads(x) for x in meshub("notifications", builders.TEST_INS, "--json",
                                              "--data-dir", str(data)).stdout.splitlines()]
        assert {(r["channel"], r["state"]) for r in rows} == {("inapp", "delivered"), ("email", "delivered")}
