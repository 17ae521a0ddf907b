"""Load for benchmarks.chain: documents by HTTP POST or MSSanté SMTP (IHE XDM), and when each one was indexed,
traced (`write` entry of the audit trail) and notified (its patient's e-mail at the sink).

Owns: Doc, build_docs() (one patient per document), Load (roster with e-mail addresses and no quiet hours,
open-loop or flat-out submission, polling until done, RSS tracking, the big documents), chain_stats().
Does not: start the hub or the sink.
"""

from __future__ import annotations

import contextlib
import smtplib
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import sqlalchemy as sa

from benchmarks.harness import ADMIN, OID, TOKEN, documents, memory_kb, patients
from benchmarks.sink import SinkProcess
from storage.sql.audit import trail
from storage.sql.index import make_engine, submissions
from storage.sql.index_tables import documents as documents_table
from tests.mail_builders import make_mail_with_xdm, make_xdm_zip

SENDER = "dr.bench@hopital.mssante.fr"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Doc:
    ins: str
    via: str  # "http" | "smtp"
    cda: bytes
    mail: bytes = b""

    @property
    def size(self) -> int:
        return len(self.mail or self.cda)


def email_of(ins: str) -> str:
    return f"p{ins}@bench.test"


def mail_for(ins: str, cda: bytes, n: int) -> bytes:
    xdm = make_xdm_zip([cda], patient_id=f"{ins}^^^&{OID}&ISO")
    return make_mail_with_xdm([cda], to=f"{ins}@patient.mssante.fr", from_=SENDER, xdm=xdm,
                              headers={"Message-ID": f"<bench-{ins}-{n}@hopital.mssante.fr>"}).replace(b"\n", b"\r\n")


def build_docs(ins: list[str], smtp_share: float, *, pad_bytes: int = 0) -> list[Doc]:
    """Document i for patient ins[i]; every 1/smtp_share-th one goes by SMTP, evenly spread."""
    out = []
    for i, (who, cda) in enumerate(zip(ins, documents(len(ins), ins, pad_bytes=pad_bytes), strict=True)):
        smtp = int((i + 1) * smtp_share) > int(i * smtp_share)
        out.append(Doc(who, "smtp", cda, mail_for(who, cda, i)) if smtp else Doc(who, "http", cda))
    return out


class Load:
    """Client side of one hub: submits, then watches the index, the trail and the sink."""

    def __init__(self, url: str, smtp_port: int, index_url: str, sink: SinkProcess, *, concurrency: int) -> None:
        self.smtp_port, self.sink, self.concurrency = smtp_port, sink, concurrency
        self.client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120,
                                   limits=httpx.Limits(max_connections=concurrency * 2))
        self.admin = {"Authorization": f"Bearer {ADMIN}"}
        self.engine = make_engine(index_url)
        self._tracking: threading.Event | None = None

    def __enter__(self) -> Load:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.client.close()
        self.engine.dispose()

    def prepare(self, ins: list[str]) -> None:
        """Every patient active with an e-mail address, and no quiet hours (each notice is due at once)."""
        header = "ins,oid,birth_name,given_names,birth_date,sex,birth_place,email,phone,postal_address,status\n"
        roster = header + "".join(f"{who},{OID},TEST,Jeanne,1979-03-01,F,75101,{email_of(who)},,,active\n"
                                  for who in ins)
        self.client.post("/v1/patients/import", content=roster, headers=self.admin).raise_for_status()

        def quiet_off(who: str) -> None:
            self.client.put(f"/v1/patients/{who}/notification-preferences", json={"quiet_hours": ""},
                            headers=self.admin).raise_for_status()

        with ThreadPoolExecutor(self.concurrency) as pool:
            list(pool.map(quiet_off, ins))

    def submit(self, docs: list[Doc], *, rate: float) -> dict[str, float]:
        """Open loop at `rate` docs/s (0: flat out); ins -> time.time() just before its submission."""
        started, sent = time.perf_counter(), {}

        def one(item: tuple[int, Doc]) -> None:
            delay = started + item[0] / rate - time.perf_counter() if rate else 0.0
            if delay > 0:
                time.sleep(delay)
            doc = item[1]
            sent[doc.ins] = time.time()
            if doc.via == "smtp":
                with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=120) as smtp:
                    smtp.sendmail(SENDER, [f"{doc.ins}@patient.mssante.fr"], doc.mail)
            else:
                self.client.post("/v1/documents", content=doc.cda,
                                 headers={"Content-Type": "application/xml"}).raise_for_status()

        with ThreadPoolExecutor(self.concurrency) as pool:
            list(pool.map(one, enumerate(docs)))
        sent["_accepted_at"] = time.time()
        return sent

    def wait_done(self, docs: list[Doc], *, stall_s: float = 60.0) -> dict[str, dict[str, float]]:
        """ins -> {indexed, traced, notified: unix time} for each document, once all are done or nothing
        moved for `stall_s`."""
        state: dict[str, dict[str, float]] = {d.ins: {} for d in docs}
        moved = time.monotonic()
        while time.monotonic() - moved < stall_s:
            progress = self._poll(state)
            if all(len(s) == 3 for s in state.values()):
                break
            if progress:
                moved = time.monotonic()
            time.sleep(0.2)
        return state

    def _poll(self, state: dict[str, dict[str, float]]) -> bool:
        before = sum(map(len, state.values()))
        pending = [ins for ins, s in state.items() if "indexed" not in s or "traced" not in s]
        with self.engine.connect() as conn:
            for chunk in (pending[i:i + 500] for i in range(0, len(pending), 500)):
                rows = conn.execute(sa.select(documents_table.c.patient_ins, documents_table.c.document_id,
                                              submissions.c.updated_at).join(
                    submissions, submissions.c.submission_id == documents_table.c.submission_id).where(
                    documents_table.c.patient_ins.in_(chunk), submissions.c.status == "indexed")).all()
                by_doc = {r.document_id: r.patient_ins for r in rows}
                for r in rows:
                    state[r.patient_ins].setdefault("indexed", _utc(r.updated_at).timestamp())
                for t in conn.execute(sa.select(trail.c.target, trail.c.at).where(
                        trail.c.action == "write", trail.c.target.in_(list(by_doc)))).all():
                    state[by_doc[t.target]].setdefault("traced", _utc(t.at).timestamp())
        arrived = self.sink.arrivals()
        for ins, s in state.items():
            if "notified" not in s and email_of(ins) in arrived:
                s["notified"] = arrived[email_of(ins)]
        return sum(map(len, state.values())) > before

    def track_rss(self, pids: dict[str, int]) -> dict[str, int]:
        """Highest VmRSS (KiB) of each process, sampled every 0.2 s until stop_tracking()."""
        peak: dict[str, int] = {}
        self._tracking = stop = threading.Event()

        def loop() -> None:
            while not stop.wait(0.2):
                for name, pid in pids.items():
                    peak[name] = max(peak.get(name, 0), memory_kb(pid).get("VmRSS", 0))

        threading.Thread(target=loop, daemon=True).start()
        return peak

    def stop_tracking(self) -> None:
        if self._tracking:
            self._tracking.set()

    @staticmethod
    def big_docs(big: bool) -> list[Doc]:
        """The patients of the big documents (prepared with the others); the documents are built in big()."""
        return [Doc(ins, "big", b"") for ins in patients(2, offset=8600)] if big else []

    def big(self, pids: dict[str, int]) -> dict[str, Any]:
        """A 20 MiB CDA by POST, then a 25 MiB mail by SMTP: each hub process's peak RSS growth (VmHWM
        reset before each) as a multiple of the document's size."""
        first, second = patients(2, offset=8600)
        cda = build_docs([first], 0.0, pad_bytes=20 * MIB - 4096)[0]
        mail = build_docs([second], 1.0, pad_bytes=24 * MIB)[0]
        mail = build_docs([second], 1.0, pad_bytes=int(24 * MIB * 25 * MIB / mail.size) - 8192)[0]
        out = {}
        for label, doc in (("post_20MiB_cda", cda), ("smtp_25MiB_mail", mail)):
            base = {n: memory_kb(p) for n, p in pids.items()}
            for pid in pids.values():
                _reset_hwm(pid)
            sent = self.submit([doc], rate=0)
            done = self.wait_done([doc], stall_s=120)[doc.ins]
            peak = {n: memory_kb(p).get("VmHWM", 0) for n, p in pids.items()}
            out[label] = {"bytes": doc.size, "done": sorted(done), "seconds": round(max(done.values(), default=0)
                                                                                   - sent[doc.ins], 2),
                          "rss_growth_x_size": {n: round((peak[n] - base[n].get("VmRSS", 0)) * 1024 / doc.size, 2)
                                                for n in pids}}
        return out


def _reset_hwm(pid: int) -> None:
    """Linux: writing 5 to clear_refs resets the peak resident set size (VmHWM) to the current one."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def chain_stats(docs: list[Doc], sent: dict[str, float], done: dict[str, dict[str, float]],
                started: float) -> dict[str, Any]:
    """Rates and latency percentiles of one phase."""
    def pct(values: list[float], q: float) -> float:
        return round(sorted(values)[max(0, int(len(values) * q) - 1)], 1) if values else float("nan")

    def lat(key: str, via: str = "") -> list[float]:
        return [1000 * (done[d.ins][key] - sent[d.ins]) for d in docs
                if key in done[d.ins] and d.ins in sent and (not via or d.via == via)]

    complete = [max(done[d.ins].values()) for d in docs if len(done[d.ins]) == 3]
    out: dict[str, Any] = {
        "docs": len(docs), "smtp": sum(d.via == "smtp" for d in docs),
        **{k: sum(k in done[d.ins] for d in docs) for k in ("indexed", "traced", "notified")},
        "done": len(complete), "accept_per_s": round(len(docs) / (sent["_accepted_at"] - started), 1),
        "done_per_s": round(len(complete) / (max(complete) - started), 1) if complete else 0.0}
    for key in ("indexed", "notified"):
        values = lat(key)
        out[f"{key}_ms"] = {"p50": round(statistics.median(values), 1) if values else float("nan"),
                            "p99": pct(values, 0.99)}
    out["indexed_ms"]["smtp_p50"] = round(statistics.median(lat("indexed", "smtp")), 1) if lat(
        "indexed", "smtp") else float("nan")
    return out
