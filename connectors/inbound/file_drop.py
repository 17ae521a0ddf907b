"""File-drop folder: producers drop CDA files in `incoming/`; each ends in `done/` or `failed/`.

Owns: claiming a file by atomic rename (incoming/ -> processing/), handing it to
intake, remembering the submission beside it, and moving it once final: to done/
(indexed or duplicate) or to failed/ with `<name>.reason.json` beside it.
Rule: a file is claimed before it is read, and its submission id is written
(atomically) before anything else, so a restart resumes without losing or
re-submitting it.  Files whose name starts with '.' or ends in '.part' are
ignored, so producers can write under a temporary name and rename when done.
Rule: the drop writes as one credential (`[filedrop] producer`, named on every submission) and each
file passes the same write gate as the HTTP door before anything is stored: a drop whose identity is
not a producer fails every file (`write.role` in its reason.json).
Does not: parse documents (the gate reads the header, the pipeline validates).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hub.credentials import Credential
from hub.envelope import Source
from hub.errors import HubError, TransientError
from hub.intake import Intake
from hub.ports import Index
from hub.records import SubmissionRecord, SubmissionStatus
from hub.writes import FILEDROP_DOOR, ProducersOnly, WriteGate

log = logging.getLogger(__name__)
MARKER = ".submission"


@dataclass(frozen=True, slots=True)
class DropFolders:
    root: Path

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    @property
    def processing(self) -> Path:
        return self.root / "processing"

    @property
    def done(self) -> Path:
        return self.root / "done"

    @property
    def failed(self) -> Path:
        return self.root / "failed"

    def create(self) -> None:
        for folder in (self.incoming, self.processing, self.done, self.failed):
            folder.mkdir(parents=True, exist_ok=True)


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so that a reader sees all of it or nothing (fsynced, then renamed)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def poll_until(stop: threading.Event, scan: Callable[[], object], poll_s: float, what: str) -> None:
    """Run `scan` every `poll_s` until `stop`; a failed pass is logged and the next one retries."""
    while not stop.is_set():
        try:
            scan()
        except Exception as exc:  # a bad pass must not end the loop
            # Class name only: file names (in OSError texts) may carry a patient's name.
            log.error("%s pass failed: %s", what, type(exc).__name__)
        stop.wait(poll_s)


class FileDrop:
    """Polls the drop folder; one instance per folder (claims are safe across processes)."""

    def __init__(self, folders: DropFolders, *, intake: Intake, index: Index, writer: Credential,
                 max_bytes: int, poll_s: float = 0.5, gate: WriteGate | None = None) -> None:
        self._folders = folders
        self._intake = intake
        self._index = index
        self._writer = writer
        self._gate: WriteGate = gate if gate is not None else ProducersOnly()
        self._max_bytes = max_bytes
        self._poll_s = poll_s
        folders.create()

    def run(self, stop: threading.Event) -> None:
        poll_until(stop, self.scan_once, self._poll_s, "file-drop")

    def scan_once(self) -> None:
        """Claim and submit new files, then settle the ones whose submission is final."""
        for path in sorted(self._folders.incoming.iterdir()):
            if path.is_file() and not path.name.startswith(".") and not path.name.endswith(".part"):
                self._claim_and_submit(path)
        for path in sorted(self._folders.processing.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                self._settle(path)

    def _claim_and_submit(self, path: Path) -> None:
        claimed = self._folders.processing / path.name
        try:
            os.rename(path, claimed)  # atomic: only one poller wins the file
        except FileNotFoundError:
            return
        with contextlib.suppress(OSError):  # the producer's mode (often 0644): ours is private (patient data)
            os.chmod(claimed, 0o600)
        self._submit(claimed)

    def _marker(self, claimed: Path) -> Path:
        return claimed.with_name(f".{claimed.name}{MARKER}")

    def _submit(self, claimed: Path) -> str | None:
        if claimed.stat().st_size > self._max_bytes:
            self._fail(claimed, {"rule": "file.too-large", "message_en": f"file exceeds {self._max_bytes} bytes",
                                 "message_fr": f"le fichier dépasse {self._max_bytes} octets"})
            return None
        raw = claimed.read_bytes()
        try:
            refusal = self._gate.admit(self._writer, raw, door=FILEDROP_DOOR)
            if refusal is not None:
                self._fail(claimed, refusal.finding("document"))
                return None
            # The file name stays here (it may name the patient): the envelope only says "filedrop".
            record = self._intake.accept(raw, Source(kind="filedrop", producer=self._writer.name))
        except TransientError as exc:
            log.warning("file-drop: hub unavailable (%s), will retry", type(exc).__name__)
            return None
        write_atomic(self._marker(claimed), record.submission_id)
        return record.submission_id

    def _settle(self, claimed: Path) -> None:
        marker = self._marker(claimed)
        submission_id = marker.read_text().strip() if marker.exists() else self._submit(claimed)
        if submission_id is None:
            return
        try:
            record = self._index.submission(submission_id)
        except HubError:
            return
        if record is not None and record.final:
            self._finish(claimed, record)

    def _finish(self, claimed: Path, record: SubmissionRecord) -> None:
        if record.status is SubmissionStatus.REJECTED:
            self._fail(claimed, {"submission": record.submission_id, "status": str(record.status),
                                 "findings": list(record.findings)})
        else:
            write_atomic(self._folders.done / f"{claimed.name}.result.json", json.dumps(record.to_dict(),
                                                                                         indent=2))
            os.replace(claimed, self._folders.done / claimed.name)
        self._marker(claimed).unlink(missing_ok=True)
        log.info("file-drop: submission=%s %s", record.submission_id, record.status)

    def _fail(self, claimed: Path, reason: dict[str, object]) -> None:
        write_atomic(self._folders.failed / f"{claimed.name}.reason.json",
                      json.dumps(reason, indent=2, ensure_ascii=False))
        os.replace(claimed, self._folders.failed / claimed.name)
        self._marker(claimed).unlink(missing_ok=True)
