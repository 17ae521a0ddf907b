"""What the hub benchmarks share: made-up patients and documents, a hub config, hub processes, CPU and memory
figures from /proc, throwaway PostgreSQL databases and broker queues.

Owns: patients(), documents(), write_config() (with extra TOML sections), start() / wait_http(), cpu_seconds(),
cpu_total(), pids_named(), children(), memory_kb(), fresh_pg_database() / drop_pg_database(), delete_queues().
Does not: measure anything itself (benchmarks.e2e, benchmarks.chain do), or keep data (temp dirs, dropped
databases, deleted queues).
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx
import sqlalchemy as sa
from lxml import etree

from hub.auth import token_sha256
from storage.keyring import ensure_key_file
from storage.seaweed import SeaweedServer

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "examples" / "cda" / "BIO-CR-BIO_2024.01_TSH_1.xml"
OID = "1.2.250.1.213.1.4.10"
TOKEN, ADMIN = "bench-producer-token", "bench-admin-token"
HL7 = "{urn:hl7-org:v3}"


def patients(count: int, *, offset: int = 0) -> list[str]:
    """`count` made-up INS (valid key, test OID), distinct for count + offset up to 9000."""
    out = []
    for i in range(offset, offset + count):
        nir13 = f"{1 + i % 2}{80 + i % 20:02d}{1 + i % 12:02d}75{100 + i % 900:03d}{i % 1000:03d}"
        out.append(f"{nir13}{97 - int(nir13) % 97:02d}")
    return out


def documents(count: int, patient_ins: list[str], *, pad_bytes: int = 0) -> list[bytes]:
    """`count` copies of the example CDA, each with its own id, document i for patient i % len(patient_ins);
    `pad_bytes`: a paragraph of that many random base64 characters in the first section (a big, valid CDA)."""
    root = etree.fromstring(FIXTURE.read_bytes())
    ident = root.find(f"{HL7}id")
    assert ident is not None
    ins_id = next(e for e in root.iterfind(f"{HL7}recordTarget/{HL7}patientRole/{HL7}id") if e.get("root") == OID)
    if pad_bytes:
        text = next(root.iter(f"{HL7}text"))
        noise = base64.b64encode(os.urandom(pad_bytes * 3 // 4 + 3)).decode()[:pad_bytes]  # incompressible
        for at in range(0, pad_bytes, 1 << 20):  # paragraphs of 1 MiB: text nodes over 10 MB need XML_PARSE_HUGE
            etree.SubElement(text, f"{HL7}paragraph").text = noise[at:at + (1 << 20)]
    out = []
    for i in range(count):
        ident.set("extension", f"bench-{uuid.uuid4().hex[:8]}-{i}")
        ins_id.set("extension", patient_ins[i % len(patient_ins)])
        out.append(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, *, s3: SeaweedServer, bucket: str, bus_url: str, index_url: str, port: int,
                 workers: int, prefix: str = "meshub", http: str = "", extra: str = "") -> None:
    """A hub config on SeaweedFS `s3` with a producer (TOKEN) and an admin (ADMIN) credential; `http`: more
    [http] keys; `extra`: more TOML sections ([smtp], [notify]...), appended as is."""
    bus = f'url = "{bus_url}"\nprefix = "{prefix}"\n' if bus_url else ""
    index = f'url = "{index_url}"\n' if index_url else ""
    ensure_key_file(path.parent / "keys" / "kek.json")  # encryption at rest is always on: the hub needs a KEK
    path.write_text(f"""[http]\nport = {port}\n{http}[bus]\n{bus}[index]\n{index}[workers]\ncount = {workers}
[s3]\nendpoint = "{s3.endpoint}"\naccess_key = "{s3.access_key}"\nsecret_key = "{s3.secret_key}"
bucket = "{bucket}"\nkey_secret = "bench"\nkek_file = "{path.parent / 'keys' / 'kek.json'}"
[[credentials]]\nname = "bench"\nrole = "producer"\ntoken_sha256 = "{token_sha256(TOKEN)}"
[[credentials]]\nname = "ops"\nrole = "admin"\ntoken_sha256 = "{token_sha256(ADMIN)}"
{extra}""")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pids_named(*names: str) -> list[int]:
    """Every process whose command name is one of `names` (the broker and database share the machine)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            comm = stat.read_text().split("(", 1)[1].rsplit(")", 1)[0]
        except OSError:
            continue
        if comm in names:
            out.append(int(stat.parent.name))
    return out


def children(pid: int) -> list[int]:
    """Direct child processes of `pid` (the SMTP gateway processes of an API or embedded hub)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            out += [int(p) for p in task.read_text().split()]
    return out


def cpu_total(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):  # ended meanwhile (a PostgreSQL backend)
            total += cpu_seconds(pid)
    return total


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident) of `pid`, in KiB; {} once it ended."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def start(args: list[str], stack: ExitStack, log: Path) -> subprocess.Popen[bytes]:
    """`meshub <args>` as a child process, stopped by SIGTERM when `stack` closes."""
    out = stack.enter_context(log.open("ab"))
    proc = subprocess.Popen([sys.executable, "-m", "meshub.cli", *args, "--log-level", "WARNING"],
                            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)

    def stop() -> None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    stack.callback(stop)
    return proc


def wait_http(url: str, timeout_s: float = 60, log: Path | None = None) -> None:
    """Until `url`/healthz answers 200; else RuntimeError with the end of the hub's `log`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"hub at {url} did not start\n{tail}")


def delete_queues(bus_url: str, prefix: str) -> None:
    """Quorum queues are not free (leaked ones exhaust RabbitMQ's file descriptors): delete every queue of
    every bus queue name (hub.topology.EVENT_QUEUES) under `prefix`, and the exchange."""
    from hub.bus import open_connection
    from hub.bus.kombu_bus import queues
    from hub.topology import EVENT_QUEUES, Topology

    with open_connection(bus_url) as conn:
        channel = conn.channel()
        for name in sorted(set(EVENT_QUEUES.values())):
            topology = Topology(prefix=prefix, queue=name)
            for queue in queues(topology, amqp=True):
                channel.queue_delete(queue.name)
        channel.exchange_delete(Topology(prefix=prefix).exchange)


def drop_pg_database(admin_url: str, url: str) -> None:
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    engine.dispose()


def fresh_pg_database(admin_url: str) -> str:
    name = f"meshub_bench_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"
