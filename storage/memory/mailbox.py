"""hub.ports.Mailboxes in memory: mailbox copies, delivery states, filings and report claims.

Owns: MemoryMailbox, with storage.sql.mailbox's rules: a message is stored once per (submission,
mailbox) copy; messages are listed newest first (then by id); read_at is set once; correspondents are
read in time order (a later message without FIN reopens an exchange); a delivery is one row per
(submission, recipient) updated in place; a filing is recorded once (the first one stays whole) and its
report is claimed by one submission only.  Does not: parse mail or decide who may write (pipelines.mail).
"""

from __future__ import annotations

from dataclasses import replace

from hub.records import DeliveryRecord, MailFiling, MessageRecord
from storage.memory.base import now
from storage.memory.index import MemoryIndex


class MemoryMailbox:
    """Mailboxes on dicts, sharing the index's lock and outage switch."""

    def __init__(self, index: MemoryIndex) -> None:
        self.state = index.state
        self.message_rows: dict[str, MessageRecord] = {}
        self.copy_rows: set[tuple[str, str]] = set()  # (submission id, mailbox)
        self.delivery_rows: dict[tuple[str, str], DeliveryRecord] = {}
        self.filing_rows: dict[str, MailFiling] = {}
        self.filed_rows: dict[str, str] = {}  # document submission id -> filing (message id)
        self.claim_rows: dict[str, str] = {}  # filing -> the submission that sends its report

    @classmethod
    def beside(cls, index: MemoryIndex) -> MemoryMailbox:
        return index.beside(cls, cls)

    def store_message(self, message: MessageRecord) -> bool:
        with self.state.lock:
            self.state.check()
            copy = (message.submission_id, message.mailbox)
            if copy in self.copy_rows or message.message_id in self.message_rows:
                return False
            self.copy_rows.add(copy)
            self.message_rows[message.message_id] = message
            return True

    def messages(self, mailbox: str, *, limit: int = 200, offset: int = 0) -> list[MessageRecord]:
        with self.state.lock:
            self.state.check()
            found = sorted((m for m in self.message_rows.values() if m.mailbox == mailbox), key=lambda m: m.message_id)
        found.sort(key=lambda m: m.received_at, reverse=True)
        return found[offset:offset + limit]

    def message(self, message_id: str) -> MessageRecord | None:
        with self.state.lock:
            self.state.check()
            return self.message_rows.get(message_id)

    def mark_read(self, message_id: str) -> MessageRecord | None:
        with self.state.lock:
            self.state.check()
            found = self.message_rows.get(message_id)
            if found is not None and found.read_at is None:
                found = self.message_rows[message_id] = replace(found, read_at=now())
            return found

    def correspondents(self, mailbox: str) -> tuple[set[str], set[str]]:
        with self.state.lock:
            self.state.check()
            received = sorted((m for m in self.message_rows.values() if m.mailbox == mailbox and m.direction == "in"),
                              key=lambda m: m.received_at)
        wrote: set[str] = set()
        closed: set[str] = set()
        for message in received:
            address = message.correspondent.lower()
            wrote.add(address)
            (closed.add if message.closed else closed.discard)(address)
        return wrote, closed

    def record_delivery(self, delivery: DeliveryRecord) -> None:
        with self.state.lock:
            self.state.check()
            self.delivery_rows[(delivery.submission_id, delivery.recipient)] = replace(delivery, updated_at=now())

    def deliveries(self, submission_id: str) -> list[DeliveryRecord]:
        with self.state.lock:
            self.state.check()
            found = [d for (s, _), d in self.delivery_rows.items() if s == submission_id]
        return sorted(found, key=lambda d: d.recipient)

    def deliveries_to(self, recipient: str, *, limit: int = 200) -> list[DeliveryRecord]:
        with self.state.lock:
            self.state.check()
            found = [d for d in self.delivery_rows.values() if d.recipient.lower() == recipient.lower()]
        found.sort(key=lambda d: d.updated_at or now(), reverse=True)
        return found[:limit]

    def record_filing(self, filing: MailFiling) -> None:
        with self.state.lock:
            self.state.check()
            if filing.message_id in self.filing_rows:
                return
            documents = tuple(d for d in filing.documents if d.submission_id not in self.filed_rows)
            self.filing_rows[filing.message_id] = replace(filing, documents=documents)
            self.filed_rows.update((d.submission_id, filing.message_id) for d in documents)

    def filing(self, message_id: str) -> MailFiling | None:
        with self.state.lock:
            self.state.check()
            return self.filing_rows.get(message_id)

    def filing_of(self, document_submission_id: str) -> MailFiling | None:
        with self.state.lock:
            self.state.check()
            message_id = self.filed_rows.get(document_submission_id)
            return None if message_id is None else self.filing_rows.get(message_id)

    def claim_report(self, message_id: str, *, by: str) -> bool:
        with self.state.lock:
            self.state.check()
            if message_id not in self.filing_rows:
                return False
            return self.claim_rows.setdefault(message_id, by) == by
