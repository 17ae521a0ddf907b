"""The SMTP spool on a real disk: what is acknowledged is handed over, in order, across restarts and crashes;
a torn tail (a write a crash cut short, never acknowledged) is skipped; a failing hand-over is retried."""

from __future__ import annotations

import threading
from pathlib import Path

from hub.errors import StoreUnavailable
from storage.spool import SpoolDrainer, SpoolWriter, backlog_bytes, frame, segments


def write(directory: Path, payloads: list[bytes]) -> None:
    writer = SpoolWriter(directory)
    writer.start()
    try:
        for future in [writer.append(p) for p in payloads]:
            future.result(timeout=10)
    finally:
        writer.close()


def test_acknowledged_records_are_handed_over_once_in_order_across_a_restart(tmp_path: Path) -> None:
    # Given ten acknowledged records, and a drainer that stops after the first batch of four
    write(tmp_path, [b"mail-%d" % n for n in range(10)])
    seen: list[bytes] = []
    first = SpoolDrainer(tmp_path, seen.append, batch_records=4, concurrency=1)
    assert first.drain_once()
    first.close()
    # When a new drainer (a restarted hub) takes over from the checkpoint
    second = SpoolDrainer(tmp_path, seen.append, batch_records=4, concurrency=1)
    assert second.drain_all(timeout_s=10)
    second.close()
    # Then every record was handed over exactly once, in order, and nothing is left to drain
    assert seen == [b"mail-%d" % n for n in range(10)]
    assert backlog_bytes(tmp_path) == 0


def test_a_torn_tail_is_skipped_once_the_writer_has_moved_on(tmp_path: Path) -> None:
    # Given a segment whose last record a crash cut short (its 250 was never sent)
    write(tmp_path, [b"acknowledged"])
    torn = tmp_path / f"{segments(tmp_path)[0]:016d}.seg"
    with open(torn, "ab") as f:
        f.write(frame(b"never acknowledged, cut short")[:20])
    # When the hub restarts: a new writer opens the next segment and takes more mail
    write(tmp_path, [b"after restart"])
    seen: list[bytes] = []
    drainer = SpoolDrainer(tmp_path, seen.append)
    assert drainer.drain_all(timeout_s=10)
    drainer.close()
    # Then both acknowledged records are handed over, the torn one is not, and drained segments are gone
    assert seen == [b"acknowledged", b"after restart"]
    assert len(segments(tmp_path)) <= 1


def test_a_batch_whose_hand_over_failed_is_handed_over_again(tmp_path: Path) -> None:
    # Given a hand-over that meets a dead object store once
    write(tmp_path, [b"one", b"two"])
    calls: list[bytes] = []
    failed = threading.Event()

    def handle(record: bytes) -> None:
        calls.append(record)
        if record == b"two" and not failed.is_set():
            failed.set()
            raise StoreUnavailable("down")

    drainer = SpoolDrainer(tmp_path, handle, concurrency=1, retry_s=(0.01, 0.05))
    stop = threading.Event()
    worker = threading.Thread(target=drainer.run, args=(stop,), daemon=True)
    worker.start()
    # When the store comes back, the drain goes on by itself
    for _ in range(500):
        if backlog_bytes(tmp_path) == 0:
            break
        stop.wait(0.01)
    stop.set()
    worker.join(5)
    drainer.close()
    # Then the whole batch was handed over again (the hand-over is idempotent), and then nothing is left
    assert calls == [b"one", b"two", b"one", b"two"]
    assert backlog_bytes(tmp_path) == 0


def test_append_is_durable_before_its_future_resolves(tmp_path: Path) -> None:
    # Given a record whose append has resolved
    writer = SpoolWriter(tmp_path)
    writer.start()
    writer.append(b"durable").result(timeout=10)
    # Then it is already in the segment file, framed, before the writer is closed
    data = (tmp_path / f"{segments(tmp_path)[0]:016d}.seg").read_bytes()
    writer.close()
    assert data == frame(b"durable")
