"""E-prescription number and its QR code: read from the ANS example, drawn, and decoded back by zbar."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from pipelines.mail.core.prescription import prescription_number, qr_png
from tests.services import FIXTURES_CDA, missing

EP = FIXTURES_CDA / "eP-MED-DM_2024.01_PosoStruct.xml"


def test_the_unique_prescription_number_is_read_from_the_ans_example() -> None:
    assert prescription_number(EP.read_bytes()) == "01S2TBPZ2JCNZZYGHZ"


def test_a_document_that_is_no_e_prescription_has_no_number() -> None:
    assert prescription_number((FIXTURES_CDA / "BIO-CR-BIO_2024.01_TSH_1.xml").read_bytes()) is None
    assert prescription_number(b"<not xml") is None
    assert prescription_number(b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>') is None


def test_the_qr_code_decodes_back_to_the_number(tmp_path: Path) -> None:
    zbarimg = shutil.which("zbarimg")
    if zbarimg is None:
        missing("zbarimg (Debian zbar-tools) is needed to decode the QR code")
    png = tmp_path / "qr.png"
    png.write_bytes(qr_png("01S2TBPZ2JCNZZYGHZ"))
    decoded = subprocess.run([str(zbarimg), "-q", "--raw", str(png)], capture_output=True, text=True, check=True)
    assert decoded.stdout.strip() == "01S2TBPZ2JCNZZYGHZ"
