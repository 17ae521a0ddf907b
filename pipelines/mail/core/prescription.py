"""E-prescriptions: the unique prescription number a CDA carries, and the QR code that shows it (pure).

Owns: reading the ePrescription id (documentationOf/serviceEvent/id with the Cnam root
1.2.250.1.215.500.1.1, as in the ANS example eP-MED-DM) and drawing it as a PNG QR code with
its number in clear beside it in the mail text (the paper ordonnance does the same).
Does not: decide who may receive a prescription (pipelines.mail.core.mss) or compose mail.
"""

from __future__ import annotations

import io

import qrcode
from qrcode.image.pure import PyPNGImage

from pipelines.cda.header import NS
from pipelines.cda.validation import parse_untrusted

EPRESCRIPTION_ROOT = "1.2.250.1.215.500.1.1"
_PATH = "h:documentationOf/h:serviceEvent/h:id"


def prescription_number(cda: bytes) -> str | None:
    """The unique prescription number of an e-prescription CDA, or None (not one, or unreadable)."""
    root, _finding = parse_untrusted(cda)
    if root is None:
        return None
    for ident in root.iterfind(_PATH, namespaces=NS):
        extension = (ident.get("extension") or "").strip()
        if ident.get("root") == EPRESCRIPTION_ROOT and extension:
            return extension
    return None


def qr_png(text: str) -> bytes:
    """A PNG QR code carrying `text` (error correction M, 4-module quiet zone)."""
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=8, border=4,
                         image_factory=PyPNGImage)
    code.add_data(text)
    code.make(fit=True)
    out = io.BytesIO()
    code.make_image().save(out)
    return out.getvalue()
