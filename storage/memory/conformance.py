"""The in-memory adapters seen as their ports: mypy --strict checks each assignment below, so an adapter
whose signatures drift from its Protocol fails the type check (nothing here runs).

Owns: nothing at run time.  Does not: replace the contract tests (tests/contract), which check behaviour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hub.access import RecordControls
    from hub.audit import AuditTrail
    from hub.ports import BlobStore, Index, Mailboxes, Publisher
    from pipelines.insurer.core.history import ReimbursementHolds
    from pipelines.notify.ports import NotificationStore
    from pipelines.record.core.profile import LifecycleStore
    from pipelines.record.core.restitution import BlobEraser, PurgeStore
    from storage.memory.audit import MemoryAuditTrail
    from storage.memory.blobs import MemoryBlobStore
    from storage.memory.bus import MemoryPublisher
    from storage.memory.controls import MemoryRecordControls
    from storage.memory.index import MemoryIndex
    from storage.memory.mailbox import MemoryMailbox
    from storage.memory.notifications import MemoryNotifications
    from storage.memory.profiles import MemoryProfiles
    from storage.memory.purge import MemoryPurge
    from storage.memory.reimbursements import MemoryReimbursements

    def _as_ports(index: MemoryIndex, blobs: MemoryBlobStore, bus: MemoryPublisher) -> None:
        store: BlobStore = blobs
        eraser: BlobEraser = blobs
        publisher: Publisher = bus
        ports: Index = index
        trail: AuditTrail = MemoryAuditTrail.beside(index)
        controls: RecordControls = MemoryRecordControls.beside(index)
        mailboxes: Mailboxes = MemoryMailbox.beside(index)
        notices: NotificationStore = MemoryNotifications.beside(index)
        profiles: LifecycleStore = MemoryProfiles.beside(index)
        holds: ReimbursementHolds = MemoryReimbursements.beside(index)
        purge: PurgeStore = MemoryPurge.beside(index)
        del store, eraser, publisher, ports, trail, controls, mailboxes, notices, profiles, holds, purge
