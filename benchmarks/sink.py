"""A local SMTP sink in a process of its own (so its CPU is counted apart): accepts every message and appends
one line `<unix time> <recipient>` per recipient to a file, which the benchmark reads.

Owns: SinkProcess (start() returns once the sink listens; arrivals() -> first arrival time per recipient;
stop()), raw_smtplib_rate() (smtplib straight to the sink, one connection per message: the transport ceiling).
Does not: check or keep the messages.

    .venv/bin/python -m benchmarks.sink PORT FILE     (what SinkProcess runs)
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path
from typing import IO

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from benchmarks.harness import ROOT, cpu_seconds, free_port


class _Appender:
    def __init__(self, out: IO[str]) -> None:
        self.out = out

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        at = time.time()
        self.out.write("".join(f"{at:.6f} {rcpt.lower()}\n" for rcpt in envelope.rcpt_tos))
        self.out.flush()
        return "250 2.0.0 Ok"


class SinkProcess:
    """`python -m benchmarks.sink` on a free port, writing to `path`."""

    def __init__(self, path: Path) -> None:
        self.path, self.port = path, free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._offset, self._seen = 0, dict[str, float]()

    def start(self) -> SinkProcess:
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.sink", str(self.port), str(self.path)],
                                     cwd=ROOT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the SMTP sink did not start")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_s(self) -> float:
        return cpu_seconds(self.pid)

    def arrivals(self) -> dict[str, float]:
        """Recipient -> time its first message arrived (read incrementally from the file)."""
        if self.path.exists():
            with self.path.open() as f:
                f.seek(self._offset)
                chunk = f.read()
            complete = chunk[:chunk.rfind("\n") + 1]
            self._offset += len(complete.encode())
            for line in complete.splitlines():
                at, _, rcpt = line.partition(" ")
                self._seen.setdefault(rcpt, float(at))
        return self._seen

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def raw_smtplib_rate(port: int, count: int) -> float:
    """smtplib straight to the sink, one connection per message (what the e-mail channel does)."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "bench@mes.test", "raw@raw.test", "raw"
    message.set_content("x" * 400)
    started = time.perf_counter()
    for n in range(count):
        del message["Message-ID"]
        message["Message-ID"] = f"<raw-{n}@mes.test>"
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.send_message(message)
    return count / (time.perf_counter() - started)


def _serve(port: int, path: Path) -> None:
    with path.open("a") as out:
        controller = Controller(_Appender(out), hostname="127.0.0.1", port=port)
        controller.start()
        try:
            asyncio.run(_forever())
        finally:
            controller.stop()


async def _forever() -> None:
    while True:
        await asyncio.sleep(3600)


if __name__ == "__main__":
    _serve(int(sys.argv[1]), Path(sys.argv[2]))
