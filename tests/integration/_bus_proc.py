"""Subprocesses for the bus fault tests: a worker that crashes or sleeps, and a publisher.

Usage (argv): `worker URL TOPOLOGY_JSON RECORD_FILE crash|hang N`
              `publish URL TOPOLOGY_JSON COUNT`
The worker appends each envelope id it starts to RECORD_FILE (one per line, flushed
and fsynced), then crashes (os._exit), or (hang) takes 50 ms and hangs on the Nth.  The publisher prints
`published <id>` once publish() returned, then waits to be killed.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from datetime import UTC, datetime

from hub.bus import open_connection
from hub.bus.kombu_bus import KombuPublisher
from hub.bus.worker import Worker
from hub.envelope import BlobRef, Envelope, Source
from hub.events import DocumentSubmitted
from hub.topology import Topology


def make_envelope(submission_id: str | None = None) -> DocumentSubmitted:
    return DocumentSubmitted(Envelope(submission_id=submission_id or uuid.uuid4().hex, received_at=datetime.now(UTC),
                                      source=Source(kind="test", producer="bus-tests"),
                                      raw=BlobRef(bucket="raw", key="k", sha256="0" * 64, size=1)))


def topology_from_json(text: str) -> Topology:
    data = json.loads(text)
    return Topology(prefix=data["prefix"], queue=data["queue"], delivery_limit=data["delivery_limit"],
                    delay_tiers_s=tuple(data["delay_tiers_s"]))


def topology_to_json(topology: Topology) -> str:
    return json.dumps({"prefix": topology.prefix, "queue": topology.queue,
                       "delivery_limit": topology.delivery_limit, "delay_tiers_s": topology.delay_tiers_s})


def record(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as out:
        out.write(line + "\n")
        out.flush()
        os.fsync(out.fileno())


def run_worker(url: str, topology: Topology, record_file: str, mode: str, hang_at: int) -> None:
    started = 0

    def handler(envelope: DocumentSubmitted) -> None:
        nonlocal started
        record(record_file, envelope.submission_id)
        started += 1
        if mode == "crash":
            os._exit(3)
        time.sleep(3600 if mode == "hang" and started >= hang_at else 0.05)

    Worker(lambda: open_connection(url), topology, handler, prefetch=1).run(threading.Event())


def run_publisher(url: str, topology: Topology, count: int) -> None:
    publisher = KombuPublisher(open_connection(url), topology, pool_size=1)
    for _ in range(count):
        envelope = make_envelope()
        publisher.publish(envelope)
        print("published", envelope.submission_id, flush=True)
    time.sleep(3600)


def main(argv: list[str]) -> None:
    if argv[0] == "worker":
        run_worker(argv[1], topology_from_json(argv[2]), argv[3], argv[4], int(argv[5]))
    elif argv[0] == "publish":
        run_publisher(argv[1], topology_from_json(argv[2]), int(argv[3]))
    else:
        raise SystemExit(f"unknown mode {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
