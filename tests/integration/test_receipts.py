"""The opposition receipt read back with real tools: pdftotext and pdfinfo (poppler-utils) for the text and
the page count, pdftoppm + zbarimg (zbar-tools) for the QR code."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.outbound.receipts import OppositionReceipts, PdfReceiptPrinter, french_datetime
from hub.errors import NotFound
from hub.records import PatientRecord, PatientStatus
from pipelines.record.core.restitution import receipt_reference
from tests.builders import TEST_INS, TEST_OID
from tests.services import missing

pytestmark = pytest.mark.integration
SECRET = b"receipt-test-secret"
WINTER = datetime(2026, 12, 2, 12, 5, tzinfo=UTC)      # 13:05 in Paris (UTC+1)
SUMMER_NIGHT = datetime(2026, 6, 30, 22, 30, tzinfo=UTC)  # 00:30 on 1 July in Paris (UTC+2)


@dataclass(frozen=True)
class Opposed:
    opposed_at: datetime | None


@pytest.fixture(autouse=True)
def tools() -> None:
    for tool in ("pdftotext", "pdfinfo", "pdftoppm", "zbarimg"):
        if shutil.which(tool) is None:
            missing(f"{tool} is needed to read receipts back (poppler-utils, zbar-tools)")


def person(**changes: str) -> PatientRecord:
    values = {"birth_name": "TEST", "given_names": "Jeanne Éloïse", "birth_date": "1979-03-01", **changes}
    return PatientRecord(ins=TEST_INS, oid=TEST_OID, status=PatientStatus.OPPOSED, sex="F", **values)


def text_of(pdf: bytes, tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "receipt.pdf"
    path.write_bytes(pdf)
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    return text, info


def test_the_receipt_names_the_person_the_moment_and_the_way_back(tmp_path: Path) -> None:
    reference = receipt_reference(TEST_INS, WINTER, secret=SECRET)
    text, info = text_of(PdfReceiptPrinter().render(person(), opposed_at=WINTER, reference=reference), tmp_path)
    flat = " ".join(text.split())
    assert "Justificatif d'opposition à la création du profil Mon espace santé" in flat
    assert "TEST" in text and "Jeanne Éloïse" in text and "01/03/1979" in text
    assert "2 79 03 51 215 189 89" in text  # the INS, grouped as on the carte Vitale
    assert "2 décembre 2026 à 13 h 05 (heure de Paris)" in text
    assert reference in text and flat.count(reference) == 2
    assert "nouveau code provisoire d'activation" in flat  # how to go back on it
    assert "Mon espace santé" in text.splitlines()[0] and "Assurance Maladie" in text  # the issuer
    assert re.search(r"^Pages:\s+1$", info, re.M)
    assert "justificatif d'opposition" in info and "Jeanne" not in info and TEST_INS not in info


def test_the_time_is_paris_time_in_french(tmp_path: Path) -> None:
    assert french_datetime(SUMMER_NIGHT) == "1er juillet 2026 à 0 h 30"
    assert french_datetime(datetime(2027, 1, 1, 0, 0)) == "1er janvier 2027 à 1 h 00"  # naive: UTC
    pdf = OppositionReceipts(secret=SECRET).render(person(), Opposed(SUMMER_NIGHT))
    text, _ = text_of(pdf, tmp_path)
    assert "1er juillet 2026 à 0 h 30 (heure de Paris)" in text
    assert "OPP-20260701-" in text  # the reference carries the Paris day


def test_the_reference_is_deterministic_and_does_not_reveal_the_ins() -> None:
    first = receipt_reference(TEST_INS, WINTER, secret=SECRET)
    assert first == receipt_reference(TEST_INS, WINTER.astimezone(), secret=SECRET)  # same instant, any zone
    assert re.fullmatch(r"OPP-20261202(-[0-9A-HJKMNP-TV-Z]{4}){4}", first)
    assert first != receipt_reference(TEST_INS, WINTER.replace(second=1), secret=SECRET)
    assert first != receipt_reference("279035121518990", WINTER, secret=SECRET)
    assert first != receipt_reference(TEST_INS, WINTER, secret=b"another deployment")
    assert not any(TEST_INS[n:n + 5] in first.replace("-", "") for n in range(11))
    with pytest.raises(ValueError):
        receipt_reference(TEST_INS, WINTER, secret=b"")


def test_a_long_name_still_fits_one_page_and_the_qr_code_carries_the_reference(tmp_path: Path) -> None:
    long = person(birth_name="DE LA FONTAINE-SAINT-ÉTIENNE DU MONT " * 4, given_names="Jean-Baptiste " * 12)
    receipts = OppositionReceipts(secret=SECRET)
    pdf = receipts.render(long, Opposed(WINTER))
    text, info = text_of(pdf, tmp_path)
    assert re.search(r"^Pages:\s+1$", info, re.M)
    assert "Vos données" in text and "DE LA FONTAINE" in text
    subprocess.run(["pdftoppm", "-r", "150", "-png", str(tmp_path / "receipt.pdf"), str(tmp_path / "page")],
                   check=True)
    [image] = tmp_path.glob("page-*.png")
    decoded = subprocess.run(["zbarimg", "--raw", "-q", str(image)], capture_output=True, text=True,
                             check=True).stdout.strip()
    assert decoded == receipts.reference(TEST_INS, WINTER)


def test_a_reprint_is_the_same_pdf_and_a_profile_without_opposition_has_none() -> None:
    receipts = OppositionReceipts(secret=SECRET)
    assert receipts.render(person(), Opposed(WINTER)) == receipts.render(person(), Opposed(WINTER))
    with pytest.raises(NotFound):
        receipts.render(person(), Opposed(None))
