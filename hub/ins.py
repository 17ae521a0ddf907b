"""The INS matricule's shape and key (pure), for the edges that take an INS without a CDA around it.

Owns: `valid_matricule`, the same rules as intake (pipelines.core.ins, Rules 1 and 2): 15 ASCII
characters, 13 digits where positions 6-7 may be "2A"/"2B" (Corsica), then the 2-digit key
97 - (NIR13 mod 97) computed with 2A read as 19 and 2B as 18.  tests/unit/test_ins_edges.py checks that
both agree.  Connectors may import it (they may not import pipelines).
Does not: check an OID (the edges that use it take no OID) or look the INS up.
"""

from __future__ import annotations

import re

_MATRICULE = re.compile(r"[0-9]{5}(?:[0-9]{2}|2[AB])[0-9]{8}", re.ASCII)
_CORSICA = {"2A": "19", "2B": "18"}


def valid_matricule(text: str) -> bool:
    """A well-formed INS matricule whose key matches its 13 first characters."""
    if not _MATRICULE.fullmatch(text):
        return False
    numeric = text[:5] + _CORSICA.get(text[5:7], text[5:7]) + text[7:13]
    return int(text[13:]) == 97 - int(numeric) % 97
