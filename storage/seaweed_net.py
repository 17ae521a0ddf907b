"""The embedded SeaweedFS's network side: its port plan, who listens on a port, and its HTTP probes.

Owns: the eight ports of one `weed server` (picked free and distinct, kept in data_dir/ports.json and
reused when still free), the processes holding a listening socket (from /proc, Linux), and the probes
start() waits on (S3 answers, a volume server registered).
Does not: start or stop the child (storage.seaweed).
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import socket
from pathlib import Path


@dataclasses.dataclass(frozen=True, slots=True)
class Ports:
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


def free_port(bind: str = "127.0.0.1") -> int:
    """A TCP port that was free on `bind` a moment ago (the usual, slightly racy, way)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((bind, 0))
        return int(sock.getsockname()[1])


def port_free(bind: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go listeners do: TIME_WAIT is fine
        try:
            sock.bind((bind, port))
        except OSError:
            return False
    return True


def load_or_pick_ports(path: Path, bind: str, s3_port: int) -> Ports:
    """Same ports as the last run on this data_dir when they are free (stable master dir), else new ones.

    `s3_port` 0: the S3 port is chosen too (and kept in ports.json like the others); else it is that one."""
    try:
        saved_raw = json.loads(path.read_text(encoding="utf-8"))
        saved: Ports | None = Ports(**{**saved_raw, **({"s3": s3_port} if s3_port else {})})
    except (OSError, ValueError, TypeError):
        saved = None
    if saved is not None and all(port_free(bind, p) for p in saved.all() if p != s3_port):
        return saved
    ports = _pick_ports(bind, s3_port)
    path.write_text(json.dumps(dataclasses.asdict(ports)), encoding="utf-8")
    return ports


def _pick_ports(bind: str, s3_port: int) -> Ports:
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
    return Ports(master=p[0], master_grpc=p[1], volume=p[2], volume_grpc=p[3], filer=p[4], filer_grpc=p[5],
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


def http_answers(ip: str, port: int, path: str) -> str | None:
    """The body of GET `path` on ip:port, or None when nothing answers there (1 s)."""
    conn = http.client.HTTPConnection(ip, port, timeout=1.0)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def volume_registered(ip: str, master_port: int) -> bool:
    """The master on ip:master_port knows at least one volume server."""
    body = http_answers(ip, master_port, "/dir/status")
    return body is not None and '"DataNodes":[{' in body.replace(" ", "")
