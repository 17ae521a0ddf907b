"""py-spy on the hub's processes during a run, and a summary of the top costs per stage of the chain.

Owns: Profiler (py-spy record --gil --nonblocking -f raw on each pid, stopped with SIGINT), summarise()
(samples holding the GIL, inclusive % per stage grouped by the hub's own frames, then the top hub frames)
and STAGES (which frames make which stage).
Does not: start or stop the hub.
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
from pathlib import Path

#: stage -> substrings of a py-spy frame ("func (path/file.py:line)"); a sample counts in every stage
#: one of its frames matches (inclusive), so stages overlap (a trail inside filing, SQL inside both)
STAGES: dict[str, tuple[str, ...]] = {
    "intake/API (HTTP)": ("connectors/inbound/http/", "hub/intake.py", "uvicorn/", "starlette/"),
    "SMTP gateway + spool drain": ("connectors/inbound/smtp", "storage/spool", "SpoolDrain", "gateway_process"),
    "mail pipeline (MIME, XDM)": ("pipelines/mail/",),
    "document pipeline": ("DocumentPipeline.__call__",),
    "  fetch": ("fetch (pipelines/documents/stages.py",),
    "  check": ("check (pipelines/documents/stages.py", "pipelines/cda/"),
    "  index": ("index_or_reject (pipelines/documents/stages.py",),
    "after filing": ("AfterFiling.",),
    "  trail (write entry)": ("RecordTrail.", "RecordAccess.record_written", "GroupCommitTrail."),
    "  announce (Notifier)": ("Notifier.",),
    "notify send (NoticeSender, SMTP)": ("NoticeSender.", "connectors/outbound/notify_channels"),
    "bus (kombu/amqp, SQLite bus)": ("kombu/", "amqp/", "hub/bus/kombu_bus", "hub/bus/sqlite", "hub/bus/local"),
    "SQL (SQLAlchemy + driver)": ("sqlalchemy/", "psycopg/", "sqlite3/"),
    "S3 (minio, urllib3)": ("minio/", "urllib3/"),
}

BUS = "bus (kombu/amqp, SQLite bus)"
LIBRARIES = {"SQL (SQLAlchemy + driver)", "S3 (minio, urllib3)"}  # never enclose a stage: counted wherever seen


class Profiler:
    """One `py-spy record` per process, raw collapsed stacks into `<out_dir>/<name>.txt`."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        exe = Path(sys.executable).with_name("py-spy")
        self.exe = str(exe) if exe.exists() else shutil.which("py-spy")

    def start(self, pids: dict[str, int]) -> None:
        if not self.exe:
            raise RuntimeError("py-spy not found: pip install py-spy (it is in the dev extra)")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in pids.items():
            log = (self.out_dir / f"{name}.err").open("wb")
            self.procs[name] = subprocess.Popen(
                [self.exe, "record", "--gil", "--nonblocking", "-f", "raw", "-r", "100", "-p", str(pid),
                 "-o", str(self.out_dir / f"{name}.txt")], stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> dict[str, Path]:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGINT)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        return {name: self.out_dir / f"{name}.txt" for name in self.procs if (self.out_dir / f"{name}.txt").exists()}


def summarise(files: dict[str, Path], top: int = 25) -> str:
    """Per process: samples, inclusive % per stage, then the hub's own frames by inclusive %."""
    out = []
    for name, path in files.items():
        stages, frames, total = collections.Counter[str](), collections.Counter[str](), 0
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n, parts = int(count), stack.split(";")
            total += n
            for stage in _stages_of(parts):
                stages[stage] += n
            for key in {_own(frame) for frame in parts} - {""}:
                frames[key] += n
        out.append(f"== {name}: {total} samples holding the GIL")
        out += [f"{100 * stages[s] / (total or 1):5.1f}%  {s}" for s in STAGES if stages[s]]
        out.append(f"-- top hub frames (inclusive) of {name}")
        out += [f"{100 * n / (total or 1):5.1f}%  {key}" for key, n in frames.most_common(top)]
        out.append("")
    return "\n".join(out)


def _stages_of(frames: list[str]) -> set[str]:
    """Every stage one of `frames` matches; the bus only when it is the innermost stage matched (its consumer
    loop encloses every handler, and the in-process bus the followers of a filing)."""
    found = {stage for stage, needles in STAGES.items()
             if any(needle in frame for frame in frames for needle in needles)}
    for frame in reversed(frames):
        inner = {stage for stage in found - LIBRARIES if any(needle in frame for needle in STAGES[stage])}
        if inner:
            return found - {BUS} if BUS not in inner else found
    return found


def _own(frame: str) -> str:
    """'Notifier.announce (pipelines/notify/service.py:88)' -> 'Notifier.announce pipelines/notify/service.py'
    for the hub's own packages, '' for libraries and the runtime's frames."""
    func, _, where = frame.partition(" (")
    path = where.split(":")[0]
    hub = ("hub/", "pipelines/", "connectors/", "storage/")
    if not any(path.startswith(p) or f"/{p}" in path for p in hub) or "site-packages" in path:
        return ""
    return f"{func} {path[path.find(next(p for p in hub if p in path)):]}"
