"""SMTP gateway benchmark: messages/second accepted with durable storage, beside Postfix in the same run.

Drives, with Postfix's `smtp-source` (Debian package `postfix`), 10 KB messages into:
  1. `smtp-sink`: the transport ceiling (accepts and forgets);
  2. a private Postfix (smtpd -> queue file with fsync -> discard transport): the peer to beat;
  3. the hub's gateway (`meshub run`, embedded default: 250 only once the message is fsynced in
     SeaweedFS, recorded and on the durable bus), to a known patient address.
For the hub, also filed/s: the rate at which those messages reach the patient's mailbox (each run's
messages, from its first DATA to its last mailbox row).  Then p50/p99 of single messages through the
hub's gateway with smtplib.  Nothing is asserted.

    .venv/bin/python -m benchmarks.smtp_gateway [--messages 2000] [--sessions 1 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import smtplib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness import free_port, wait_http
from meshub import datadir

ROOT = Path(__file__).resolve().parents[1]
INS = "279035121518989"
SENDER = "dr.bench@hopital.mssante.fr"
POSTFIX_MAIN = """compatibility_level = 3.6
queue_directory = {dir}/spool
data_directory = {dir}/data
mail_owner = postfix
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = bench.localhost
mydestination =
alias_maps =
local_recipient_maps =
relay_domains = *
default_transport = discard
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
in_flow_delay = 0
"""


def smtp_source(port: int, *, messages: int, sessions: int, size: int, to: str) -> float:
    """Messages/second that `smtp-source` got accepted (a new connection per message, as MTAs mostly do)."""
    started = time.perf_counter()
    subprocess.run(["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(size), "-f", SENDER,
                    "-t", to, f"127.0.0.1:{port}"], check=True, timeout=600, capture_output=True)
    return messages / (time.perf_counter() - started)


def wait_port(port: int, timeout_s: float = 30) -> None:
    import socket
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def bench_sink(args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    proc = subprocess.Popen(["smtp-sink", *user, f"127.0.0.1:{port}", "256"], stdout=subprocess.DEVNULL)
    try:
        wait_port(port)
        return {f"{s} sessions": smtp_source(port, messages=args.messages, sessions=s, size=args.size,
                                             to="x@sink.test") for s in args.sessions}
    finally:
        proc.kill()


def bench_postfix(args: argparse.Namespace, tmp: Path) -> dict[str, float] | str:
    port, conf = free_port(), tmp / "postfix"
    tmp.chmod(0o755)  # Postfix's daemons run as the postfix user and must reach their data directory
    (conf / "data").mkdir(parents=True)
    (conf / "spool").mkdir()
    (conf / "main.cf").write_text(POSTFIX_MAIN.format(dir=conf))
    master = Path("/etc/postfix/master.cf").read_text().replace(
        "smtp      inet  n       -       y       -       -       smtpd", f"{port} inet n - n - - smtpd")
    (conf / "master.cf").write_text(master)
    shutil.copy("/etc/postfix/dynamicmaps.cf", conf / "dynamicmaps.cf")
    (conf / "dynamicmaps.cf.d").mkdir()
    shutil.chown(conf / "data", "postfix")
    start = subprocess.run(["postfix", "-c", str(conf), "start"], capture_output=True, text=True)
    if start.returncode != 0:
        return f"Postfix did not start: {start.stderr.strip() or start.stdout.strip()}"
    try:
        wait_port(port)
        return {f"{s} sessions": smtp_source(port, messages=args.messages, sessions=s, size=args.size,
                                             to="x@discard.test") for s in args.sessions}
    finally:
        subprocess.run(["postfix", "-c", str(conf), "stop"], capture_output=True)


def bench_hub(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    data, http_port, smtp_port = tmp / "hub", free_port(), free_port()
    config = tmp / "hub.toml"
    config.write_text(f"[s3]\nembedded_port = {free_port()}\n")
    proc = subprocess.Popen([sys.executable, "-m", "meshub.cli", "run", "--data-dir", str(data), "--config",
                             str(config), "--http-port", str(http_port), "--smtp-port", str(smtp_port),
                             "--log-level", "WARNING"], cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{http_port}")
        admin = datadir.read_credentials(data)["admin"]["token"]
        roster = ("ins,oid,birth_name,given_names,birth_date,sex,birth_place,email,phone,postal_address,status\n"
                  f"{INS},1.2.250.1.213.1.4.10,TEST,Jeanne,1979-03-01,F,75101,,,,active\n")
        httpx.post(f"http://127.0.0.1:{http_port}/v1/patients/import", content=roster,
                   headers={"Authorization": f"Bearer {admin}"}).raise_for_status()
        to = f"{INS}@patient.mssante.fr"
        result: dict[str, Any] = {}
        for n, s in enumerate(args.sessions, start=1):
            started = time.perf_counter()
            result[f"{s} sessions"] = smtp_source(smtp_port, messages=args.messages, sessions=s, size=args.size,
                                                  to=to)
            result[f"{s} sessions filed/s"] = args.messages / _filed(data, n * args.messages, started)
        result["latency_ms"] = _latency(smtp_port, to, args.size)
        return result
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def _filed(data: Path, count: int, started: float, timeout_s: float = 900) -> float:
    """Seconds from `started` until `count` messages are in the patient's mailbox (the mail pipeline's drain:
    spool -> intake -> bus -> mail pipeline -> mailbox row), read from the embedded index."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.closing(sqlite3.connect(f"file:{data / 'index.sqlite3'}?mode=ro", uri=True)) as db:
            if db.execute("SELECT count(*) FROM messages").fetchone()[0] >= count:
                return time.perf_counter() - started
        time.sleep(0.05)
    raise RuntimeError(f"fewer than {count} messages filed after {timeout_s} s")


def _latency(port: int, to: str, size: int, count: int = 200) -> dict[str, float]:
    """DATA to 250, one message at a time on one connection (what a sender waits for)."""
    body = f"From: {SENDER}\r\nTo: {to}\r\nSubject: bench\r\n\r\n".encode()
    body += (b"y" * 76 + b"\r\n") * (size // 78)
    times = []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        for _ in range(count):
            started = time.perf_counter()
            client.sendmail(SENDER, [to], body)
            times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"p50": statistics.median(times), "p99": times[int(len(times) * 0.99) - 1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--size", type=int, default=10240)
    args = parser.parse_args()
    if shutil.which("smtp-source") is None:
        raise SystemExit("smtp-source not found: install Debian's postfix package")
    with tempfile.TemporaryDirectory(prefix="smtpbench-") as name:
        tmp = Path(name)
        results = {"messages": args.messages, "size": args.size, "smtp_sink": bench_sink(args),
                   "postfix": bench_postfix(args, tmp), "hub": bench_hub(args, tmp)}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
