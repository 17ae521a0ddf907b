"""The whole chain: documents in by HTTP POST and by MSSanté SMTP (an IHE XDM zip), each one indexed, traced in
the audit trail (`write` entry) and announced to its patient by an e-mail that reaches a local SMTP sink.

A document is done when all three happened.  Every document is for a patient of its own (active, with an
e-mail address, no quiet hours) and [notify] digest_window_s = 0, so each document gives exactly one e-mail
and no digest merges two.  Per stack (production: `meshub run --role api` + N `--role worker`, RabbitMQ,
PostgreSQL; embedded: one `meshub run`, SQLite bus and index): p50/p99 submit->indexed and submit->notified
at open-loop 10/s and 40/s and flat out, docs/s flat out, CPU ms per document of every process, resident
memory of each hub process at rest and peak; beside them, the raw S3 PUT rate of the same objects and the
raw smtplib rate to the same sink, same run.  Nothing is asserted.

    .venv/bin/python -m benchmarks.chain [--docs 1000] [--stack both] [--worker-procs 1,2,3] [--smtp-share 0.25]
        [--profile] [--big] [--json out.json] [--markdown out.md]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.chain_load import Doc, Load, build_docs, chain_stats
from benchmarks.chain_report import markdown
from benchmarks.harness import (
    children,
    cpu_seconds,
    cpu_total,
    delete_queues,
    drop_pg_database,
    free_port,
    fresh_pg_database,
    memory_kb,
    patients,
    pids_named,
    start,
    wait_http,
    write_config,
)
from benchmarks.profiles import Profiler, summarise
from benchmarks.s3_raw import raw_put_rate
from benchmarks.sink import SinkProcess, raw_smtplib_rate
from storage.objects import MinioBlobStore
from storage.seaweed import SeaweedServer

MIB = 1024 * 1024


@dataclass
class Run:
    """What every stack of one run shares."""

    args: argparse.Namespace
    s3: SeaweedServer
    sink: SinkProcess
    tmp: Path
    phases: dict[str, tuple[float, list[Doc]]] = field(default_factory=dict)  # name -> (rate, docs)
    warmup: list[Doc] = field(default_factory=list)
    used: int = 0  # patients taken so far (each document has a patient of its own, across stacks too)


def hub_config(run: Run, data: Path, *, name: str, bus_url: str, index_url: str, prefix: str) -> tuple[Path, int, int]:
    port, smtp_port = free_port(), free_port()
    big = run.args.big
    extra = (f"[smtp]\nport = {smtp_port}\n" + ("max_message_bytes = 41943040\n" if big else "")
             + ("[mime]\nmax_bytes = 41943040\n" if big else "")
             + f'[notify]\nsmtp_host = "127.0.0.1"\nsmtp_port = {run.sink.port}\ndigest_window_s = 0\n'
             f"workers = {run.args.notify_workers}\n")
    config = data / "meshub.toml"
    write_config(config, s3=run.s3, bucket=f"hub-{name.replace('_', '-')}", bus_url=bus_url, index_url=index_url,
                 port=port, workers=run.args.workers, prefix=prefix,
                 http="max_body_bytes = 41943040\n" if big else "", extra=extra)
    return config, port, smtp_port


def hub_pids(api: int, workers: list[int], production: bool) -> dict[str, int]:
    """Every hub process by name: the API (or the one embedded hub), its SMTP gateway children, the workers."""
    out = {"api" if production else "hub": api}
    gateways = [pid for pid in children(api) if b"resource_tracker" not in _cmdline(pid)]
    out.update({f"gateway{n}": pid for n, pid in enumerate(gateways, start=1)})
    out.update({f"worker{n}": pid for n, pid in enumerate(workers, start=1)})
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def cpu_sample(run: Run, pids: dict[str, int]) -> dict[str, float]:
    times = os.times()
    out = {name: cpu_seconds(pid) for name, pid in pids.items()}
    out.update({"seaweedfs": cpu_seconds(run.s3.pid or 0), "rabbitmq": cpu_total(pids_named("beam.smp")),
                "postgres": cpu_total(pids_named("postgres")), "load": times.user + times.system,
                "sink": run.sink.cpu_s()})
    return out


def bench_stack(run: Run, name: str, worker_procs: int) -> dict[str, Any]:
    """One hub (fresh database, queues and bucket), its phases in order, then the big documents."""
    production = name.startswith("production")
    data = run.tmp / name
    data.mkdir()
    pg_url = fresh_pg_database(run.args.pg) if production else ""
    bus_url = run.args.amqp if production else ""
    index_url = pg_url or f"sqlite:///{data / 'index.sqlite3'}"
    prefix = f"chain{os.urandom(3).hex()}"
    config, port, smtp_port = hub_config(run, data, name=name, bus_url=bus_url, index_url=index_url, prefix=prefix)
    common = ["--config", str(config), "--data-dir", str(data)]
    try:
        with ExitStack() as stack:
            if bus_url:
                stack.callback(delete_queues, bus_url, prefix)  # runs last, after the hub stopped
            api = start(["run", "--role", "api" if production else "all", *common], stack, data / "hub.log")
            wait_http(f"http://127.0.0.1:{port}", log=data / "hub.log")
            workers = [start(["run", "--role", "worker", *common], stack, data / "hub.log").pid
                       for _ in range(worker_procs if production else 0)]
            time.sleep(1.0)
            load = stack.enter_context(Load(f"http://127.0.0.1:{port}", smtp_port, index_url, run.sink,
                                            concurrency=run.args.concurrency))
            return measure(run, load, hub_pids(api.pid, workers, production), name)
    finally:
        if pg_url:
            drop_pg_database(run.args.pg, pg_url)


def measure(run: Run, load: Load, pids: dict[str, int], name: str) -> dict[str, Any]:
    every = run.warmup + [d for _, docs in run.phases.values() for d in docs] + load.big_docs(run.args.big)
    load.prepare([d.ins for d in every])
    load.submit(run.warmup, rate=0)
    load.wait_done(run.warmup)
    result: dict[str, Any] = {"worker_procs": sum(n.startswith("worker") for n in pids),
                              "memory_at_rest_kb": {n: memory_kb(p) for n, p in pids.items()}}
    for phase, (rate, docs) in run.phases.items():
        flat = rate == 0
        profiler = Profiler(run.tmp / "profiles" / name) if flat and run.args.profile else None
        if profiler:
            profiler.start(pids)
        before = cpu_sample(run, pids)
        peak = load.track_rss(pids) if flat else None
        started = time.time()
        submitted = load.submit(docs, rate=rate)
        result[phase] = chain_stats(docs, submitted, load.wait_done(docs), started)
        if flat:
            after = cpu_sample(run, pids)
            result["cpu_ms_per_doc"] = {k: round(1000 * (after[k] - before[k]) / len(docs), 2) for k in before}
            result["cpu_ms_per_doc"]["hub_total"] = round(sum(v for k, v in result["cpu_ms_per_doc"].items()
                                                              if k in pids), 2)
            result["memory_peak_kb"] = {n: {"VmHWM": memory_kb(p).get("VmHWM", 0), "VmRSS_max": peak.get(n, 0)}
                                        for n, p in pids.items()} if peak is not None else {}
            load.stop_tracking()
        if profiler:
            summary = summarise(profiler.stop())
            (run.tmp / "profiles" / f"{name}.summary.txt").write_text(summary)
            result["profile"] = _keep_profile(run, name, summary)
        print(name, phase, json.dumps(result[phase]), file=sys.stderr, flush=True)
    if run.args.big:
        result["big"] = load.big(pids)
    return result


def _keep_profile(run: Run, name: str, summary: str) -> str:
    out = Path(run.args.profile_dir) / f"chain-{name}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(summary)
    return str(out)


def main() -> None:
    args = parse_args()
    results: dict[str, Any] = {"docs": args.docs, "rate_docs": args.rate_docs, "smtp_share": args.smtp_share,
                               "concurrency": args.concurrency, "cpus": os.cpu_count()}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="chainbench-") as tmp_name, SeaweedServer(
            Path(tmp_name) / "s3", s3_port=free_port(), access_key="bench", secret_key="benchsecret") as s3:
        tmp = Path(tmp_name)
        sink = SinkProcess(tmp / "sink.log").start()
        try:
            run = Run(args, s3, sink, tmp)
            results.update(baselines(run))
            for name, procs in stacks(args):
                plan(run, args)
                results[name] = bench_stack(run, name, procs)
                flat = results[name].get("flat", {})
                if flat.get("done_per_s"):
                    flat["vs_raw_put"] = round(flat["done_per_s"] / results["raw_s3_put"]["objects_per_s"], 3)
        finally:
            sink.stop()
    results["wall_s"] = round(time.monotonic() - started, 1)
    text = json.dumps(results, indent=2)
    if args.json:
        Path(args.json).write_text(text)
    table = markdown(results)
    if args.markdown:
        Path(args.markdown).write_text(table)
    print(text if not args.table else table)


def baselines(run: Run) -> dict[str, Any]:
    """Raw S3 PUT of the flat-out phase's CDA bytes, and raw smtplib to the sink, on the same servers."""
    docs = build_docs(patients(run.args.docs, offset=8000), 0.0, pad_bytes=0)
    store = MinioBlobStore.connect(endpoint=run.s3.endpoint, access_key="bench", secret_key="benchsecret",
                                   bucket="raw-put", key_secret=b"bench", keyring=None)
    store.ensure_bucket()
    put = raw_put_rate(store, [d.cda for d in docs], concurrency=run.args.concurrency)
    smtp = raw_smtplib_rate(run.sink.port, min(run.args.docs, 1000))
    return {"raw_s3_put": {k: round(v, 2) for k, v in put.items()}, "raw_smtplib_msg_per_s": round(smtp, 1)}


def plan(run: Run, args: argparse.Namespace) -> None:
    """Fresh documents, and patients never used before in this run (the sink is shared): warm-up, each
    open-loop rate, then flat out."""
    def take(count: int) -> list[Doc]:
        if run.used + count > 8000:  # patients() repeats after 9000; 8000+ are the baselines' and big's
            raise SystemExit("too many documents for one run: fewer --docs, --rate-docs or stacks")
        docs = build_docs(patients(count, offset=run.used), args.smtp_share)
        run.used += count
        return docs

    run.warmup = take(args.warmup)
    run.phases = {f"rate_{r:g}": (r, take(args.rate_docs)) for r in args.rates if args.rate_docs}
    run.phases["flat"] = (0.0, take(args.docs))


def stacks(args: argparse.Namespace) -> list[tuple[str, int]]:
    out = []
    if args.stack in ("production", "both"):
        procs = [int(n) for n in args.worker_procs.split(",")]
        out += [(f"production_{n}w" if len(procs) > 1 else "production", n) for n in procs]
    if args.stack in ("embedded", "both"):
        out.append(("embedded", 0))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000, help="documents of the flat-out phase")
    parser.add_argument("--rate-docs", type=int, default=300, help="documents of each open-loop phase (0: none)")
    parser.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=[10.0, 40.0])
    parser.add_argument("--warmup", type=int, default=20, help="documents sent first and not measured")
    parser.add_argument("--smtp-share", type=float, default=0.25, help="share of documents sent by SMTP (XDM)")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads submitting")
    parser.add_argument("--workers", type=int, default=4, help="[workers] count: threads per worker process")
    parser.add_argument("--notify-workers", type=int, default=2, help="[notify] workers per process")
    parser.add_argument("--worker-procs", default="2", help="production: worker processes, or a sweep: 1,2,3")
    parser.add_argument("--stack", choices=("production", "embedded", "both"), default="both")
    parser.add_argument("--profile", action="store_true", help="py-spy each hub process during the flat-out run")
    parser.add_argument("--profile-dir", default="benchmarks/profiles", help="where --profile writes summaries")
    parser.add_argument("--big", action="store_true", help="one 20 MiB CDA by POST and one 25 MiB mail by SMTP")
    parser.add_argument("--json", help="also write the JSON here")
    parser.add_argument("--markdown", help="also write the Markdown table here")
    parser.add_argument("--table", action="store_true", help="print the Markdown table instead of the JSON")
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
