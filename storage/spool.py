"""The SMTP gateway's spool: an append-only journal on local disk with group commit, and its drain.

Owns:
  SpoolWriter   append(payload) -> Future, resolved once the record is on disk (written, then
                fdatasync'ed).  One writer thread takes every record queued since its last flush,
                writes them with one write and makes them durable with one fdatasync (group commit):
                sessions waiting for their 250 at the same moment share one disk flush, as a
                database's commit log does.  Refuses (SpoolFull) past `max_backlog_bytes` undrained.
  SpoolDrainer  reads the records back in order, hands each to a callback (the composition root's:
                intake.accept under the record's own submission id), then advances a checkpoint and
                deletes drained segments.
  Record framing: magic b"MSP1", payload length and CRC-32 (big-endian u32 each), then the payload.

Files, under one directory:
  <seq>.seg     segments (16-digit sequence numbers).  A writer appends only to a segment it created,
                and creates a new one at each start and past `segment_bytes`.
  checkpoint    "<seq> <offset>": every record before it was handed over.  Replaced atomically.
  dead/         records the callback refused for good (PermanentError), kept for an operator.

Crash rules.  A record is acknowledged (250) only after its fdatasync, so a torn tail (a crash in the
middle of a write) belongs to a mail that was never acknowledged: the drainer skips it once a newer
segment exists, which is always so after a restart.  A record handed over but not yet checkpointed is
handed over again after a restart: the callback must be idempotent, and is, since the submission id
travels in the record.  Writer and drainer share nothing but these files, so they may run in
different processes (`meshub run` serves SMTP from a process of its own).
Does not: know what a record means (hub.mailqueue.SpooledMail) or speak SMTP.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hub.errors import PermanentError, SpoolFull, SpoolUnavailable, TransientError

log = logging.getLogger(__name__)

MIB = 1024 * 1024
MAGIC = b"MSP1"
_HEAD = struct.Struct(">4sII")  # magic, payload length, CRC-32 of the payload
_SEGMENT = re.compile(r"^(\d{16})\.seg$")
MAX_RECORD_BYTES = 256 * MIB


def frame(payload: bytes) -> bytes:
    """One record: header (magic, length, CRC-32) and the payload."""
    return _HEAD.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True, slots=True)
class Parsed:
    """What parse() found in a byte run: the complete records, where they end, and what stopped it.

    `need` > 0: the run ends inside a record that is `need` bytes long in all (read that much);
    `bad`: the bytes at `end` are not a record (a torn write, or a write still in progress)."""

    records: tuple[bytes, ...]
    end: int
    need: int = 0
    bad: bool = False


def parse(data: bytes, *, limit: int = 0) -> Parsed:
    """Split `data` into records, at most `limit` of them (0: all); stops at the first incomplete one."""
    records: list[bytes] = []
    at = 0
    while at < len(data) and (not limit or len(records) < limit):
        if len(data) - at < _HEAD.size:
            return Parsed(tuple(records), at, need=_HEAD.size)
        magic, length, crc = _HEAD.unpack_from(data, at)
        if magic != MAGIC or length > MAX_RECORD_BYTES:
            return Parsed(tuple(records), at, bad=True)
        start, stop = at + _HEAD.size, at + _HEAD.size + length
        if stop > len(data):
            return Parsed(tuple(records), at, need=_HEAD.size + length)
        payload = data[start:stop]
        if zlib.crc32(payload) != crc:
            return Parsed(tuple(records), at, bad=True)
        records.append(payload)
        at = stop
    return Parsed(tuple(records), at)


def _segment_path(directory: Path, seq: int) -> Path:
    return directory / f"{seq:016d}.seg"


def segments(directory: Path) -> list[int]:
    """Sequence numbers of the segment files, oldest first."""
    found = (_SEGMENT.match(name) for name in os.listdir(directory))
    return sorted(int(m.group(1)) for m in found if m)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_checkpoint(directory: Path) -> tuple[int, int]:
    """(segment, offset) before which everything was handed over; (0, 0) when nothing was drained yet."""
    try:
        seq, offset = (directory / "checkpoint").read_text().split()
        return int(seq), int(offset)
    except FileNotFoundError:
        return 0, 0
    except ValueError as exc:
        raise SpoolUnavailable(f"spool checkpoint unreadable: {exc}") from exc


def backlog_bytes(directory: Path) -> int:
    """Bytes written to the spool and not yet drained (segment sizes past the checkpoint)."""
    cp_seq, cp_offset = read_checkpoint(directory)
    total = 0
    for seq in segments(directory):
        if seq < cp_seq:
            continue
        try:
            size = _segment_path(directory, seq).stat().st_size
        except FileNotFoundError:  # deleted by the drainer meanwhile
            continue
        total += size - cp_offset if seq == cp_seq else size
    return max(total, 0)


class SpoolWriter:
    """Appends records to the spool with group commit; see the module docstring."""

    def __init__(self, directory: Path, *, segment_bytes: int = 64 * MIB, max_backlog_bytes: int = 1024 * MIB,
                 backlog_check_s: float = 0.25) -> None:
        self.directory = directory
        self._segment_bytes = segment_bytes
        self._max_backlog = max_backlog_bytes
        self._backlog_check_s = backlog_check_s
        self._backlog = (0.0, 0)  # (measured at, bytes)
        self._pending: list[tuple[bytes, Future[None]]] = []
        self._wake = threading.Condition()
        self._closing = False
        self._fd = -1
        self._seq = 0
        self._offset = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Create the directory and a fresh segment, and start the writer thread."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._open_segment()
        self._thread = threading.Thread(target=self._run, name="spool-writer", daemon=True)
        self._thread.start()
        log.info("spool writer on %s (segment %d)", self.directory, self._seq)

    def append(self, payload: bytes) -> Future[None]:
        """Queue one record; the future resolves once it is durable, or fails with SpoolUnavailable.
        Raises SpoolFull at once when the undrained backlog is over its limit."""
        if self._closing or self._thread is None:
            raise SpoolUnavailable("spool writer is not running")
        if self.backlog() > self._max_backlog:
            raise SpoolFull(f"spool backlog over {self._max_backlog} bytes")
        future: Future[None] = Future()
        with self._wake:
            self._pending.append((frame(payload), future))
            self._wake.notify()
        return future

    def backlog(self) -> int:
        """Undrained bytes, measured at most every `backlog_check_s` (the drainer may be another process)."""
        measured_at, value = self._backlog
        now = time.monotonic()
        if now - measured_at >= self._backlog_check_s:
            try:
                value = backlog_bytes(self.directory)
            except (OSError, SpoolUnavailable):
                value = 0  # a write will tell whether the disk is usable
            self._backlog = (now, value)
        return value

    def close(self) -> None:
        """Flush what is queued, then stop the thread and close the segment."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- the writer thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closing:
                    self._wake.wait()
                batch, self._pending = self._pending, []
                closing = self._closing
            if batch:
                self._flush(batch)
            elif closing:
                return

    def _flush(self, batch: list[tuple[bytes, Future[None]]]) -> None:
        data = b"".join(record for record, _ in batch)
        try:
            if self._fd < 0:
                self._open_segment()
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fdatasync(self._fd)
        except OSError as exc:
            log.error("spool write failed (%s): %d message(s) answered 451", exc.strerror or type(exc).__name__,
                      len(batch))
            self._abandon_segment()
            for _, future in batch:
                future.set_exception(SpoolUnavailable(f"spool write failed: {exc.strerror or exc}"))
            return
        self._offset += len(data)
        for _, future in batch:
            future.set_result(None)
        if self._offset >= self._segment_bytes:
            self._rotate()

    def _open_segment(self) -> None:
        existing = segments(self.directory)
        self._seq = max([*existing, read_checkpoint(self.directory)[0]], default=0) + 1
        self._fd = os.open(_segment_path(self.directory, self._seq), os.O_WRONLY | os.O_CREAT | os.O_EXCL
                           | os.O_APPEND, 0o600)
        self._offset = 0
        _fsync_dir(self.directory)

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        try:
            self._open_segment()
        except OSError as exc:  # the next flush tries again
            log.error("spool: cannot start a new segment (%s)", exc.strerror or type(exc).__name__)

    def _abandon_segment(self) -> None:
        """After a failed write or flush, never append to this segment again: the drainer skips its
        unacknowledged tail once the next segment exists."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._offset)
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(OSError):  # else the next flush tries again
            self._open_segment()


class SpoolDrainer:
    """Hands spooled records to `handle`, in order, `concurrency` at a time; see the module docstring.

    `handle(payload)` returns normally once the record is safely elsewhere; it raises TransientError to
    be retried later (the whole batch is retried: `handle` is idempotent) or PermanentError to have
    the record set aside in dead/.  `thread_init` runs first in each of the pool's threads."""

    def __init__(self, directory: Path, handle: Callable[[bytes], object], *, batch_records: int = 128,
                 batch_bytes: int = 8 * MIB, concurrency: int = 8, poll_s: float = 0.02,
                 retry_s: tuple[float, float] = (0.5, 30.0), thread_init: Callable[[], None] | None = None) -> None:
        self.directory = directory
        self._handle = handle
        self._batch_records = batch_records
        self._batch_bytes = batch_bytes
        self._poll_s = poll_s
        self._retry_s = retry_s
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="spool-drain",
                                        initializer=thread_init)
        self._checkpoint: tuple[int, int] | None = None
        self.drained = 0

    def run(self, stop: threading.Event) -> None:
        """Drain until `stop` is set: poll when idle, back off while `handle` meets TransientErrors."""
        delay = self._retry_s[0]
        while not stop.is_set():
            try:
                moved = self.drain_once()
            except TransientError as exc:
                log.warning("spool drain paused %.1f s: %s", delay, type(exc).__name__)
                stop.wait(delay)
                delay = min(delay * 2, self._retry_s[1])
                continue
            except OSError as exc:
                log.error("spool drain: cannot read the spool (%s)", exc.strerror or type(exc).__name__)
                stop.wait(delay)
                continue
            except Exception:  # a bug must not stop the drain for good: say so, wait, try again
                log.exception("spool drain failed; retrying in %.1f s", delay)
                stop.wait(delay)
                delay = min(delay * 2, self._retry_s[1])
                continue
            delay = self._retry_s[0]
            if not moved:
                stop.wait(self._poll_s)

    def drain_all(self, timeout_s: float = 30.0) -> bool:
        """Drain until nothing is left (True) or `timeout_s` passed or a dependency is down (False)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if not self.drain_once():
                    return not self.backlog()
            except (TransientError, OSError):
                return False
        return False

    def backlog(self) -> int:
        return backlog_bytes(self.directory)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def drain_once(self) -> bool:
        """Hand over one batch, or step past a finished segment; False when there was nothing to do."""
        seq, offset = self._checkpoint if self._checkpoint is not None else read_checkpoint(self.directory)
        self._checkpoint = (seq, offset)
        present = segments(self.directory)
        for old in (s for s in present if s < seq):
            self._delete(old)
        later = [s for s in present if s > seq]
        if seq not in present:
            if not later:
                return False
            self._save(later[0], 0)
            return True
        parsed = self._read(seq, offset)
        if parsed.records:
            self._hand_over(parsed.records, seq, offset)
            self._save(seq, offset + parsed.end)
            self.drained += len(parsed.records)
            return True
        if not later:
            return False  # the writer may still be writing this segment
        if parsed.need or parsed.bad:
            log.warning("spool segment %d: skipped a torn tail at byte %d (never acknowledged)", seq, offset)
        self._save(later[0], 0)
        self._delete(seq)
        return True

    def _read(self, seq: int, offset: int) -> Parsed:
        with open(_segment_path(self.directory, seq), "rb") as f:
            f.seek(offset)
            data = f.read(self._batch_bytes)
            parsed = parse(data, limit=self._batch_records)
            if not parsed.records and parsed.need > len(data):  # one record larger than a batch
                f.seek(offset)
                data = f.read(parsed.need)
                parsed = parse(data, limit=1)
        return parsed

    def _hand_over(self, records: tuple[bytes, ...], seq: int, offset: int) -> None:
        failures = [f.exception() for f in [self._pool.submit(self._one, r, seq, offset) for r in records]]
        transient = [e for e in failures if e is not None]
        if transient:
            raise transient[0]

    def _one(self, record: bytes, seq: int, offset: int) -> None:
        try:
            self._handle(record)
        except PermanentError as exc:
            dead = self.directory / "dead"
            dead.mkdir(exist_ok=True)
            path = dead / f"{seq:016d}-{offset:012d}-{zlib.crc32(record):08x}.rec"
            path.write_bytes(record)
            log.error("spool record set aside in %s: %s", path.name, type(exc).__name__)

    def _save(self, seq: int, offset: int) -> None:
        tmp = self.directory / "checkpoint.tmp"
        with open(tmp, "w") as f:
            f.write(f"{seq} {offset}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.directory / "checkpoint")
        _fsync_dir(self.directory)
        self._checkpoint = (seq, offset)

    def _delete(self, seq: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            _segment_path(self.directory, seq).unlink()
