"""In-memory adapters: the same ports as storage/sql and storage/objects, kept in dicts behind one lock
per index.

Owns: test and local-run stand-ins that behave like the SQL and S3 adapters (same idempotency, ordering
and errors), checked by the same contract tests (tests/contract).  One module per port family:
  blobs          hub.ports.BlobStore (MemoryBlobStore)
  bus            hub.ports.Publisher (MemoryPublisher)
  index          hub.ports.Index (MemoryIndex: submissions, documents, the patient registry)
  audit          hub.audit.AuditTrail (MemoryAuditTrail)
  controls       hub.access.RecordControls (MemoryRecordControls)
  mailbox        hub.ports.Mailboxes (MemoryMailbox)
  notifications  pipelines.notify.ports.NotificationStore (MemoryNotifications; its per-patient
                 half in notify_settings)
  profiles       pipelines.record.core.profile.LifecycleStore (MemoryProfiles)
  reimbursements pipelines.insurer.core.history.ReimbursementHolds (MemoryReimbursements)
  purge          pipelines.record.core.restitution.PurgeStore (MemoryPurge, over the stores above)
  tokens         hub.ports.IssuedTokens (MemoryTokens: the bearer tokens the hub issues)
Stores that share the index's database in SQL (`SqlX.beside(index)`) share a MemoryIndex here
(`MemoryX.beside(index)`, one instance per index), so cross-table rules (a profile moving the registry
status) hold too.  Does not: persist anything, or decide anything a service decides.
"""

from __future__ import annotations
