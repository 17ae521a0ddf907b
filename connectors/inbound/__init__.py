"""Inbound connectors: HTTP API, file-drop folder, SMTP gateway (aiosmtpd) and IMAP intake (aioimaplib)."""
