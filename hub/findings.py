"""Findings: what the validation core says about a document.

Owns: Severity, Finding (a rule id, an XPath, a bilingual message, an optional DMP/PFI error code).
Does not: decide what to do with a finding (routing does), log anything, or carry health data:
messages name the rule and the node, never the patient's values.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong (or doubtful) in a document."""

    rule: str  # stable dotted id, e.g. "ins.key"
    location: str  # XPath of the offending node, "/" when none
    message_fr: str  # what is wrong and what to do, in French
    message_en: str  # the same in English
    code: str | None = None  # DMP/PFI error code (902, 903, 904, 905, 207) where one exists
    severity: Severity = Severity.ERROR

    def to_dict(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "location": self.location,
            "message_fr": self.message_fr,
            "message_en": self.message_en,
            "code": self.code,
            "severity": str(self.severity),
        }
