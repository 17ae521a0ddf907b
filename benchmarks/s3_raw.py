"""Raw S3 PUT rate: the baseline the hub's intake rate is compared to.

Owns: `raw_put_rate()` (plain minio put_object calls from a thread pool, no
hashing, no keyed digest, no hub code) and a `__main__` that starts a throwaway
SeaweedFS and prints the rate with fsync on and off.
Does not: measure the hub itself, or keep any data (temp dirs are removed).

    .venv/bin/python -m benchmarks.s3_raw --count 2000 --size-kb 50 --concurrency 1 8
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import secrets
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from minio import Minio

from storage.objects import MinioBlobStore
from storage.seaweed import SeaweedServer, free_port


def raw_put_rate(store_or_client: MinioBlobStore | Minio, payloads: list[bytes], *, concurrency: int,
                 bucket: str | None = None) -> dict[str, float]:
    """PUT every payload once under a fresh key; objects/s over the wall time, p50/p99 latency in ms."""
    client, bucket_name = _client_and_bucket(store_or_client, bucket)
    run = uuid.uuid4().hex[:8]

    def put_one(index: int) -> float:
        data = payloads[index]
        started = time.perf_counter()
        client.put_object(bucket_name=bucket_name, object_name=f"bench/{run}/{index:07d}",
                          data=io.BytesIO(data), length=len(data), content_type="application/octet-stream")
        return time.perf_counter() - started

    wall_start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = sorted(pool.map(put_one, range(len(payloads))))
    wall = time.perf_counter() - wall_start
    return {"objects": float(len(payloads)), "concurrency": float(concurrency), "seconds": wall,
            "objects_per_s": len(payloads) / wall, "mb_per_s": sum(map(len, payloads)) / wall / 1e6,
            "p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * _percentile(latencies, 0.99)}


def _client_and_bucket(store_or_client: MinioBlobStore | Minio, bucket: str | None) -> tuple[Minio, str]:
    if isinstance(store_or_client, MinioBlobStore):
        return store_or_client.client, bucket or store_or_client.bucket
    if bucket is None:
        raise ValueError("a bare Minio client needs bucket=")
    return store_or_client, bucket


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


def _bench_one_server(fsync: bool, count: int, size: int, concurrencies: list[int]) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="s3raw-") as tmp:
        server = SeaweedServer(Path(tmp), s3_port=free_port(), access_key="bench",
                               secret_key=secrets.token_hex(16), fsync=fsync)
        started = time.monotonic()
        server.start()
        startup = time.monotonic() - started
        try:
            store = MinioBlobStore.connect(endpoint=server.endpoint, access_key="bench",
                                           secret_key=server.secret_key, bucket="bench",
                                           key_secret=secrets.token_bytes(32))
            store.ensure_bucket()
            raw_put_rate(store, [os.urandom(size) for _ in range(50)], concurrency=4)  # warm-up
            rows = []
            for concurrency in concurrencies:
                payloads = [os.urandom(size) for _ in range(count)]
                result: dict[str, Any] = {"fsync": fsync, "startup_s": startup,
                                          **raw_put_rate(store, payloads, concurrency=concurrency)}
                rows.append(result)
            store.close()
            return rows
        finally:
            server.kill()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--size-kb", type=int, default=50)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(f"raw S3 PUT, SeaweedFS child process, {args.count} objects x {args.size_kb} KB (random bytes)")
    print(f"{'fsync':>5} {'conc':>4} {'obj/s':>8} {'MB/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'start s':>7}")
    for fsync in (True, False):
        for row in _bench_one_server(fsync, args.count, args.size_kb * 1024, args.concurrency):
            print(f"{row['fsync']!s:>5} {int(row['concurrency']):>4} {row['objects_per_s']:>8.0f} "
                  f"{row['mb_per_s']:>7.1f} {row['p50_ms']:>7.1f} {row['p99_ms']:>7.1f} "
                  f"{row['startup_s']:>7.1f}")


if __name__ == "__main__":
    main()
