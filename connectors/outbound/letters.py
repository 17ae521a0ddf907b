"""Postal letters: a batch of hub.notices.Letter as one print-ready A4 PDF (reportlab), one page per letter.

Owns: the page layout, for a DL window envelope with the window on the right (French postal
practice, NF Z 10-011): sender block top left, recipient block in the window (110 mm from the left,
45 mm from the top), date, title, text, for activation letters a framed provisional code with its last
valid day, and a QR code (`qrcode`) carrying the letter's link.  Long texts are shrunk, then cut, so
that a letter is always exactly one page; an address keeps at most 6 lines, always its last (postcode
and town), and never leaves the window.  The PDF's metadata names the batch, never a patient.
Does not: decide what a letter says (pipelines.notify.service builds Letter) or where the PDF goes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import qrcode
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader, simpleSplit
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

from hub.notices import Letter

DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
DEFAULT_SENDER = ("Mon espace santé", "Assurance Maladie", "TSA 00000", "75000 PARIS")
WIDTH, HEIGHT = A4
MARGIN = 20 * mm
WINDOW_X, WINDOW_TOP, WINDOW_W, WINDOW_H = 110 * mm, 45 * mm, 90 * mm, 40 * mm
QR_SIZE = 30 * mm
BODY_SIZES = (11.0, 10.0, 9.0, 8.0)  # tried in turn until the text fits the page
ADDRESS_LINES = 6                     # the norm's maximum, the name included
TITLE_LINES = 2


def fonts() -> tuple[str, str, str]:
    """(regular, bold, mono): DejaVu when installed (every accent), else the PDF base-14 fonts."""
    names = {"MesSans": "DejaVuSans.ttf", "MesSans-Bold": "DejaVuSans-Bold.ttf", "MesMono": "DejaVuSansMono.ttf"}
    if all((DEJAVU / file).exists() for file in names.values()):
        for name, file in names.items():
            if name not in pdfmetrics.getRegisteredFontNames():
                pdfmetrics.registerFont(TTFont(name, str(DEJAVU / file)))
        return "MesSans", "MesSans-Bold", "MesMono"
    return "Helvetica", "Helvetica-Bold", "Courier-Bold"


def qr_png(payload: str) -> bytes:
    """The QR code of `payload` as PNG bytes (error correction M: survives a print and a fold)."""
    code = qrcode.QRCode(error_correction=qrcode.ERROR_CORRECT_M, box_size=8, border=2)
    code.add_data(payload)
    code.make(fit=True)
    out = io.BytesIO()
    code.make_image().save(out)
    return out.getvalue()



def sender_block(c: Canvas, lines: Sequence[str], *, bold: str, regular: str) -> None:
    """The sender's block at the top left of a page: its first line in bold (letters and receipts)."""
    y = HEIGHT - 20 * mm
    for n, line in enumerate(lines):
        c.setFont(bold if n == 0 else regular, 10)
        c.drawString(MARGIN, y, line)
        y -= 4.8 * mm

class PdfLetterPrinter:
    """pipelines.notify.ports.LetterPrinter: one deterministic A4 PDF per batch."""

    def __init__(self, sender_lines: Sequence[str] = DEFAULT_SENDER) -> None:
        self._sender = tuple(sender_lines)
        self._regular, self._bold, self._mono = fonts()

    def render(self, letters: Sequence[Letter]) -> bytes:
        out = io.BytesIO()
        canvas = Canvas(out, pagesize=A4, invariant=True, pageCompression=1)
        canvas.setTitle("Mon espace santé - courriers")
        canvas.setAuthor("Mon espace santé")
        canvas.setSubject("")
        for letter in letters:
            self._page(canvas, letter)
            canvas.showPage()
        canvas.save()
        return out.getvalue()

    def _page(self, c: Canvas, letter: Letter) -> None:
        self._sender_block(c)
        self._address_block(c, letter)
        y = HEIGHT - WINDOW_TOP - WINDOW_H - 12 * mm
        c.setFont(self._regular, 10)
        c.drawRightString(WIDTH - MARGIN, y, f"Le {letter.sent_on}")
        y -= 12 * mm
        c.setFont(self._bold, 13)
        title = simpleSplit(letter.title, self._bold, 13, WIDTH - 2 * MARGIN)
        if len(title) > TITLE_LINES:  # a title never eats the page: its last kept line ends with "…"
            title = [*title[:TITLE_LINES - 1], _fit(" ".join(title[TITLE_LINES - 1:]) + "…", self._bold, 13,
                                                    WIDTH - 2 * MARGIN)]
        for line in title:
            c.drawString(MARGIN, y, line)
            y -= 6.5 * mm
        y -= 3 * mm
        bottom = MARGIN + QR_SIZE + 10 * mm
        if letter.code:
            y = self._code_box(c, letter, y)
        self._paragraphs(c, letter.paragraphs, top=y, bottom=bottom)
        self._qr(c, letter.qr_payload)

    def _sender_block(self, c: Canvas) -> None:
        sender_block(c, self._sender, bold=self._bold, regular=self._regular)

    def _address_block(self, c: Canvas, letter: Letter) -> None:
        lines = address_lines(letter)
        faces = [self._bold, *([self._regular] * (len(lines) - 1))]
        width = WINDOW_W - 8 * mm
        size = 11.0
        while size > 7 and any(_width(line, font, size) > width for line, font in zip(lines, faces, strict=True)):
            size -= 0.5
        y = HEIGHT - WINDOW_TOP - 8 * mm
        for line, font in zip(lines, faces, strict=True):
            c.setFont(font, size)
            c.drawString(WINDOW_X + 4 * mm, y, _fit(line, font, size, width))
            y -= size * 1.35

    def _code_box(self, c: Canvas, letter: Letter, y: float) -> float:
        height = 24 * mm
        c.setLineWidth(1.2)
        c.rect(MARGIN, y - height, WIDTH - 2 * MARGIN, height)
        c.setFont(self._regular, 10)
        c.drawString(MARGIN + 5 * mm, y - 7 * mm, "Votre code provisoire d'activation :")
        c.setFont(self._mono, 18)
        c.drawString(MARGIN + 5 * mm, y - 15 * mm, letter.code)
        if letter.code_valid_until:
            c.setFont(self._regular, 10)
            c.drawString(MARGIN + 5 * mm, y - 21 * mm, f"Ce code est valable jusqu'au {letter.code_valid_until}.")
        return y - height - 8 * mm

    def _paragraphs(self, c: Canvas, paragraphs: Sequence[str], *, top: float, bottom: float) -> None:
        width = WIDTH - 2 * MARGIN
        for size in BODY_SIZES:
            blocks = [simpleSplit(p, self._regular, size, width) for p in paragraphs]
            needed = sum(len(b) for b in blocks) * size * 1.4 + len(blocks) * size * 0.8
            if needed <= top - bottom or size == BODY_SIZES[-1]:
                break
        y = top
        c.setFont(self._regular, size)
        for block in blocks:
            for line in block:
                if y - size < bottom:  # still too long at the smallest size: cut, and say so
                    c.drawString(MARGIN, bottom, "[…]")
                    return
                c.drawString(MARGIN, y, line)
                y -= size * 1.4
            y -= size * 0.8

    def _qr(self, c: Canvas, payload: str) -> None:
        x, y = WIDTH - MARGIN - QR_SIZE, MARGIN + 6 * mm
        c.drawImage(ImageReader(io.BytesIO(qr_png(payload))), x, y, QR_SIZE, QR_SIZE)
        c.setFont(self._regular, 8)
        c.drawRightString(WIDTH - MARGIN, MARGIN + 2 * mm, "Scannez ce code pour accéder à Mon espace santé")


def address_lines(letter: Letter) -> list[str]:
    """The block printed in the window: the name, then the address, at most ADDRESS_LINES lines (NF Z 10-011).
    Too many lines: the middle ones go, the last (postcode and town, as given) always stays."""
    lines = [letter.recipient_name, *letter.address_lines]
    if len(lines) > ADDRESS_LINES:
        lines = [*lines[:ADDRESS_LINES - 1], lines[-1]]
    return lines


def _fit(text: str, font: str, size: float, width: float) -> str:
    """`text` cut with an ellipsis to `width` points (an address line never leaves the window)."""
    if _width(text, font, size) <= width:
        return text
    while text and _width(text + "…", font, size) > width:
        text = text[:-1]
    return text + "…"


def _width(text: str, font: str, size: float) -> float:
    return float(pdfmetrics.stringWidth(text, font, size))
