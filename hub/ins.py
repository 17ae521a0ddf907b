"""INS (Identifiant National de Santé) matricule checks.

Owns: the NIR/NIA key arithmetic (DOMAIN.md §3) and the findings for a wrong OID, format or key.
Does not: look a patient up (the caller does, see validation.patient_findings), read files, or put
the matricule itself into any message: messages name the rule and the XPath only.

Rule 1: a matricule is 15 characters: 13 digits (positions 6-7 may be "2A"/"2B", Corsica) + a 2-digit key.
Rule 2: key = 97 - (NIR13 mod 97), reading 2A as 19 and 2B as 18 for the computation.
Rule 3: digits are ASCII 0-9 only (a full-width '１' or Arabic-Indic '١' is an ins.format error).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from hub.findings import Finding

#: ASCII digits only: `\d` and str.isdigit() also accept full-width or Arabic-Indic digits, which int()
#: reads as the same number; such an INS must be an ins.format error, not a lookup of another string.
_MATRICULE = re.compile(r"[0-9]{5}(?:[0-9]{2}|2[AB])[0-9]{8}")
_NIR13 = re.compile(r"[0-9]{5}(?:[0-9]{2}|2[AB])[0-9]{6}")
#: Corsica départements, replaced for the key computation (positions 6-7).
_CORSICA: Mapping[str, str] = {"2A": "19", "2B": "18"}

#: rule -> (DMP/PFI code, message_fr, message_en). Messages never echo the matricule.
_MESSAGES: Mapping[str, tuple[str | None, str, str]] = {
    "ins.oid": (
        "904",
        "L'OID de l'INS n'est pas un OID d'INS accepté (1.2.250.1.213.1.4.8 NIR, .9 NIA, .10 test, "
        ".11 démo) : corrigez @root de l'identifiant patient.",
        "The INS OID is not an accepted INS OID (1.2.250.1.213.1.4.8 NIR, .9 NIA, .10 test, .11 demo): "
        "fix the patient id @root.",
    ),
    "ins.format": (
        "905",
        "Le matricule INS doit compter 15 caractères : 13 chiffres (2A/2B admis en positions 6-7) puis "
        "une clé de 2 chiffres ; corrigez @extension de l'identifiant patient.",
        "The INS matricule must be 15 characters: 13 digits (2A/2B allowed at positions 6-7) then a 2-digit "
        "key; fix the patient id @extension.",
    ),
}


def ins_key(nir13: str) -> int:
    """The 2-digit key of a 13-character NIR/NIA (Corsica 2A -> 19, 2B -> 18). ValueError if malformed."""
    if not _NIR13.fullmatch(nir13):
        raise ValueError("not a 13-character NIR")
    numeric = nir13[:5] + _CORSICA.get(nir13[5:7], nir13[5:7]) + nir13[7:]
    return 97 - int(numeric) % 97


def looks_like_matricule(value: str) -> bool:
    """True when `value` has the 15-character shape of an INS matricule (ASCII digits, 2A/2B), key unchecked."""
    return _MATRICULE.fullmatch(value) is not None


def check_ins(
    matricule: str, oid: str, *, location: str, accepted_oids: frozenset[str]
) -> tuple[Finding, ...]:
    """Findings for one INS (empty when the OID, the format and the key are all right)."""
    if oid not in accepted_oids:
        return (_finding("ins.oid", location),)
    if not _MATRICULE.fullmatch(matricule):
        return (_finding("ins.format", location),)
    expected = ins_key(matricule[:13])
    if int(matricule[13:]) != expected:
        return (_key_finding(expected, location),)
    return ()


def _finding(rule: str, location: str) -> Finding:
    code, message_fr, message_en = _MESSAGES[rule]
    return Finding(rule=rule, location=location, message_fr=message_fr, message_en=message_en, code=code)


def _key_finding(expected: int, location: str) -> Finding:
    return Finding(
        rule="ins.key",
        location=location,
        message_fr=(
            "La clé de l'INS (2 derniers chiffres) ne correspond pas aux 13 premiers chiffres "
            f"(clé calculée : {expected:02d}) ; vérifiez le matricule INS auprès du téléservice INSi."
        ),
        message_en=(
            "The INS key (2 last digits) does not match the 13 first digits "
            f"(computed key: {expected:02d}); check the INS matricule with the INSi teleservice."
        ),
        code="904",
    )

_MATRICULE = re.compile(r"[0-9]{5}(?:[0-9]{2}|2[AB])[0-9]{8}", re.ASCII)
_CORSICA = {"2A": "19", "2B": "18"}


def valid_matricule(text: str) -> bool:
    """A well-formed INS matricule whose key matches its 13 first characters."""
    if not _MATRICULE.fullmatch(text):
        return False
    numeric = text[:5] + _CORSICA.get(text[5:7], text[5:7]) + text[7:13]
    return int(text[13:]) == 97 - int(numeric) % 97
