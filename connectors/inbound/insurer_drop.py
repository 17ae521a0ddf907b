"""Insurer drop folder: the insurer puts reimbursement batches (`*.txt`, `*.csv`) and CNAM-HR CDA documents
(`*.xml`) in `<dir>/incoming/`; each ends in `done/` (with `<name>.result.json`) or `failed/` (with
`<name>.errors.json`: the rule, where, and what to do; never a value of the file).

Owns: noticing complete files, claiming them by atomic rename (incoming/ -> processing/: the folders of
the document drop, connectors.inbound.file_drop.DropFolders), handing their bytes to the injected
callables (accept_batch, accept_document: pipelines.insurer.reimbursements.InsurerBatches in the composition root)
and moving them once answered.
Rule 1: a half-written file is never read.  A file is taken only once it stopped growing (unchanged for
`settle_s`, by the injected clock) or when it was renamed in after its last write (its inode changed after
its content did); names starting with '.' or ending in '.part' / '.tmp' are never taken.
Rule 2: a claimed file is answered at least once: a restart, or a hub that was down (TransientError), finds it
in processing/ and hands it in again, which is harmless (acts and documents are held once).
Does not: parse anything (the callables do) or log file names (they may name a patient).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.inbound.file_drop import DropFolders, poll_until, write_atomic
from hub.errors import PermanentError, Refused, TransientError

log = logging.getLogger(__name__)
BATCH_SUFFIXES = frozenset({".txt", ".csv"})
DOCUMENT_SUFFIXES = frozenset({".xml"})
Accept = Callable[[bytes], Mapping[str, Any]]


def _free_name(folder: Path, name: str) -> Path:
    """`folder/name`, or `folder/name.1`, `.2`... when a file of that name is already there (a re-delivery)."""
    candidate, n = folder / name, 0
    while candidate.exists() or candidate.with_name(f"{candidate.name}.errors.json").exists():
        n += 1
        candidate = folder / f"{name}.{n}"
    return candidate


class InsurerDrop:
    """Polls `<root>/incoming`; one instance per folder (claims are atomic renames, safe across processes)."""

    def __init__(self, root: Path, *, accept_batch: Accept, accept_document: Accept, max_bytes: int,
                 settle_s: float = 5.0, poll_s: float = 2.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.root = root
        self.folders = DropFolders(root)
        self._accept = {**dict.fromkeys(BATCH_SUFFIXES, accept_batch),
                        **dict.fromkeys(DOCUMENT_SUFFIXES, accept_document)}
        self._max_bytes = max_bytes
        self._settle_s = settle_s
        self._poll_s = poll_s
        self._clock = clock
        self.folders.create()
        self.incoming, self.processing = self.folders.incoming, self.folders.processing
        self.done, self.rejected = self.folders.done, self.folders.failed

    def run(self, stop: threading.Event) -> None:
        """Scan every `poll_s` until `stop` is set; a failed pass is logged and the next one retries."""
        poll_until(stop, self.scan_once, self._poll_s, "insurer drop")

    def scan_once(self) -> dict[str, int]:
        """Answer what processing/ still holds, then claim and answer the complete files of incoming/."""
        counts = {"done": 0, "rejected": 0, "retry": 0}
        for path in sorted(self.processing.iterdir()):
            if self._ours(path):
                counts[self._handle(path)] += 1
        for path in sorted(self.incoming.iterdir()):
            if self._ours(path) and self._complete(path) and (claimed := self._claim(path)) is not None:
                counts[self._handle(claimed)] += 1
        return counts

    def _ours(self, path: Path) -> bool:
        """A file of a kind this folder takes, not hidden and not still being written under a temporary name."""
        name = path.name
        return (path.is_file() and not name.startswith(".") and not name.endswith((".part", ".tmp"))
                and path.suffix.lower() in self._accept)

    def _complete(self, path: Path) -> bool:
        """Stopped growing for settle_s, or renamed in after its last write."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            return False
        if stat.st_ctime_ns > stat.st_mtime_ns:
            return True
        return self._clock().timestamp() - stat.st_mtime >= self._settle_s

    def _claim(self, path: Path) -> Path | None:
        """Move the file into processing/; None when another poller took it first."""
        claimed = self.processing / path.name
        try:
            os.rename(path, claimed)  # atomic: one poller wins the file
        except FileNotFoundError:
            return None
        with contextlib.suppress(OSError):  # the insurer's mode (often 0644): ours is private (patient data)
            os.chmod(claimed, 0o600)
        return claimed

    def _handle(self, claimed: Path) -> str:
        """Hand the file in; 'done', 'rejected' or 'retry' (the hub is down: it stays in processing/)."""
        if claimed.stat().st_size > self._max_bytes:
            return self._reject(claimed, {"rule": "file.too-large", "location": "/",
                                          "message_en": f"the file is over {self._max_bytes} bytes",
                                          "message_fr": f"le fichier dépasse {self._max_bytes} octets"})
        accept = self._accept[claimed.suffix.lower()]
        try:
            result = accept(claimed.read_bytes())
        except TransientError as exc:
            log.warning("insurer drop: hub unavailable (%s), will retry", type(exc).__name__)
            return "retry"
        except Refused as exc:
            return self._reject(claimed, dict(exc.finding))
        except PermanentError as exc:
            return self._reject(claimed, {"rule": "hub.refused", "location": "/", "message_en": type(exc).__name__,
                                          "message_fr": type(exc).__name__})
        target = _free_name(self.done, claimed.name)
        write_atomic(target.with_name(f"{target.name}.result.json"), json.dumps(dict(result), indent=2))
        os.replace(claimed, target)
        log.info("insurer drop: file accepted")
        return "done"

    def _reject(self, claimed: Path, finding: dict[str, Any]) -> str:
        """Move the file to failed/ with `<name>.errors.json` beside it."""
        target = _free_name(self.rejected, claimed.name)
        write_atomic(target.with_name(f"{target.name}.errors.json"),
                      json.dumps({"errors": [finding]}, indent=2, ensure_ascii=False))
        os.replace(claimed, target)
        log.info("insurer drop: file rejected (%s)", finding.get("rule"))
        return "rejected"
