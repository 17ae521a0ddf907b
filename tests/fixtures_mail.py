"""pytest plugin: mail services for integration tests (Dovecot on loopback).  Filled in by the mail work."""
