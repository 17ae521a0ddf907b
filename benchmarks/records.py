"""Record trust layer benchmark: the audit trail and the record service, each beside the raw database
operation underneath, measured in the same run on the same database.  Nothing is asserted.

1. Audit appends (storage.sql.audit.SqlAuditTrail.append, one entry per call, as every read and write makes)
   with 1, 4 and 16 threads, beside a plain single-row INSERT + COMMIT into a table of the same columns
   and indexes (`bench_raw_appends`) on the same engine, same threads: the trail serialises appends on
   its head row (lock, read head, chain, insert, move head), the raw insert does not.  Measured both
   one transaction per append and through storage.sql.audit_batching.GroupCommitTrail (what the hub runs:
   concurrent appends of a process share a transaction).
2. The ingest side: SqlIndex.index_document, then RecordAccess.record_written (its `write` entry).
3. A professional (médecin) listing a patient's documents, --docs-per-patient each, through
   RecordAccess.documents (record gate, flags, first-access note, one `list` entry; two entries on a first
   access), beside the raw SqlIndex.documents on the same data; and RecordAccess.document beside
   SqlIndex.document.
4. pipelines.record.audit.verify_trail over the whole trail written by the run.

PostgreSQL at --pg (a throwaway database, dropped at the end) by default; --sqlite: the embedded
default's SQLite index in a temporary directory instead.  Latency is per call, p50/p99.

    .venv/bin/python -m benchmarks.records [--entries 1000] [--sqlite] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.harness import drop_pg_database, fresh_pg_database, patients
from config.tables import load_habilitations
from hub.actors import Access, Actor, ActorKind
from hub.audit import AuditAction, NewAuditEntry
from hub.envelope import BlobRef, Envelope, Source
from hub.intake import new_submission_id
from hub.records import DocumentQuery, DocumentRecord, PatientRecord, PatientStatus
from pipelines.record.access import RecordAccess, RecordPorts
from pipelines.record.audit import verify_trail
from storage.sql.audit import SqlAuditTrail, trail
from storage.sql.audit_batching import GroupCommitTrail
from storage.sql.controls import SqlRecordControls
from storage.sql.index import SqlIndex

OID = "1.2.250.1.213.1.4.10"
DOCTOR = Actor(ActorKind.PROFESSIONAL, "810000000001", profession="G15_10", specialty="SM54")
AUTHOR = "1.2.250.1.71.4.2.1^801234534765"  # a professional author: record_written names their IDNPS
AVERAGE_DOCS_S, PEAK_DOCS_S = 7, 40  # the national intake (README): one `write` entry per document

# The raw baseline: audit_trail's columns, primary key, unique key and (ins, seq) index, on its own metadata
# (not created by SqlIndex.migrate), without the head row.
raw_metadata = sa.MetaData()
raw_appends = sa.Table(
    "bench_raw_appends", raw_metadata,
    *(sa.Column(c.name, c.type, primary_key=c.primary_key, autoincrement=False, nullable=c.nullable,
                unique=bool(c.unique)) for c in trail.columns),
    sa.Index("ix_bench_raw_appends_ins", "ins", "seq"),
)


@dataclass(frozen=True)
class Stats:
    """One measured batch: `calls` in `seconds` of wall time, each call's latency in ms."""

    calls: int
    seconds: float
    latencies_ms: Sequence[float]

    @property
    def per_s(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else 0.0

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, math.ceil(len(ordered) * 0.99) - 1)] if ordered else 0.0

    def to_dict(self) -> dict[str, float]:
        return {"calls": self.calls, "per_s": round(self.per_s, 1), "p50_ms": round(self.p50, 2),
                "p99_ms": round(self.p99, 2)}


def measure(call: Callable[[int], object], count: int, threads: int, *, warmup: int = 0) -> Stats:
    """`call(i)` for i in range(count), split over `threads` threads started together; `warmup` calls
    first (same threads, not measured: connections opened, statements cached)."""
    if warmup:
        measure(lambda i: call(count + i), warmup, threads)
    latencies: list[list[float]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads + 1)

    def work(t: int) -> None:
        mine = latencies[t]
        start.wait()
        for i in range(t, count, threads):
            began = time.perf_counter()
            call(i)
            mine.append((time.perf_counter() - began) * 1000)

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(work, t) for t in range(threads)]
        start.wait()
        began = time.perf_counter()
        for future in futures:
            future.result()
        seconds = time.perf_counter() - began
    return Stats(count, seconds, [ms for part in latencies for ms in part])


# -- the data ------------------------------------------------------------------------------------------

def read_entry(ins: str, n: int) -> NewAuditEntry:
    """What a professional's read leaves in the trail (no idempotency key, like every read)."""
    return NewAuditEntry.by(DOCTOR, AuditAction.READ, at=datetime.now(UTC), ins=ins, target=f"1.2.250.1.999^b-{n}",
                            detail={"mode": "normal", "profession": DOCTOR.profession})


def raw_row(seq: int, ins: str, n: int) -> dict[str, Any]:
    """The same entry as a plain row: no head, no chaining (fixed placeholder hashes)."""
    return {"seq": seq, "key": None, "at": datetime.now(UTC), "ins": ins, "actor_kind": "professional",
            "actor_id": DOCTOR.id, "action": "read", "target": f"1.2.250.1.999^b-{n}", "outcome": "ok",
            "detail": json.dumps({"mode": "normal", "profession": DOCTOR.profession}, sort_keys=True,
                                 separators=(",", ":")),
            "redacted": False, "body_sha256": "0" * 64, "prev_hash": "0" * 64, "entry_hash": "0" * 64}


def record(ins: str, p: int, k: int) -> tuple[Envelope, DocumentRecord]:
    """Document k of patient p: a biology report (like tests/builders.document) and its envelope."""
    sha = hashlib.sha256(f"bench-{p}-{k}".encode()).hexdigest()
    env = Envelope(submission_id=new_submission_id(), received_at=datetime.now(UTC),
                   source=Source(kind="http", producer="bench-lab"),
                   raw=BlobRef(bucket="bench", key=f"cda/{sha[:2]}/{sha}", sha256=sha, size=132_000))
    day = f"2024-{1 + k % 12:02d}-{1 + k % 28:02d}"
    doc = DocumentRecord(
        document_id=f"1.2.250.1.999.1^bench-{p}-{k}", patient_ins=ins, submission_id=env.submission_id,
        blob_bucket="bench", blob_key=env.raw.key, sha256=sha, size=env.raw.size, type_code="11502-2",
        type_label="CR d'examens biologiques", class_code="10", category="BIOLOGIE",
        format_code="urn:ihe:lab:xd-lab:2008", level="N3", confidentiality=("N",), title="CR de biologie",
        effective_time=day.replace("-", "") + "120000+0100", service_date=day, author_id=AUTHOR,
        custodian_id="1.2.250.1.71.4.2.2^bench-lab")
    return env, doc


# -- the run -------------------------------------------------------------------------------------------

def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    index = SqlIndex.connect(url)
    try:
        return _run(index, args)
    finally:
        index.dispose()


def _run(index: SqlIndex, args: argparse.Namespace) -> dict[str, Any]:
    single = SqlAuditTrail.beside(index)
    audit = GroupCommitTrail(single)  # what the hub runs (meshub.compose_records)
    controls = SqlRecordControls.beside(index)
    with index.engine.begin() as conn:
        raw_metadata.create_all(conn)
    records = RecordAccess(RecordPorts(index=index, controls=controls, trail=audit,
                                       habilitations=load_habilitations(), representatives=lambda ins: [],
                                       announce=None))
    people = patients(args.patients)
    out: dict[str, Any] = {"database": index.engine.dialect.name, "entries": args.entries,
                           "patients": args.patients, "docs_per_patient": args.docs_per_patient,
                           "calls": args.calls}

    # 1. appends, raw then trail, per thread count
    seqs = itertools.count(1)
    insert = raw_appends.insert()

    def raw_insert(n: int) -> None:
        with index.engine.begin() as conn:
            conn.execute(insert, raw_row(next(seqs), people[n % len(people)], n))

    def append(n: int) -> None:
        single.append([read_entry(people[n % len(people)], n)])

    def grouped(n: int) -> None:
        audit.append([read_entry(people[n % len(people)], n)])

    out["appends"] = []
    for threads in args.threads:
        raw = measure(raw_insert, args.entries, threads, warmup=2 * threads)
        chained = measure(append, args.entries, threads, warmup=2 * threads)
        shared = measure(grouped, args.entries, threads, warmup=2 * threads)
        out["appends"].append({"threads": threads, "raw_insert": raw.to_dict(), "trail_append": chained.to_dict(),
                               "group_commit": shared.to_dict()})
        _progress(f"appends x{threads}", out["appends"][-1])

    # 2. ingest: the documents indexed, then their `write` entries (as the pipeline does, per document)
    pairs = [record(ins, p, k) for p, ins in enumerate(people) for k in range(args.docs_per_patient)]
    index.upsert_patients([PatientRecord(ins=ins, oid=OID, birth_name="BENCH", given_names="Jo",
                                         birth_date="1980-01-01", status=PatientStatus.ACTIVE) for ins in people])
    indexed = measure(lambda i: index.index_document(*pairs[i], ()), len(pairs), args.ingest_threads)
    written = measure(lambda i: records.record_written(pairs[i][1]), len(pairs), args.ingest_threads)
    out["ingest"] = {"threads": args.ingest_threads, "index_document": indexed.to_dict(),
                     "record_written": written.to_dict()}
    _progress("ingest", out["ingest"])

    # 3. a professional's reads: first access to each record (2 entries), then steady state (1 entry)
    def traced(call: Callable[[int], object], count: int, threads: int, warmup: int = 0) -> dict[str, float]:
        """measure(), and how many trail entries each call left (the head's seq before and after)."""
        before = audit.head()[0]
        stats = measure(call, count, threads, warmup=warmup).to_dict()
        return {**stats, "entries_per_call": round((audit.head()[0] - before) / (count + warmup), 2)}

    doctor = Access(DOCTOR)
    query = DocumentQuery()
    shown = len(records.documents(doctor, people[0], query))
    first = traced(lambda i: records.documents(doctor, people[i + 1], query), len(people) - 1, 1)
    out["first_access"] = {"documents_shown": shown, "record_access_documents": first}
    ids = [doc.document_id for _, doc in pairs]
    spread = [ids[(i * 7919) % len(ids)] for i in range(len(ids))]  # documents of every patient, interleaved
    out["reads"] = []
    for threads in args.read_threads:
        row: dict[str, Any] = {"threads": threads}
        row["index_documents"] = measure(lambda i: index.documents(people[i % len(people)], query),
                                         args.calls, threads, warmup=2 * threads).to_dict()
        row["record_access_documents"] = traced(lambda i: records.documents(doctor, people[i % len(people)], query),
                                                args.calls, threads, warmup=2 * threads)
        row["index_document"] = measure(lambda i: index.document(spread[i % len(spread)]),
                                        args.calls, threads, warmup=2 * threads).to_dict()
        row["record_access_document"] = traced(lambda i: records.document(doctor, spread[i % len(spread)]),
                                               args.calls, threads, warmup=2 * threads)
        out["reads"].append(row)
        _progress(f"reads x{threads}", row)

    # 4. the whole trail verified
    began = time.perf_counter()
    verification = verify_trail(audit)
    seconds = time.perf_counter() - began
    out["verify"] = {"ok": verification.ok, "entries": verification.checked, "seconds": round(seconds, 3),
                     "entries_per_s": round(verification.checked / seconds, 1) if seconds else 0.0}
    return out


def _progress(what: str, value: Any) -> None:
    print(what, json.dumps(value), file=sys.stderr, flush=True)


# -- the printout --------------------------------------------------------------------------------------

def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:  # first column left-aligned, numbers right-aligned
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _cells(stats: dict[str, float]) -> list[str]:
    return [f"{stats['per_s']:,.0f}", f"{stats['p50_ms']:.2f}", f"{stats['p99_ms']:.2f}"]


def report(result: dict[str, Any]) -> str:
    out = [f"Record trust layer on {result['database']}: {result['entries']} appends per thread count, "
           f"{result['patients']} patients x {result['docs_per_patient']} documents, {result['calls']} calls per read",
           "", "1. Audit appends (one entry per call) vs plain INSERT + COMMIT, same engine, same table shape"]
    rows = []
    for a in result["appends"]:
        raw, chained, shared = a["raw_insert"], a["trail_append"], a["group_commit"]
        rows.append([f"{a['threads']} threads", *_cells(raw), *_cells(chained), *_cells(shared),
                     f"{chained['per_s'] / raw['per_s']:.0%}", f"{shared['per_s'] / raw['per_s']:.0%}"])
    out.append(_table(["", "raw/s", "p50 ms", "p99 ms", "one tx/s", "p50 ms", "p99 ms", "grouped/s", "p50 ms",
                       "p99 ms", "one/raw", "grouped/raw"], rows))

    ingest = result["ingest"]
    out += ["", f"2. Ingest ({ingest['threads']} threads): index_document, then its `write` entry (record_written)",
            _table(["", "calls/s", "p50 ms", "p99 ms"],
                   [["SqlIndex.index_document", *_cells(ingest["index_document"])],
                    ["RecordAccess.record_written", *_cells(ingest["record_written"])]])]

    first = result["first_access"]
    out += ["", f"3. A médecin's reads ({first['documents_shown']} documents shown per list; "
                "first access = 2 entries, then 1 per call)"]
    rows = [["documents, first access", "1", "", "", "", *_cells(first["record_access_documents"]), "",
             f"{first['record_access_documents']['entries_per_call']:g}"]]
    for r in result["reads"]:
        for name, raw_key, access_key in (("documents", "index_documents", "record_access_documents"),
                                          ("document", "index_document", "record_access_document")):
            raw, wrapped = r[raw_key], r[access_key]
            rows.append([name, str(r["threads"]), *_cells(raw), *_cells(wrapped),
                         f"{wrapped['per_s'] / raw['per_s']:.0%}", f"{wrapped['entries_per_call']:g}"])
    out.append(_table(["call", "threads", "index/s", "p50 ms", "p99 ms", "RecordAccess/s", "p50 ms", "p99 ms",
                       "ratio", "entries/call"], rows))

    v = result["verify"]
    out += ["", f"4. verify_trail: {v['entries']:,} entries in {v['seconds']:.2f} s = {v['entries_per_s']:,.0f} "
                f"entries/s ({'intact' if v['ok'] else 'BROKEN'})"]
    out += ["", *scale(result)]
    return "\n".join(out)


def scale(result: dict[str, Any]) -> list[str]:
    """The measured ceilings against the national load: ~7 documents/s on average, 40/s at peak."""
    best = max(result["appends"], key=lambda a: a["group_commit"]["per_s"])
    ceiling = best["group_commit"]["per_s"]
    single = next((a for a in result["appends"] if a["threads"] == 1), result["appends"][0])
    hold_ms = single["trail_append"]["p50_ms"]
    lists = max(r["record_access_documents"]["per_s"] for r in result["reads"])
    v = result["verify"]
    day = AVERAGE_DOCS_S * 86_400
    return [
        f"Scale: {AVERAGE_DOCS_S} documents/s on average, {PEAK_DOCS_S}/s at peak = as many `write` entries/s; "
        "each professional read adds 1 entry (2 on a first access).",
        f"- trail ceiling here: {ceiling:,.0f} entries/s ({best['threads']} threads) = {ceiling / PEAK_DOCS_S:,.0f}x "
        f"the peak's writes, {ceiling / AVERAGE_DOCS_S:,.0f}x the average's.",
        f"- head row at the peak: {PEAK_DOCS_S}/s x {hold_ms:.2f} ms (1-thread append) = "
        f"{PEAK_DOCS_S * hold_ms / 10:.1f} % of each second held; what is left ({max(0.0, ceiling - PEAK_DOCS_S):,.0f}"
        " entries/s) is room for about as many professional reads/s.",
        f"- professional lists: {lists:,.0f}/s at best through RecordAccess (trail entry included).",
        f"- verify_trail: a day of average intake ({day:,} write entries) takes about "
        f"{day / v['entries_per_s']:.0f} s to verify" if v["entries_per_s"] else "- verify_trail: no entries",
    ]


# -- entry point ---------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1000, help="audit appends (and raw inserts) per thread count")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4, 16], help="appending threads")
    parser.add_argument("--patients", type=int, default=50, help="patients with --docs-per-patient documents each")
    parser.add_argument("--docs-per-patient", type=int, default=20)
    parser.add_argument("--calls", type=int, default=500, help="calls per read measurement")
    parser.add_argument("--read-threads", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--ingest-threads", type=int, default=4, help="threads indexing (the intake workers)")
    parser.add_argument("--sqlite", action="store_true", help="the embedded default's SQLite index instead")
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                        help="PostgreSQL admin URL: a throwaway database is created beside it and dropped")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    args = parser.parse_args()
    if args.patients < 2 or args.patients > 1000:
        parser.error("--patients must be between 2 and 1000")
    if args.sqlite:
        with tempfile.TemporaryDirectory(prefix="recordsbench-") as tmp:
            result = run(f"sqlite:///{Path(tmp) / 'index.sqlite3'}", args)
    else:
        url = fresh_pg_database(args.pg)
        try:
            result = run(url, args)
        finally:
            drop_pg_database(args.pg, url)
    print(json.dumps(result, indent=2) if args.json else report(result))


if __name__ == "__main__":
    main()
