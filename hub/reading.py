"""What of a patient's record is read (pure vocabulary), for the read table (pipelines.record.core.read_rules).

Owns: Reading, the parts of a profile a caller reads through the API: its documents (list, metadata,
content, and a document sent on by the patient), its mailbox, its notifications, the restitution
export, the audit trail, the profile's state and the delivery states of its mail.
Does not: decide who may read what (pipelines.record.core.read_rules) or read anything (pipelines.record.access).
"""

from __future__ import annotations

from enum import StrEnum


class Reading(StrEnum):
    """One part of a profile, as the read table names it."""

    DOCUMENTS = "documents"          # list, metadata, content, send-document
    MESSAGES = "messages"            # the MSSanté mailbox: list, metadata, raw, reply
    NOTIFICATIONS = "notifications"  # the notification centre, its stream, preferences, devices
    EXPORT = "export"                # the restitution ZIP
    AUDIT = "audit"                  # the audit trail (the legal archive)
    PROFILE = "profile"              # the profile's state (created, active, opposed, closed...)
    DELIVERIES = "deliveries"        # delivery states of the mail sent to the profile's mailbox
