"""Key rotation over a whole bucket: re-wrap every object's data key under the current KEK, bodies untouched.

Owns: walking the bucket in key order (one HEAD per object), deciding per object, and the counts.

| object (its metadata) | rotate | scan (apply=False) |
|---|---|---|
| sealed under the current KEK | nothing (`already_current`) | counted under it |
| sealed under another KEK of the keyring | re-wrapped (`rewrapped`), see below | `stale` |
| sealed under a KEK not in the keyring | left (`failed`, `unknown_kek`) | `stale` |
| plaintext this hub stored before encryption | encrypted in place (`sealed_plaintext`) | `plaintext` |
| anything else in the bucket (not the hub's) | left as it is (`foreign`) | `plaintext` |

Re-wrapping is a server-side copy of the object onto itself that replaces only its metadata, on condition
that it is still the object inspected (its ETag): a concurrent put of the same bytes wins and the object is
inspected again.  A plaintext object is the hub's when its bytes hash to its own key (keyed digest); it is
read once, sealed and put back under the same key.
Idempotent (a second run re-wraps nothing) and resumable: keys are taken in order, in batches, and
`last_key` is the last key of the last finished batch (`--start-after` goes on from there).  A KEK other
than the current one that no object uses after a full run is `retirable`.
Does not: change the key file (storage.keyring does), or read a sealed object's body.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from hub.errors import HubError, NotFound
from storage.objects import MinioBlobStore, ObjectState

log = logging.getLogger(__name__)

BATCH = 256


@dataclass
class RotationReport:
    """What a rotation (or a scan) found and did."""

    current: str
    applied: bool
    complete: bool = True  # the whole bucket was walked (not resumed part-way)
    scanned: int = 0
    already_current: int = 0
    rewrapped: int = 0
    stale: int = 0  # scan only: sealed under another KEK than the current one
    sealed_plaintext: int = 0
    plaintext: int = 0
    foreign: int = 0
    vanished: int = 0
    failed: int = 0
    unknown_kek: Counter[str] = field(default_factory=Counter)
    by_kek: Counter[str] = field(default_factory=Counter)
    last_key: str | None = None
    retirable: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"current": self.current, "applied": self.applied, "complete": self.complete,
                "scanned": self.scanned, "already_current": self.already_current, "rewrapped": self.rewrapped,
                "stale": self.stale,
                "sealed_plaintext": self.sealed_plaintext, "plaintext": self.plaintext, "foreign": self.foreign,
                "vanished": self.vanished, "failed": self.failed, "unknown_kek": dict(self.unknown_kek),
                "by_kek": dict(self.by_kek), "last_key": self.last_key, "retirable": self.retirable}


def rotate(store: MinioBlobStore, *, apply: bool = True, workers: int = 8, start_after: str | None = None,
           on_batch: Callable[[RotationReport], None] | None = None) -> RotationReport:
    """Rotate (apply=True) or only count (apply=False) every object after `start_after`."""
    keyring = store.keyring
    if keyring is None:
        raise ValueError("rotation needs a store with a keyring")
    keyring.reload()
    current = keyring.current().id
    report = RotationReport(current=current, applied=apply, complete=start_after is None)
    keys = store.keys(start_after=start_after)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for batch in _batches(keys):
            for outcome, kek_id in pool.map(lambda key: _one(store, key, current, apply), batch):
                _count(report, outcome, kek_id)
            report.last_key = batch[-1]
            if on_batch is not None:
                on_batch(report)
    if report.complete:
        report.retirable = [i for i in keyring.ids() if i != current and report.by_kek.get(i, 0) == 0]
    return report


def _batches(keys: Iterator[str]) -> Iterator[list[str]]:
    while batch := list(islice(keys, BATCH)):
        yield batch


def _count(report: RotationReport, outcome: str, kek_id: str | None) -> None:
    report.scanned += 1
    if outcome == "vanished":
        report.vanished += 1
        return
    setattr(report, outcome, getattr(report, outcome) + 1)
    if kek_id is not None:
        report.by_kek[kek_id] += 1
    if outcome == "failed" and kek_id is not None:
        report.unknown_kek[kek_id] += 1


def _one(store: MinioBlobStore, key: str, current: str, apply: bool) -> tuple[str, str | None]:
    """(outcome, the KEK the object is under afterwards) for one object."""
    try:
        for _ in range(3):  # a concurrent put of the same bytes replaced it: look again
            state = store.inspect(key)
            if not state.sealed:
                return _plaintext(store, state, current, apply)
            if state.kek_id == current:
                return "already_current", current
            if not apply:
                return "stale", state.kek_id
            assert store.keyring is not None
            if state.kek_id is None or store.keyring.get(state.kek_id) is None:
                return "failed", state.kek_id
            if store.rewrap(state):
                return "rewrapped", current
        return "failed", None
    except NotFound:
        return "vanished", None
    except HubError as exc:  # one object failing does not stop the run; it is counted, the run can be redone
        log.warning("rotation: an object could not be handled: %s", type(exc).__name__)
        return "failed", None


def _plaintext(store: MinioBlobStore, state: ObjectState, current: str, apply: bool) -> tuple[str, str | None]:
    if not apply:
        return "plaintext", None
    if store.seal_plaintext(state):
        return "sealed_plaintext", current
    return "foreign", None
