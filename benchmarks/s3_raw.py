"""Raw S3 PUT rate: the baseline the hub's intake rate is compared to.

Owns: `raw_put_rate()` (plain minio put_object calls from a thread pool, no
hashing, no keyed digest, no hub code), `store_put_rate()` (the hub's own
MinioBlobStore.put, sealed or plaintext: what encryption at rest costs) and a
`__main__` that starts a throwaway SeaweedFS and prints the rates with fsync on
and off, then raw PUT vs the hub's put without and with encryption in the same run.
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

from storage.keyring import Keyring, new_kek
from storage.objects import MinioBlobStore
from storage.seaweed import SeaweedServer
from storage.seaweed_net import free_port


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


def store_put_rate(store: MinioBlobStore, payloads: list[bytes], *, concurrency: int,
                   read_back: bool = False) -> dict[str, float]:
    """MinioBlobStore.put of every payload (SHA-256, keyed digest and, with a keyring, AES-256-GCM sealing),
    then optionally get() of each (decrypt + SHA-256 check): objects/s, p50/p99 in ms."""
    def put_one(data: bytes) -> float:
        started = time.perf_counter()
        store.put(data, kind="bench", content_type="application/octet-stream")
        return time.perf_counter() - started

    wall_start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = sorted(pool.map(put_one, payloads))
    wall = time.perf_counter() - wall_start
    out = {"objects": float(len(payloads)), "concurrency": float(concurrency), "seconds": wall,
           "objects_per_s": len(payloads) / wall, "mb_per_s": sum(map(len, payloads)) / wall / 1e6,
           "p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * _percentile(latencies, 0.99)}
    if read_back:
        refs = [store.put(data, kind="bench", content_type="application/octet-stream") for data in payloads[:200]]
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(store.get, refs))
        out["get_per_s"] = len(refs) / (time.perf_counter() - started)
    return out


def encryption_cost(server: SeaweedServer, payloads: list[bytes], *, concurrency: int) -> dict[str, Any]:
    """Raw PUT, the hub's plaintext put and its sealed put of the same payloads on one server, in one run,
    interleaved in three rounds (the machine is shared: the median round of each is kept)."""
    stores = {name: MinioBlobStore.connect(endpoint=server.endpoint, access_key=server.access_key,
                                           secret_key=server.secret_key, bucket=f"enc-{name}-{uuid.uuid4().hex[:6]}",
                                           key_secret=secrets.token_bytes(32), keyring=ring)
              for name, ring in (("plain", None), ("sealed", Keyring.of(new_kek())))}
    for store in stores.values():
        store.ensure_bucket()
    rounds: dict[str, list[dict[str, float]]] = {"raw_put": [], "hub_put_plain": [], "hub_put_sealed": []}
    for _ in range(3):
        rounds["raw_put"].append(raw_put_rate(stores["plain"], payloads, concurrency=concurrency))
        rounds["hub_put_plain"].append(store_put_rate(stores["plain"], payloads, concurrency=concurrency,
                                                      read_back=True))
        rounds["hub_put_sealed"].append(store_put_rate(stores["sealed"], payloads, concurrency=concurrency,
                                                       read_back=True))
    for store in stores.values():
        store.close()
    out: dict[str, Any] = {name: sorted(rows, key=lambda r: r["objects_per_s"])[1] for name, rows in rounds.items()}
    out["sealed_vs_plain_put"] = out["hub_put_sealed"]["objects_per_s"] / out["hub_put_plain"]["objects_per_s"]
    out["sealed_vs_plain_get"] = out["hub_put_sealed"]["get_per_s"] / out["hub_put_plain"]["get_per_s"]
    return out


def seal_cpu_us(size: int, count: int = 200) -> dict[str, float]:
    """CPU cost of sealing and of opening one payload of `size` bytes, without any I/O (microseconds)."""
    from storage import sealing
    kek, data, key = new_kek(), os.urandom(size), "bench/00/key"
    started = time.process_time()
    for _ in range(count):
        sealed, pieces = sealing.seal(data, kek, key)
        body = b"".join(pieces)
    seal_us = (time.process_time() - started) / count * 1e6
    started = time.process_time()
    for _ in range(count):
        dek = sealing.unwrap(sealed.metadata[sealing.META_DEK], kek, key)
        sealing.open_bytes(body, dek, key)
    open_us = (time.process_time() - started) / count * 1e6
    return {"size": float(size), "seal_us": round(seal_us, 1), "open_us": round(open_us, 1)}


def _client_and_bucket(store_or_client: MinioBlobStore | Minio, bucket: str | None) -> tuple[Minio, str]:
    if isinstance(store_or_client, MinioBlobStore):
        return store_or_client.client, bucket or store_or_client.bucket
    if bucket is None:
        raise ValueError("a bare Minio client needs bucket=")
    return store_or_client, bucket


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


def _bench_one_server(fsync: bool, count: int, size: int, concurrencies: list[int],
                      encryption: bool = True) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="s3raw-") as tmp:
        server = SeaweedServer(Path(tmp), s3_port=free_port(), access_key="bench",
                               secret_key=secrets.token_hex(16), fsync=fsync)
        started = time.monotonic()
        server.start()
        startup = time.monotonic() - started
        try:
            store = MinioBlobStore.connect(endpoint=server.endpoint, access_key="bench",
                                           secret_key=server.secret_key, bucket="bench",
                                           key_secret=secrets.token_bytes(32), keyring=None)
            store.ensure_bucket()
            raw_put_rate(store, [os.urandom(size) for _ in range(50)], concurrency=4)  # warm-up
            rows: list[dict[str, Any]] = []
            if fsync and encryption:
                for concurrency in concurrencies:
                    payloads = [os.urandom(size) for _ in range(count)]
                    rows.append({"fsync": fsync, "startup_s": startup, "encryption": True,
                                 **encryption_cost(server, payloads, concurrency=concurrency)})
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
    parser.add_argument("--no-encryption", action="store_true", help="skip the encryption-at-rest comparison")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(f"raw S3 PUT, SeaweedFS child process, {args.count} objects x {args.size_kb} KB (random bytes)")
    print(f"{'fsync':>5} {'conc':>4} {'obj/s':>8} {'MB/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'start s':>7}")
    encryption_rows = []
    for fsync in (True, False):
        for row in _bench_one_server(fsync, args.count, args.size_kb * 1024, args.concurrency,
                                     encryption=not args.no_encryption):
            if row.get("encryption"):
                encryption_rows.append(row)
                continue
            print(f"{row['fsync']!s:>5} {int(row['concurrency']):>4} {row['objects_per_s']:>8.0f} "
                  f"{row['mb_per_s']:>7.1f} {row['p50_ms']:>7.1f} {row['p99_ms']:>7.1f} "
                  f"{row['startup_s']:>7.1f}")
    if encryption_rows:
        print(f"\nencryption at rest (fsync on, same server, median of 3 interleaved rounds; "
              f"CPU to seal/open one object: {seal_cpu_us(args.size_kb * 1024)})")
        print(f"{'conc':>4} {'raw PUT/s':>9} {'hub put/s':>9} {'sealed/s':>9} {'ratio':>6} "
              f"{'p50 plain':>9} {'p50 seal':>8} {'get/s':>7} {'sealed':>7}")
        for row in encryption_rows:
            raw, plain, sealed = row["raw_put"], row["hub_put_plain"], row["hub_put_sealed"]
            print(f"{int(raw['concurrency']):>4} {raw['objects_per_s']:>9.0f} {plain['objects_per_s']:>9.0f} "
                  f"{sealed['objects_per_s']:>9.0f} {row['sealed_vs_plain_put']:>6.2f} {plain['p50_ms']:>9.1f} "
                  f"{sealed['p50_ms']:>8.1f} {plain['get_per_s']:>7.0f} {sealed['get_per_s']:>7.0f}")


if __name__ == "__main__":
    main()
