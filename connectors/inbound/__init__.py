"""Inbound connectors: HTTP API and file-drop folder (SMTP and IMAP come later)."""
