"""The insurer drop folder with stand-in callables and an injected clock: complete files only, done/rejected
with their JSON beside them, a hub outage retried from processing/."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.inbound.insurer_drop import InsurerDrop
from hub.errors import IndexUnavailable, Refused

FINDING: dict[str, object] = {"rule": "remb.batch", "location": "line 3", "message_en": "refused",
                              "message_fr": "refusé"}


class Calls:
    def __init__(self) -> None:
        self.batches: list[bytes] = []
        self.documents: list[bytes] = []
        self.down = False

    def batch(self, raw: bytes) -> Mapping[str, Any]:
        if self.down:
            raise IndexUnavailable("down")
        if raw.startswith(b"BAD"):
            raise Refused(FINDING)
        self.batches.append(raw)
        return {"acts": 1, "new": 1, "known": 0}

    def document(self, raw: bytes) -> Mapping[str, Any]:
        self.documents.append(raw)
        return {"document_id": "1.2.3^x", "new": True}


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def drop(tmp_path: Path, calls: Calls, clock: Clock) -> InsurerDrop:
    return InsurerDrop(tmp_path / "insurer", accept_batch=calls.batch, accept_document=calls.document,
                       max_bytes=1000, settle_s=5.0, clock=clock)


def write_in_place(path: Path, data: bytes) -> None:
    """A producer writing straight into incoming/ (content and inode change together)."""
    with open(path, "wb") as fh:
        fh.write(data)


def test_a_file_still_being_written_is_not_taken_until_it_stops_growing(drop: InsurerDrop, calls: Calls,
                                                                        clock: Clock) -> None:
    target = drop.incoming / "acts.txt"
    write_in_place(target, b"MESHUB-REMB|1|B|CNAM\n")
    stat = target.stat()
    if stat.st_ctime_ns != stat.st_mtime_ns:
        pytest.skip("this file system does not update ctime with mtime")
    assert drop.scan_once() == {"done": 0, "rejected": 0, "retry": 0}
    clock.now = datetime.fromtimestamp(stat.st_mtime, UTC) + timedelta(seconds=4.9)
    assert drop.scan_once()["done"] == 0 and target.exists()
    clock.now += timedelta(seconds=0.2)
    assert drop.scan_once()["done"] == 1
    assert calls.batches == [b"MESHUB-REMB|1|B|CNAM\n"]
    assert (drop.done / "acts.txt").exists()
    assert json.loads((drop.done / "acts.txt.result.json").read_text()) == {"acts": 1, "new": 1, "known": 0}


def test_a_file_renamed_in_is_taken_at_once(drop: InsurerDrop, calls: Calls, tmp_path: Path) -> None:
    staged = drop.incoming / "history.xml.part"
    write_in_place(staged, b"<ClinicalDocument/>")
    assert drop.scan_once()["done"] == 0  # .part is never taken
    # Its last write was 10 ms before the rename (no sleep: back-date mtime); the clock is not moved, so only
    # the "inode changed after the content" rule can let it through, not the 5 s settle time.
    os.utime(staged, ns=(staged.stat().st_atime_ns, staged.stat().st_mtime_ns - 10_000_000))
    os.rename(staged, drop.incoming / "history.xml")
    assert drop.scan_once()["done"] == 1
    assert calls.documents == [b"<ClinicalDocument/>"]


def test_a_refused_file_goes_to_rejected_with_its_errors(drop: InsurerDrop, clock: Clock) -> None:
    write_in_place(drop.incoming / "bad.csv", b"BAD")
    write_in_place(drop.incoming / "notes.pdf", b"%PDF")  # not ours: left alone
    clock.now += timedelta(minutes=1)
    assert drop.scan_once() == {"done": 0, "rejected": 1, "retry": 0}
    assert (drop.rejected / "bad.csv").read_bytes() == b"BAD"
    assert json.loads((drop.rejected / "bad.csv.errors.json").read_text()) == {"errors": [FINDING]}
    assert (drop.incoming / "notes.pdf").exists()
    write_in_place(drop.incoming / "bad.csv", b"BAD again")  # the same name once more keeps both
    clock.now += timedelta(minutes=1)
    drop.scan_once()
    assert (drop.rejected / "bad.csv.1").read_bytes() == b"BAD again"
    assert (drop.rejected / "bad.csv.1.errors.json").exists()


def test_an_oversized_file_is_rejected_unread(drop: InsurerDrop, calls: Calls, clock: Clock) -> None:
    write_in_place(drop.incoming / "big.txt", b"x" * 1001)
    clock.now += timedelta(minutes=1)
    assert drop.scan_once()["rejected"] == 1 and calls.batches == []
    errors = json.loads((drop.rejected / "big.txt.errors.json").read_text())["errors"]
    assert errors[0]["rule"] == "file.too-large"


def test_a_hub_outage_keeps_the_file_claimed_and_it_is_handed_in_later(drop: InsurerDrop, calls: Calls,
                                                                       clock: Clock) -> None:
    write_in_place(drop.incoming / "acts.txt", b"MESHUB")
    clock.now += timedelta(minutes=1)
    calls.down = True
    assert drop.scan_once()["retry"] == 1
    assert (drop.processing / "acts.txt").exists() and not (drop.incoming / "acts.txt").exists()
    calls.down = False
    assert drop.scan_once()["done"] == 1 and calls.batches == [b"MESHUB"]
