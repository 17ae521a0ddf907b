"""The opposition receipt: "justificatif d'opposition à la création du profil Mon espace santé", one A4 PDF.

Owns: the receipt's page (reportlab, in French): the issuer block, the title, the person it belongs to
(birth name, given names, birth date, INS), the date and time of the opposition in Europe/Paris, the
receipt reference (pipelines.record.core.restitution.receipt_reference: keyed, it does not reveal the INS), what the
opposition means and how to go back on it (a new activation code on request), and a QR code carrying the
reference alone.  Always exactly one page; the same opposition always renders to the same bytes.  The
PDF's metadata names the document, never the person.
Does not: decide anything about the profile (pipelines.record.lifecycle), store the PDF, or log anything.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader, simpleSplit
from reportlab.pdfgen.canvas import Canvas

from connectors.outbound.letters import DEFAULT_SENDER, fonts, qr_png, sender_block
from hub.errors import NotFound
from hub.records import PatientRecord
from pipelines.record.core.restitution import PARIS, receipt_reference

WIDTH, HEIGHT = A4
MARGIN = 20 * mm
QR_SIZE = 28 * mm
TITLE = "Justificatif d'opposition à la création du profil Mon espace santé"
MONTHS_FR = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
             "novembre", "décembre")

SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Ce que signifie votre opposition", (
        "Vous avez exprimé votre opposition à la création de votre profil Mon espace santé. Ce justificatif "
        "en est la preuve : conservez-le.",
        "Votre profil Mon espace santé n'est pas ouvert. Aucun document de santé n'y est déposé, aucun "
        "message de la messagerie de santé ne peut vous y être adressé, aucun professionnel de santé ne peut "
        "le consulter et vous ne recevez plus de notification de Mon espace santé. Le code provisoire "
        "d'activation qui vous avait été adressé n'est plus valable.",
        "Votre opposition ne change rien à votre prise en charge ni à vos remboursements.",
    )),
    ("Revenir sur votre décision", (
        "Vous pouvez à tout moment changer d'avis. Sur simple demande auprès de l'Assurance Maladie (par "
        "téléphone au 3422, ou dans votre caisse), un nouveau code provisoire d'activation vous est adressé ; "
        "votre profil Mon espace santé est ouvert lorsque vous l'activez avec ce code.",
    )),
    ("Vos données", (
        "Seuls les éléments nécessaires pour tenir compte de votre opposition (votre identité et la date de "
        "l'opposition) sont conservés par l'Assurance Maladie, gestionnaire de Mon espace santé "
        "(article L. 1111-13-1 du code de la santé publique).",
    )),
)


def french_datetime(moment: datetime) -> str:
    """`moment` in Europe/Paris, as French writes it: "1er juillet 2026 à 0 h 30", "2 décembre 2026 à 13 h 05"."""
    local = (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment).astimezone(PARIS)
    day = "1er" if local.day == 1 else str(local.day)
    return f"{day} {MONTHS_FR[local.month - 1]} {local.year} à {local.hour} h {local.minute:02d}"


def spaced_ins(ins: str) -> str:
    """The INS grouped as on a carte Vitale: "2 79 03 51 215 189 89" (anything else is left as it is)."""
    if len(ins) != 15:
        return ins
    return " ".join((ins[0], ins[1:3], ins[3:5], ins[5:7], ins[7:10], ins[10:13], ins[13:]))


def french_birth_date(value: str) -> str:
    """The registry's YYYY-MM-DD as DD/MM/YYYY (anything else is left as it is)."""
    parts = value.split("-")
    return "/".join(reversed(parts)) if len(parts) == 3 and all(p.isdigit() for p in parts) else value


class PdfReceiptPrinter:
    """Renders the opposition receipt of one person as a one-page A4 PDF."""

    def __init__(self, issuer_lines: Sequence[str] = DEFAULT_SENDER) -> None:
        self._issuer = tuple(issuer_lines)
        self._regular, self._bold, self._mono = fonts()

    def render(self, patient: PatientRecord, *, opposed_at: datetime, reference: str) -> bytes:
        """The receipt of `patient`'s opposition registered at `opposed_at`, under `reference`."""
        out = io.BytesIO()
        c = Canvas(out, pagesize=A4, invariant=True, pageCompression=1)
        c.setTitle("Mon espace santé - justificatif d'opposition")
        c.setAuthor("Mon espace santé")
        c.setSubject("")
        self._issuer_block(c)
        y = self._title(c, HEIGHT - 62 * mm)
        y = self._person(c, patient, y - 6 * mm)
        y = self._opposition(c, opposed_at, reference, y - 6 * mm)
        self._sections(c, y - 8 * mm, bottom=MARGIN + QR_SIZE + 8 * mm)
        self._footer(c, reference)
        c.showPage()
        c.save()
        return out.getvalue()

    def _issuer_block(self, c: Canvas) -> None:
        sender_block(c, self._issuer, bold=self._bold, regular=self._regular)

    def _title(self, c: Canvas, y: float) -> float:
        c.setFont(self._bold, 15)
        for line in simpleSplit(TITLE, self._bold, 15, WIDTH - 2 * MARGIN):
            c.drawString(MARGIN, y, line)
            y -= 7 * mm
        return y

    def _person(self, c: Canvas, patient: PatientRecord, y: float) -> float:
        rows = (("Nom de naissance", patient.birth_name), ("Prénom(s)", patient.given_names),
                ("Date de naissance", french_birth_date(patient.birth_date)),
                ("Matricule INS", spaced_ins(patient.ins)))
        return self._box(c, "Personne concernée", rows, y)

    def _opposition(self, c: Canvas, opposed_at: datetime, reference: str, y: float) -> float:
        rows = (("Enregistrée le", f"{french_datetime(opposed_at)} (heure de Paris)"),
                ("Référence", reference))
        return self._box(c, "Opposition", rows, y)

    def _box(self, c: Canvas, heading: str, rows: Sequence[tuple[str, str]], top: float) -> float:
        """A framed block of label: value rows; a long value wraps (at most 2 lines); returns the y below."""
        label_w, size = 45 * mm, 10.5
        width = WIDTH - 2 * MARGIN - label_w - 10 * mm
        lines = [(label, simpleSplit(value, self._regular, size, width)[:2] or [""]) for label, value in rows]
        height = 10 * mm + sum(len(v) for _, v in lines) * 5.5 * mm
        c.setLineWidth(0.8)
        c.rect(MARGIN, top - height, WIDTH - 2 * MARGIN, height)
        c.setFont(self._bold, 11)
        c.drawString(MARGIN + 5 * mm, top - 6.5 * mm, heading)
        y = top - 12.5 * mm
        for label, values in lines:
            c.setFont(self._regular, size)
            c.drawString(MARGIN + 5 * mm, y, f"{label} :")
            c.setFont(self._mono if label == "Référence" else self._bold, size)
            for value in values:
                c.drawString(MARGIN + 5 * mm + label_w, y, value)
                y -= 5.5 * mm
        return top - height

    def _sections(self, c: Canvas, top: float, *, bottom: float) -> None:
        width, size = WIDTH - 2 * MARGIN, 10.0
        y = top
        for heading, paragraphs in SECTIONS:
            c.setFont(self._bold, 11)
            c.drawString(MARGIN, y, heading)
            y -= 6 * mm
            c.setFont(self._regular, size)
            for paragraph in paragraphs:
                for line in simpleSplit(paragraph, self._regular, size, width):
                    if y < bottom:  # the texts are fixed and fit; never let anything spill onto a second page
                        return
                    c.drawString(MARGIN, y, line)
                    y -= size * 1.4
                y -= 2 * mm
            y -= 3 * mm

    def _footer(self, c: Canvas, reference: str) -> None:
        x, y = WIDTH - MARGIN - QR_SIZE, MARGIN + 4 * mm
        c.drawImage(ImageReader(io.BytesIO(qr_png(reference))), x, y, QR_SIZE, QR_SIZE)
        c.setFont(self._regular, 8)
        c.drawRightString(WIDTH - MARGIN, MARGIN, "Référence du justificatif")
        c.setFont(self._regular, 8.5)
        lines = (f"Justificatif délivré par {self._issuer[0]}" + (f" - {self._issuer[1]}" if len(self._issuer) > 1
                                                                 else "") + ".",
                 "Document établi automatiquement ; il ne porte pas de signature.",
                 f"Référence à rappeler dans toute demande : {reference}")
        ty = MARGIN + 16 * mm
        for line in lines:
            c.drawString(MARGIN, ty, line)
            ty -= 4.5 * mm


class OpposedProfile(Protocol):
    """What the receipt needs of a lifecycle profile (the lifecycle's Profile has it): when the opposition was
    registered (None: the profile is not opposed)."""

    @property
    def opposed_at(self) -> datetime | None: ...


class OppositionReceipts:
    """The lifecycle's ReceiptPrinter: `render(patient, profile)`, the reference derived from the INS and
    the opposition's instant under the deployment's secret (the same receipt on every reprint)."""

    def __init__(self, *, secret: bytes, printer: PdfReceiptPrinter | None = None) -> None:
        if not secret:
            raise ValueError("the receipt-reference secret must not be empty")
        self._secret = secret
        self._printer = printer or PdfReceiptPrinter()

    def reference(self, ins: str, opposed_at: datetime) -> str:
        return receipt_reference(ins, opposed_at, secret=self._secret)

    def render(self, patient: PatientRecord, profile: OpposedProfile) -> bytes:
        """NotFound when the profile records no opposition (there is nothing to attest)."""
        opposed_at = profile.opposed_at
        if opposed_at is None:
            raise NotFound("this profile records no opposition")
        return self._printer.render(patient, opposed_at=opposed_at,
                                    reference=self.reference(patient.ins, opposed_at))
