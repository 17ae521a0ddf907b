"""Classification of a CDA document: classCode, patient category, formatCode, level, confidentiality.

Owns: ClassificationTables (typed decision tables built from the parsed config/classification.toml by
tables_from_mapping), Classification, classify().  Does not: read the TOML (config.tables does), judge
validity (validation does), or carry health data: reasons name table rows and codes only.

Rule 1: typeCode -> classCode by exact code, then by prefix (ATTEST-*), in row order; else the fallback.
Rule 2: category by typeCode rule, else by classCode rule, else the fallback (AUTR_DOC).
Rule 3: N1 (nonXMLBody) -> formatCode by mediaType; N3 -> the first format row whose templateId the
        document declares; else the fallback ("modèle hors profils").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pipelines.cda.header import CdaHeader

CATEGORIES = frozenset({
    "SYNTHESE", "ORD_SOIN", "RADIO_SC", "BIOLOGIE", "CPT_REND", "DEPISTAG", "CERT_MED", "DOC_ADM",
    "DIR_ANT", "CAR_VAC", "REMB", "AUTR_DOC",
})


@dataclass(frozen=True, slots=True)
class ClassRow:
    code: str
    label: str
    type_codes: frozenset[str]
    type_prefixes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FormatRow:
    template_id: str
    format_code: str
    model: str


@dataclass(frozen=True, slots=True)
class Fallback:
    class_code: str
    class_label: str
    category: str
    format_n1: str
    format_n3: str


@dataclass(frozen=True, slots=True)
class ClassificationTables:
    version: str
    classes: tuple[ClassRow, ...]
    category_by_type: Mapping[str, str]
    category_by_class: Mapping[str, str]
    formats_n1: Mapping[str, str]
    formats_n3: tuple[FormatRow, ...]
    fallback: Fallback
    type_labels: Mapping[str, str]  # typeCode -> JDV_J07 label (may be empty)


@dataclass(frozen=True, slots=True)
class Classification:
    class_code: str
    class_label: str
    category: str
    format_code: str
    level: str  # "N1" (nonXMLBody) or "N3" (structuredBody)
    confidentiality: tuple[str, ...]  # first the CDA code (N/R/V)
    type_label: str
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "class_code": self.class_code, "class_label": self.class_label, "category": self.category,
            "format_code": self.format_code, "level": self.level,
            "confidentiality": list(self.confidentiality), "type_label": self.type_label,
            "reasons": list(self.reasons),
        }


# -- building the tables (pure) ------------------------------------------------------------------


def tables_from_mapping(
    data: Mapping[str, Any], *, type_labels: Mapping[str, str] | None = None
) -> ClassificationTables:
    """Typed tables from the parsed TOML.  ValueError naming the key when something is missing or wrong."""
    try:
        tables = ClassificationTables(
            version=str(data.get("version", "")),
            classes=tuple(_class_row(row) for row in data["classes"]),
            category_by_type=_frozen(data["categories"]["by_type"]),
            category_by_class=_frozen(data["categories"]["by_class"]),
            formats_n1=_frozen(data["formats"]["n1"]),
            formats_n3=tuple(FormatRow(str(r["template_id"]), str(r["format_code"]), str(r.get("model", "")))
                             for r in data["formats"]["n3"]),
            fallback=Fallback(**{k: str(v) for k, v in data["fallback"].items()}),
            type_labels=_frozen(type_labels or {}),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"classification table: missing or malformed key {exc}") from exc
    _check_categories(tables)
    return tables


def _class_row(row: Mapping[str, Any]) -> ClassRow:
    return ClassRow(
        code=str(row["code"]), label=str(row["label"]),
        type_codes=frozenset(str(c) for c in row.get("type_codes", ())),
        type_prefixes=tuple(str(p) for p in row.get("type_prefixes", ())),
    )


def _frozen(table: Mapping[str, Any]) -> Mapping[str, str]:
    return MappingProxyType({str(k): str(v) for k, v in table.items()})


def _check_categories(tables: ClassificationTables) -> None:
    used = {*tables.category_by_type.values(), *tables.category_by_class.values(), tables.fallback.category}
    unknown = sorted(used - CATEGORIES)
    if unknown:
        raise ValueError(f"classification table: unknown categories {unknown}")


# -- classifying ---------------------------------------------------------------------------------


def classify(header: CdaHeader, tables: ClassificationTables) -> Classification:
    """Classify a document from its header.  Pure; the reasons say which row decided each value."""
    class_code, class_label, class_reason = _class_of(header.type_code, tables)
    category, category_reason = _category_of(header.type_code, class_code, tables)
    level = "N1" if header.nonxml_body_media_type is not None else "N3"
    format_code, format_reason = (
        _format_n1(header.nonxml_body_media_type, tables) if level == "N1"
        else _format_n3(header.template_ids, tables)
    )
    return Classification(
        class_code=class_code, class_label=class_label, category=category, format_code=format_code,
        level=level,
        confidentiality=(header.confidentiality,) if header.confidentiality else (),
        type_label=tables.type_labels.get(header.type_code) or header.type_display or header.type_code,
        reasons=(class_reason, category_reason, format_reason),
    )


def class_code_of(type_code: str, tables: ClassificationTables) -> str:
    """The classCode Rule 1 gives a typeCode, without a document (the habilitation matrix groups types by it)."""
    return _class_of(type_code, tables)[0]


def _class_of(type_code: str, tables: ClassificationTables) -> tuple[str, str, str]:
    for row in tables.classes:
        if type_code in row.type_codes:
            return row.code, row.label, f"classCode {row.code}: typeCode {type_code} listed in its row"
    for row in tables.classes:
        prefix = next((p for p in row.type_prefixes if type_code.startswith(p)), None)
        if prefix is not None:
            return row.code, row.label, f"classCode {row.code}: typeCode {type_code} matches prefix {prefix}"
    fb = tables.fallback
    return fb.class_code, fb.class_label, f"classCode {fb.class_code}: no class row for typeCode {type_code}"


def _category_of(type_code: str, class_code: str, tables: ClassificationTables) -> tuple[str, str]:
    if type_code in tables.category_by_type:
        category = tables.category_by_type[type_code]
        return category, f"category {category}: typeCode rule {type_code}"
    if class_code in tables.category_by_class:
        category = tables.category_by_class[class_code]
        return category, f"category {category}: classCode rule {class_code}"
    fallback = tables.fallback.category
    return fallback, f"category {fallback}: no rule for typeCode {type_code} or classCode {class_code}"


def _format_n1(media_type: str | None, tables: ClassificationTables) -> tuple[str, str]:
    code = tables.formats_n1.get(media_type or "")
    if code is not None:
        return code, f"formatCode {code}: N1 body, mediaType {media_type}"
    code = tables.fallback.format_n1
    return code, f"formatCode {code}: N1 body with unlisted mediaType {media_type}"


def _format_n3(template_ids: Sequence[str], tables: ClassificationTables) -> tuple[str, str]:
    declared = set(template_ids)
    row = next((r for r in tables.formats_n3 if r.template_id in declared), None)
    if row is not None:
        return row.format_code, f"formatCode {row.format_code}: templateId {row.template_id} ({row.model})"
    code = tables.fallback.format_n3
    return code, f"formatCode {code}: N3 body, no known model templateId"
