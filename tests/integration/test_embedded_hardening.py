"""Issue 12, the embedded default on a shared machine: its data dir is private (0600 files in 0700 folders),
two hubs run side by side (internal ports chosen free, recorded in the data dir), a taken user-facing port is
one clear line and exit 2, and a foreign server on the S3 port is never taken for the hub's own SeaweedFS."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.errors import StoreUnavailable
from storage.seaweed import SeaweedServer
from storage.seaweed_net import listening_pids
from tests import builders
from tests.services import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MINIMAL = (Path(__file__).parents[1] / "data" / "minimal_cda.xml").read_bytes()


def run_args(data_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "meshub.cli", "run", "--data-dir", str(data_dir), "--workers", "1", *extra]


@contextmanager
def embedded_hub(data_dir: Path, *extra: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(run_args(data_dir, *extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=ROOT)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "hub ready at" in line:
                break
        assert any("hub ready at" in line for line in lines), "".join(lines)
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def hub_client(data_dir: Path, role: str) -> httpx.Client:
    url = json.loads((data_dir / "hub.json").read_text())["url"]
    token = json.loads((data_dir / "credentials.json").read_text())[role]["token"]
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def submit_and_list(data_dir: Path) -> list[dict[str, Any]]:
    with hub_client(data_dir, "admin") as admin, hub_client(data_dir, "producer") as producer:
        assert admin.post("/v1/patients/import",
                          content=builders.ROSTER_HEADER + builders.roster_line()).status_code == 200
        accepted = producer.post("/v1/documents", content=MINIMAL, headers={"Content-Type": "application/xml"})
        assert accepted.status_code == 202, accepted.text
        final = producer.get(f"/v1/submissions/{accepted.json()['submission']}", params={"wait": 30}).json()
        assert final["status"] == "indexed", final
        return list(admin.get(f"/v1/patients/{builders.TEST_INS}/documents").json()["documents"])


def readable_by_others(data_dir: Path) -> list[str]:
    """Every file or folder under data_dir (itself included) with a group or other permission bit."""
    found = []
    for folder, dirs, files in os.walk(data_dir):
        for path in [Path(folder), *(Path(folder) / n for n in (*dirs, *files))]:
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode) and stat.S_IMODE(mode) & 0o077:
                found.append(f"{path.relative_to(data_dir)} {stat.S_IMODE(mode):o}")
    return sorted(set(found))


def test_two_embedded_hubs_run_side_by_side_and_their_data_dirs_are_private(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    # a data dir left by an older hub: world-readable folders and files
    (first / "drop" / "incoming").mkdir(parents=True, mode=0o755)
    (first / "old-export.json").write_text("{}")
    os.chmod(first, 0o755)
    os.chmod(first / "old-export.json", 0o644)
    old_umask = os.umask(0o022)
    try:
        with embedded_hub(first, "--port", str(free_port()), "--smtp-port", str(free_port())), \
                embedded_hub(second, "--port", str(free_port()), "--smtp-port", str(free_port())):
            ports = [json.loads((d / "s3" / "ports.json").read_text()) for d in (first, second)]
            assert ports[0]["s3"] != ports[1]["s3"] and not set(ports[0].values()) & set(ports[1].values())
            listed = [submit_and_list(d) for d in (first, second)]
            assert [len(docs) for docs in listed] == [1, 1]  # each hub has its own store and index
            (first / "drop" / "incoming" / "dropped.xml").write_bytes(MINIMAL.replace(b"doc-1", b"doc-2"))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (first / "drop" / "done" / "dropped.xml").exists():
                time.sleep(0.2)
            assert (first / "drop" / "done" / "dropped.xml").exists()
            assert list((first / "s3").rglob("*.dat")) and list(first.glob("*.sqlite3*"))
            assert readable_by_others(first) == [] and readable_by_others(second) == []
    finally:
        os.umask(old_umask)
    assert readable_by_others(first) == [] and readable_by_others(second) == []


@contextmanager
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


@pytest.mark.parametrize("which", ["http", "smtp"])
def test_a_taken_user_facing_port_is_one_clear_line_and_exit_2(tmp_path: Path, which: str) -> None:
    with taken_port() as port:
        extra = (["--port", str(port), "--smtp-port", "0"] if which == "http"
                 else ["--port", str(free_port()), "--smtp-port", str(port)])
        done = subprocess.run(run_args(tmp_path / "data", *extra), capture_output=True, text=True, timeout=60,
                              cwd=ROOT)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    (line,) = done.stderr.strip().splitlines()
    option = "--http-port" if which == "http" else "--smtp-port"
    assert f"127.0.0.1:{port}" in line and "already in use" in line and option in line, line
    assert not (tmp_path / "data" / "s3").exists()  # nothing was started


class ForeignS3:
    """Another program's server on a port: answers 200 to everything and counts what it is sent."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                requests.append((self.command, self.path))
                self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def foreign() -> Iterator[ForeignS3]:
    server = ForeignS3()
    yield server
    server.close()


def test_a_foreign_server_on_the_configured_s3_port_is_refused_clearly(tmp_path: Path, foreign: ForeignS3) -> None:
    config = tmp_path / "meshub.toml"
    config.write_text(f"[s3]\nembedded_port = {foreign.port}\n")
    done = subprocess.run(run_args(tmp_path / "data", "--config", str(config), "--port", str(free_port()),
                                   "--smtp-port", "0"), capture_output=True, text=True, timeout=90, cwd=ROOT)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert f":{foreign.port}" in done.stderr and "embedded_port" in done.stderr, done.stderr
    assert not [r for r in foreign.requests if r[0] in ("PUT", "POST")]


def test_a_listener_is_known_by_the_process_that_holds_it(foreign: ForeignS3) -> None:
    assert listening_pids(foreign.port) == {os.getpid()}
    assert listening_pids(free_port()) == set()


def test_seaweedfs_is_not_ready_while_a_foreign_process_holds_its_s3_port(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The port was free when checked and taken before the child bound it: the answer on the port is not the
    child's, so start() fails instead of handing the hub to the foreign server."""
    foreign = subprocess.Popen([sys.executable, "-c", (
        "import http.server, sys\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.send_header('Content-Length', '0'); self.end_headers()\n"
        "    do_PUT = do_GET\n"
        "s = http.server.HTTPServer(('127.0.0.1', 0), H)\n"
        "print(s.server_address[1], flush=True)\n"
        "s.serve_forever()\n")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert foreign.stdout is not None
        port = int(foreign.stdout.readline())
        monkeypatch.setattr("storage.seaweed_net.port_free", lambda bind, p: True)  # the race: checked free
        server = SeaweedServer(tmp_path / "s3", s3_port=port, access_key="k" * 8, secret_key="s" * 16)
        with pytest.raises(StoreUnavailable):  # the child is not the one answering there (or it gave up)
            server.start(timeout_s=60)
        assert not server.running()
    finally:
        foreign.kill()
        _, log = foreign.communicate()
    assert '"PUT ' not in log and '"POST ' not in log


def test_a_port_answering_for_another_process_is_not_the_childs(tmp_path: Path, foreign: ForeignS3) -> None:
    """The readiness rule itself: a listener held by another PID than the child's is refused, by port."""
    server = SeaweedServer(tmp_path / "s3", s3_port=foreign.port, access_key="k" * 8, secret_key="s" * 16)
    child = subprocess.Popen(["sleep", "30"])
    try:
        server._proc = child  # a live child that does not hold the port
        with pytest.raises(StoreUnavailable, match=f":{foreign.port} planned for the embedded SeaweedFS is held"):
            server._ours(foreign.port)
        assert server._ours(free_port()) is False  # nobody listens there yet: not ready, no error
    finally:
        server._proc = None
        child.kill()
        child.wait()
