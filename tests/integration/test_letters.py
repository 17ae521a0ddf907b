"""Postal batches read back with real tools: pdftotext (poppler-utils) for the text and its position,
pdftoppm + zbarimg (zbar-tools) for the QR code of every page."""

from __future__ import annotations

import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import pytest

from connectors.outbound.letters import PdfLetterPrinter
from hub.notices import Letter
from tests.services import missing

pytestmark = pytest.mark.integration
MM = 72 / 25.4  # PDF points per millimetre


@pytest.fixture(autouse=True)
def tools() -> None:
    for tool in ("pdftotext", "pdftoppm", "zbarimg"):
        if shutil.which(tool) is None:
            missing(f"{tool} is needed to read letters back (poppler-utils, zbar-tools)")


def letters() -> list[Letter]:
    return [
        Letter(letter_id="n-1", recipient_name="Jeanne TEST", address_lines=("Bâtiment É", "1 rue de l'Église",
                                                                             "75000 PARIS"),
               title="Activez votre profil Mon espace santé", paragraphs=("Votre profil a été créé.",),
               qr_payload="https://mes.test/activation?ref=n-1", sent_on="2 décembre 2026",
               code="ABCD-1234-EFGH", code_valid_until="13 janvier 2027"),
        Letter(letter_id="r-2", recipient_name="Paul DURAND", address_lines=("3 place du Marché", "69001 LYON"),
               title="Relevé d'activité de votre profil Mon espace santé",
               paragraphs=("Depuis notre dernier courrier :", "2 nouveau(x) document(s) ajouté(s) à votre profil"),
               qr_payload="https://mes.test/r-2", sent_on="1 janvier 2027"),
        Letter(letter_id="r-3", recipient_name="Zoé MARTIN",
               address_lines=("12 chemin des Écoliers", "13001 MARSEILLE"),
               title="Relevé d'activité de votre profil Mon espace santé",
               paragraphs=("1 nouveau(x) message(s) dans votre messagerie de santé",),
               qr_payload="https://mes.test/r-3", sent_on="1 janvier 2027"),
    ]


def pages_text(pdf: Path) -> list[str]:
    out = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    return [page for page in out.split("\f") if page.strip()]


def test_one_page_per_letter_with_address_code_and_accents(tmp_path: Path) -> None:
    pdf = tmp_path / "batch.pdf"
    pdf.write_bytes(PdfLetterPrinter().render(letters()))
    pages = pages_text(pdf)
    assert len(pages) == 3
    first, second, third = pages
    assert "Jeanne TEST" in first and "1 rue de l'Église" in first and "Bâtiment É" in first
    assert "ABCD-1234-EFGH" in first and "valable jusqu'au 13 janvier 2027" in first
    assert "Le 2 décembre 2026" in first
    assert "Paul DURAND" in second and "69001 LYON" in second and "ABCD" not in second
    assert "Zoé MARTIN" in third and "13001 MARSEILLE" in third
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert "Mon espace santé - courriers" in info and "Jeanne" not in info


def test_every_qr_code_decodes_to_its_letters_link(tmp_path: Path) -> None:
    pdf = tmp_path / "batch.pdf"
    pdf.write_bytes(PdfLetterPrinter().render(letters()))
    subprocess.run(["pdftoppm", "-r", "150", "-png", str(pdf), str(tmp_path / "page")], check=True)
    images = sorted(tmp_path.glob("page-*.png"))
    decoded = [subprocess.run(["zbarimg", "--raw", "-q", str(image)], capture_output=True, text=True,
                              check=True).stdout.strip() for image in images]
    assert decoded == [letter.qr_payload for letter in letters()]


def test_the_address_block_sits_in_the_right_hand_window(tmp_path: Path) -> None:
    pdf = tmp_path / "batch.pdf"
    pdf.write_bytes(PdfLetterPrinter().render(letters()[:1]))
    words = word_boxes(pdf)
    for word in ("Jeanne", "TEST", "Bâtiment", "l'Église"):
        assert_in_window(word, words[word])
    # "75000 PARIS" twice: the sender's town (top left) and the recipient's (in the window)
    assert sorted(in_window(box) for box in words["PARIS"]) == sorted(in_window(box) for box in words["75000"]) \
        == [False, True]
    assert not any(in_window(box) for word in ("Assurance", "TSA", "décembre") for box in words[word])


Box = tuple[float, float, float, float]


def word_boxes(pdf: Path) -> dict[str, list[Box]]:
    """Each word of the first page with the boxes (xMin, yMin, xMax, yMax: points from the top left) of
    its occurrences."""
    html = subprocess.run(["pdftotext", "-bbox", "-l", "1", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout
    words: dict[str, list[Box]] = {}
    for m in re.finditer(r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]+)</word>',
                         html):
        words.setdefault(unescape(m.group(5)), []).append(
            (float(m.group(1)), float(m.group(2)), float(m.group(3)), float(m.group(4))))
    return words


def in_window(box: Box) -> bool:
    # DL window on the right: 110-200 mm from the left edge, 45-85 mm from the top
    x_min, y_min, x_max, y_max = box
    return x_min >= 110 * MM and x_max <= 200 * MM and y_min >= 45 * MM and y_max <= 85 * MM


def assert_in_window(word: str, boxes: list[Box]) -> None:
    """Every occurrence of `word` is inside the envelope's window."""
    for box in boxes:
        assert in_window(box), f"{word!r} at {tuple(round(v / MM, 1) for v in box)} mm is outside the window"


def test_an_overlong_letter_still_fits_one_page(tmp_path: Path) -> None:
    long = Letter(letter_id="r-9", recipient_name="Jean-Baptiste DE LA FONTAINE-SAINT-ÉTIENNE DU MONT",
                  address_lines=(*(f"ligne d'adresse numéro {n} qui est vraiment très longue" for n in range(8)),
                                 "75013 PARIS CEDEX 13"),
                  title="Relevé d'activité " * 30, paragraphs=tuple("mot " * 300 for _ in range(8)),
                  qr_payload="https://mes.test/r-9", sent_on="1 janvier 2027")
    pdf = tmp_path / "long.pdf"
    pdf.write_bytes(PdfLetterPrinter().render([long]))
    [page] = pages_text(pdf)
    assert "[…]" in page  # cut, and says so
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^Pages:\s+1$", info, re.M)
    # six lines at most: the name, the first four, and always the last one (postcode and town)
    assert "75013 PARIS CEDEX 13" in page and "numéro 3" in page and "numéro 4" not in page
    words = word_boxes(pdf)
    for word in ("Jean-Baptiste", "75013", "CEDEX", "13", "numéro"):
        assert_in_window(word, words[word])
    block = [(word, box) for word, boxes in words.items() for box in boxes if box[0] >= 105 * MM
             and 40 * MM <= box[1] <= 90 * MM]  # everything printed about the window: nothing spills out
    assert len(block) >= 6 * 3
    for word, box in block:
        assert_in_window(word, [box])
    assert "Le 1 janvier 2027" in page
    subprocess.run(["pdftoppm", "-r", "150", "-png", str(pdf), str(tmp_path / "long")], check=True)
    [image] = tmp_path.glob("long-*.png")
    assert subprocess.run(["zbarimg", "--raw", "-q", str(image)], capture_output=True, text=True,
                          check=True).stdout.strip() == "https://mes.test/r-9"


def test_the_same_batch_renders_to_the_same_bytes() -> None:
    printer = PdfLetterPrinter()
    assert printer.render(letters()) == printer.render(letters())
