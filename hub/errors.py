"""Errors of the hub, and what each caller does with them.

* HubError
  + PermanentError          retrying cannot help -> reject / dead-letter, tell a human
    - EnvelopeDecodeError   a bus message that is not an envelope we understand
    - IntegrityError        stored bytes no longer match their SHA-256
    - NotFound              an object or record that should exist does not
    - ConfigError           configuration is missing or wrong (fails at start)
    - RosterRejected        a roster file with bad lines (nothing imported)
    - Refused               a request the rules forbid (a patient writing first to a professional...)
    - ChannelRefused        a notification channel refused for good (5xx mail, invalid number) -> fallback
  + TransientError          something outside was down -> 503 / 451 to the client, or retry later
    - BusUnavailable        the message broker did not confirm a publish
    - StoreUnavailable      the S3 object store did not answer or refused
    - IndexUnavailable      the index database did not answer
    - SpoolUnavailable      the SMTP gateway's local spool could not be written (disk full, I/O error)
    - SpoolFull             the spool holds more undrained mail than its limit (the drain is behind)
    - ChannelUnavailable    a notification channel (smart host, SMS provider, push endpoint) is down

A document that fails validation is not an error: it is a report with findings,
and the pipeline turns it into a `rejected` submission.  Third-party errors are
translated into this tree at the adapter boundary (storage/, hub/bus/), so that
connectors and pipelines only ever catch these classes.
"""

from __future__ import annotations


class HubError(Exception):
    """Root of every error the hub raises on purpose."""


class PermanentError(HubError):
    """Retrying the same operation cannot succeed."""


class TransientError(HubError):
    """A dependency is unavailable; the same operation may succeed later."""


class EnvelopeDecodeError(PermanentError):
    """A bus message could not be decoded into an Envelope."""


class IntegrityError(PermanentError):
    """Bytes read back from storage do not match the SHA-256 recorded when stored."""


class NotFound(PermanentError):
    """The requested object or record does not exist."""


class ConfigError(PermanentError):
    """Configuration is missing or invalid; raised at start with the key's name."""


class BusUnavailable(TransientError):
    """The broker refused, dropped or did not confirm a message."""


class StoreUnavailable(TransientError):
    """The object store did not answer or answered with a server error."""


class IndexUnavailable(TransientError):
    """The index database did not answer."""


class SpoolUnavailable(TransientError):
    """The local mail spool could not write or fsync a record: nothing was accepted."""


class SpoolFull(TransientError):
    """The spool's undrained backlog is over its limit: new mail must wait (SMTP 452 4.3.1)."""


class RosterRejected(PermanentError):
    """A roster file had invalid lines; nothing was imported.  `problems` lists them by line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} problem(s) in roster")
        self.problems = problems


class Refused(PermanentError):
    """The rules forbid this request; `finding` says which rule, where, and what to do (fr/en)."""

    def __init__(self, finding: dict[str, object]) -> None:
        super().__init__(str(finding.get("rule", "refused")))
        self.finding = finding


class ChannelUnavailable(TransientError):
    """A notification channel did not answer or asked to try later (4xx mail, HTTP 429/5xx, timeout)."""


class ChannelRefused(PermanentError):
    """A notification channel refused this notice for good; `reason` is safe to log (no health data)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
