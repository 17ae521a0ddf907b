"""End-to-end intake benchmark: documents/second from HTTP submit to indexed, beside the raw S3 PUT
rate of the same objects, measured in the same run on the same SeaweedFS.

The hub runs as separate processes (`meshub run --role api` plus N `--role worker`), as deployed;
this process only generates load.  Latency per document = indexed time - received time, read from
the index.  Usage: python -m benchmarks.e2e [--docs 2000] [--concurrency 16] [--stack both]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from benchmarks.harness import (
    ADMIN,
    OID,
    TOKEN,
    cpu_seconds,
    cpu_total,
    delete_queues,
    documents,
    drop_pg_database,
    free_port,
    fresh_pg_database,
    patients,
    pids_named,
    start,
    wait_http,
    write_config,
)
from benchmarks.s3_raw import encryption_cost, raw_put_rate, seal_cpu_us
from storage.objects import MinioBlobStore
from storage.seaweed import SeaweedServer
from storage.sql.index import make_engine, submissions


def run_hub_load(url: str, docs: list[bytes], concurrency: int, index_url: str,
                 patient_ins: list[str], rate: float = 0.0, warmup: tuple[bytes, ...] = ()) -> dict[str, Any]:
    roster = "ins,oid,birth_name,given_names,birth_date,sex,birth_place,email,phone,postal_address,status\n" + "".join(
        f"{ins},{OID},TEST,Jeanne,1979-03-01,F,75101,,,,active\n" for ins in patient_ins)
    httpx.post(f"{url}/v1/patients/import", content=roster, headers={"Authorization": f"Bearer {ADMIN}"},
               timeout=30).raise_for_status()
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}",
                                                 "Content-Type": "application/xml"},
                          timeout=60, limits=httpx.Limits(max_connections=concurrency * 2))

    def submit(body: bytes) -> str:
        try:
            response = client.post("/v1/documents", content=body)
        except (httpx.ReadError, httpx.RemoteProtocolError):  # a kept-alive connection closed under us
            response = client.post("/v1/documents", content=body)
        response.raise_for_status()
        return str(response.json()["submission"])

    for body in warmup:  # not measured: first connections, caches, prepared statements
        submit(body)
    started = time.perf_counter()

    def paced(item: tuple[int, bytes]) -> str:
        """Open loop: document i leaves at started + i/rate, whatever the hub's speed."""
        delay = started + item[0] / rate - time.perf_counter() if rate else 0.0
        if delay > 0:
            time.sleep(delay)
        return submit(item[1])

    with ThreadPoolExecutor(concurrency) as pool:
        ids = list(pool.map(paced, enumerate(docs)))
    accepted_s = time.perf_counter() - started
    engine = make_engine(index_url)
    table = submissions
    while True:
        with engine.connect() as conn:
            pending = conn.execute(sa.select(sa.func.count()).select_from(table).where(
                table.c.status == "pending")).scalar_one()
        if pending == 0:
            break
        time.sleep(0.05)
    total_s = time.perf_counter() - started
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.status, table.c.received_at, table.c.updated_at).where(
            table.c.submission_id.in_(ids))).all()
    engine.dispose()
    client.close()
    latencies = sorted((_utc(r.updated_at) - _utc(r.received_at)).total_seconds() * 1000 for r in rows)
    return {"docs": len(ids), "indexed": sum(r.status == "indexed" for r in rows),
            "accept_per_s": len(ids) / accepted_s, "indexed_per_s": len(ids) / total_s,
            "p50_ms": statistics.median(latencies), "p99_ms": latencies[int(len(latencies) * 0.99) - 1]}


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def bench_stack(name: str, *, s3: SeaweedServer, docs: list[bytes], patient_ins: list[str], concurrency: int,
                workers: int, rate: float, warmup: int,
                worker_procs: int, bus_url: str, index_url: str, tmp: Path) -> dict[str, Any]:
    data = tmp / name
    data.mkdir()
    port = free_port()
    config = data / "meshub.toml"
    index_url = index_url or f"sqlite:///{data / 'index.sqlite3'}"
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    write_config(config, s3=s3, bucket=f"hub-{name}", bus_url=bus_url, index_url=index_url, port=port,
                 workers=workers, prefix=prefix)

    common = ["--config", str(config), "--data-dir", str(data)]
    with ExitStack() as stack:
        if bus_url:
            stack.callback(delete_queues, bus_url, prefix)  # runs last, after the hub stopped
        # Embedded: one `meshub run` process, as users run it; production: API + worker processes.
        api = start(["run", "--role", "api" if worker_procs else "all", *common], stack, data / "hub.log")
        wait_http(f"http://127.0.0.1:{port}")
        workers_ = [start(["run", "--role", "worker", *common], stack, data / "hub.log")
                    for _ in range(worker_procs)]
        time.sleep(1.0)
        def sample() -> dict[str, float]:
            times = os.times()
            return {"api": cpu_seconds(api.pid), "workers": sum(cpu_seconds(w.pid) for w in workers_),
                    "s3": cpu_seconds(s3.pid or 0), "broker": cpu_total(pids_named("beam.smp")),
                    "postgres": cpu_total(pids_named("postgres")), "load": times.user + times.system}

        before = sample()
        result = run_hub_load(f"http://127.0.0.1:{port}", docs, concurrency, index_url, patient_ins, rate,
                              warmup=tuple(documents(warmup, patient_ins)))
        after = sample()
        result["cpu_ms_per_doc"] = {k: round(1000 * (after[k] - before[k]) / len(docs), 2) for k in before}
        return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--patients", type=int, default=500, help="documents are spread over this many patients")
    parser.add_argument("--warmup", type=int, default=20, help="documents sent first and not measured")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="open loop: submit at this many documents/s (latency at a given load); 0 = flat out")
    parser.add_argument("--workers", type=int, default=4, help="threads per worker process")
    parser.add_argument("--worker-procs", type=int, default=2)
    parser.add_argument("--stack", choices=("production", "embedded", "both"), default="both")
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    patient_ins = patients(args.patients)
    docs = documents(args.docs, patient_ins)
    results: dict[str, Any] = {"docs": args.docs, "patients": args.patients, "doc_bytes": len(docs[0]),
                               "rate": args.rate,
                               "concurrency": args.concurrency,
                               "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp_name, SeaweedServer(
            Path(tmp_name) / "s3", s3_port=free_port(), access_key="bench", secret_key="benchsecret") as s3:
        tmp = Path(tmp_name)
        store = MinioBlobStore.connect(endpoint=s3.endpoint, access_key="bench", secret_key="benchsecret",
                                       bucket="raw-put", key_secret=b"bench", keyring=None)
        store.ensure_bucket()
        before = _raw_cpu(s3)
        results["raw_s3_put"] = raw_put_rate(store, docs, concurrency=args.concurrency)
        after = _raw_cpu(s3)
        results["raw_s3_put"]["cpu_ms_per_put"] = {k: round(1000 * (after[k] - before[k]) / len(docs), 2)
                                                   for k in before}
        # What encryption at rest costs, same documents, same server: the hub's put without and with sealing.
        results["encryption"] = encryption_cost(s3, docs, concurrency=args.concurrency)
        results["encryption"]["seal_cpu"] = seal_cpu_us(len(docs[0]))
        print("encryption", json.dumps(results["encryption"]), file=sys.stderr, flush=True)
        stacks = ("production", "embedded") if args.stack == "both" else (args.stack,)
        for name in stacks:
            production = name == "production"
            pg_url = fresh_pg_database(args.pg) if production else ""
            results[name] = bench_stack(
                name, s3=s3, docs=docs, patient_ins=patient_ins, concurrency=args.concurrency,
                workers=args.workers, rate=args.rate, warmup=args.warmup,
                worker_procs=args.worker_procs if production else 0,
                bus_url=args.amqp if production else "", index_url=pg_url if production else "", tmp=tmp)
            if production:
                drop_pg_database(args.pg, pg_url)
            results[name]["vs_raw_put"] = results[name]["indexed_per_s"] / results["raw_s3_put"]["objects_per_s"]
            print(name, json.dumps(results[name]), file=sys.stderr, flush=True)
    print(json.dumps(results, indent=2))


def _raw_cpu(s3: SeaweedServer) -> dict[str, float]:
    """CPU seconds of SeaweedFS and of this process (the minio client threads) so far."""
    times = os.times()
    return {"s3": cpu_seconds(s3.pid or 0), "client": times.user + times.system}


if __name__ == "__main__":
    main()
