"""Building the habilitation matrix (pure): from the shipped table, or from the official JSON:API export.

Owns: known_type_classes (every typeCode the hub classifies -> its classCode), matrix_from_mapping
(config/habilitations.toml once parsed: classCode groups expanded into type codes, named type sets,
`like` another profession, deny lists) and matrix_from_jsonapi (the pages of the
cms.monespacesante.fr export).  Every ValueError names the key or item that is wrong.
Does not: read files (config.tables does) or decide an access (pipelines.record.core.access).

Table format (config/habilitations.toml), one row per profession (JDV_J01 code G15_xx / G16_xx):
  [professions.G15_40]
  label = "Chirurgien-dentiste"
  classes = ["10", "11"]        # every known typeCode of these classCodes (classification.toml Rule 1)
  types = ["FICHE-CONTACTS"]    # and these typeCodes ("@name" = the [type_sets] list `name`)
  deny = ["@psy_social"]        # minus these (wins over classes, types and like)
  like = "G15_50"               # start from another profession's row (then add / deny)
  all_types = true              # every typeCode, even ones not known yet, minus `deny` (alone or with deny)

JSON:API export (node/matrice_professionnel_document, jsonapi_include=1): each item of a page's `data` has
field_code_profession.field_code_profession (int, the TRE_G15 code: 10 -> "G15_10", see
hub.access.profession_code), field_type_de_document.field_code_loinc (the typeCode, LOINC or not) and
field_consultation_document (bool).  Only `true` rows allow; a type both allowed and refused for one
profession is refused; an item with no type code is skipped, as the Mon espace santé app skips it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from hub.access import Grant, Habilitations, profession_code
from pipelines.cda.classification import ClassificationTables, class_code_of

PROFESSION = re.compile(r"^G1[56]_\d{2}$")
TOP_KEYS = frozenset({"version", "source", "type_sets", "professions"})
ROW_KEYS = frozenset({"label", "all_types", "classes", "types", "deny", "like"})


def known_type_classes(tables: ClassificationTables) -> dict[str, str]:
    """Every typeCode the hub knows (JDV_J07 labels and the class rows' codes) -> its classCode."""
    known = set(tables.type_labels) | {code for row in tables.classes for code in row.type_codes}
    return {code: class_code_of(code, tables) for code in sorted(known)}


# -- the shipped table -----------------------------------------------------------------------------


def matrix_from_mapping(data: Mapping[str, Any], *, type_classes: Mapping[str, str],
                        origin: str = "config/habilitations.toml") -> Habilitations:
    """The matrix of the parsed TOML table; `type_classes` from known_type_classes."""
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise ValueError(f"unknown top-level key(s) {', '.join(unknown)} (expected {', '.join(sorted(TOP_KEYS))})")
    rows = data.get("professions")
    if not isinstance(rows, Mapping) or not rows:
        raise ValueError("[professions] is missing or empty: add one [professions.G15_xx] table per profession")
    builder = _Builder(rows, _type_sets(data.get("type_sets", {}), type_classes), type_classes)
    grants = {code: builder.grant(code) for code in rows}
    labels = {code: str(row.get("label", "")) for code, row in rows.items()}
    source = f"{origin} version {data.get('version', '?')}: {data.get('source', 'shipped default')}"
    return Habilitations(MappingProxyType(grants), source, MappingProxyType(labels))


def _type_sets(raw: Any, type_classes: Mapping[str, str]) -> dict[str, frozenset[str]]:
    if not isinstance(raw, Mapping):
        raise ValueError("[type_sets] must be a table of name = [typeCodes]")
    sets: dict[str, frozenset[str]] = {}
    for name, codes in raw.items():
        sets[name] = frozenset(_known_types(codes, type_classes, f"type_sets.{name}"))
    return sets


def _known_types(codes: Any, type_classes: Mapping[str, str], where: str) -> list[str]:
    if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
        raise ValueError(f"{where} must be a list of typeCode strings")
    unknown = [c for c in codes if c not in type_classes]
    if unknown:
        raise ValueError(f"{where}: unknown typeCode(s) {', '.join(unknown)}: use codes of JDV_J07 / "
                         "config/classification.toml")
    return list(codes)


class _Builder:
    """Resolves each profession row (with `like` chains, checked for cycles) into a Grant."""

    def __init__(self, rows: Mapping[str, Any], sets: Mapping[str, frozenset[str]],
                 type_classes: Mapping[str, str]) -> None:
        self._rows, self._sets, self._classes = rows, sets, type_classes
        self._done: dict[str, Grant] = {}

    def grant(self, code: str, chain: Sequence[str] = ()) -> Grant:
        if code in self._done:
            return self._done[code]
        if code in chain:
            raise ValueError(f"professions.{code}.like: cycle {' -> '.join([*chain, code])}")
        where = f"professions.{code}"
        row = self._row(code, where)
        like = row.get("like")
        if like is not None and (not isinstance(like, str) or like not in self._rows):
            raise ValueError(f"{where}.like: {like!r} is not a profession of the table")
        base = self.grant(like, (*chain, code)) if like else Grant()
        self._done[code] = grant = self._combine(base, row, where)
        return grant

    def _row(self, code: str, where: str) -> Mapping[str, Any]:
        if not PROFESSION.match(code):
            raise ValueError(f"{where}: a profession key is a JDV_J01 code such as G15_10 (médecin)")
        row = self._rows[code]
        if not isinstance(row, Mapping):
            raise ValueError(f"{where} must be a table")
        unknown = sorted(set(row) - ROW_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (expected {', '.join(sorted(ROW_KEYS))})")
        if not isinstance(row.get("all_types", False), bool):
            raise ValueError(f"{where}.all_types must be true or false")
        if row.get("all_types") and ({"classes", "types", "like"} & set(row)):
            raise ValueError(f"{where}: all_types = true goes alone (with deny only)")
        return row

    def _combine(self, base: Grant, row: Mapping[str, Any], where: str) -> Grant:
        deny = self._types(row.get("deny", []), f"{where}.deny")
        if row.get("all_types") is True:
            return Grant(all_types=True, except_types=frozenset(deny))
        added = self._class_types(row.get("classes", []), f"{where}.classes") | self._types(
            row.get("types", []), f"{where}.types")
        if base.all_types:
            return Grant(all_types=True, except_types=(base.except_types - added) | deny)
        grant = Grant(types=frozenset((base.types | added) - deny))
        if not grant.types:
            raise ValueError(f"{where} grants no typeCode: list classes or types, or remove the row")
        return grant

    def _types(self, codes: Any, where: str) -> frozenset[str]:
        if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
            raise ValueError(f"{where} must be a list of typeCode strings")
        out: set[str] = set()
        for code in codes:
            if code.startswith("@"):
                if code[1:] not in self._sets:
                    raise ValueError(f"{where}: {code} is not a [type_sets] name")
                out |= self._sets[code[1:]]
            else:
                out |= set(_known_types([code], self._classes, where))
        return frozenset(out)

    def _class_types(self, classes: Any, where: str) -> frozenset[str]:
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ValueError(f"{where} must be a list of classCode strings (\"10\", \"11\"...)")
        known = set(self._classes.values())
        unknown = [c for c in classes if c not in known]
        if unknown:
            raise ValueError(f"{where}: classCode(s) {', '.join(unknown)} have no typeCode in "
                             "config/classification.toml")
        return frozenset(t for t, c in self._classes.items() if c in classes)


# -- the official export ---------------------------------------------------------------------------


def matrix_from_jsonapi(document: Any, *, origin: str) -> Habilitations:
    """The matrix of a saved JSON:API export: one page (an object with `data`) or a list of pages."""
    pages = document if isinstance(document, list) else [document]
    allowed: dict[str, set[str]] = {}
    refused: dict[str, set[str]] = {}
    labels: dict[str, str] = {}
    rows = 0
    for p, page in enumerate(pages):
        if not isinstance(page, Mapping) or not isinstance(page.get("data"), list):
            raise ValueError(f"page {p}: expected a JSON:API document with a 'data' list (save each page of "
                             "/jsonapi/node/matrice_professionnel_document as it is, or a list of them)")
        for i, item in enumerate(page["data"]):
            row = _jsonapi_row(item, f"page {p} data[{i}]")
            if row is None:
                continue
            profession, label, type_code, consult = row
            (allowed if consult else refused).setdefault(profession, set()).add(type_code)
            labels.setdefault(profession, label)
            rows += 1
    if not rows:
        raise ValueError("no matrix row found: the export holds no item with a profession and a type code")
    grants = {p: Grant(types=frozenset(allowed.get(p, set()) - refused.get(p, set())))
              for p in sorted({*allowed, *refused})}
    source = f"official matrix {origin} (JSON:API export of cms.monespacesante.fr, {len(pages)} page(s), {rows} rows)"
    return Habilitations(MappingProxyType(grants), source, MappingProxyType(labels))


def _jsonapi_row(item: Any, where: str) -> tuple[str, str, str, bool] | None:
    """(profession, its label, typeCode, allowed) of one item, or None when it names no type code."""
    if not isinstance(item, Mapping):
        raise ValueError(f"{where}: expected an object")
    attrs = {**item.get("attributes", {}), **item} if isinstance(item.get("attributes"), Mapping) else item
    profession, label = _jsonapi_profession(attrs.get("field_code_profession"), where)
    kind = attrs.get("field_type_de_document")
    type_code = kind.get("field_code_loinc") if isinstance(kind, Mapping) else None
    if not isinstance(type_code, str) or not type_code.strip():
        return None
    consult = attrs.get("field_consultation_document")
    if not isinstance(consult, bool):
        raise ValueError(f"{where}.field_consultation_document: expected true or false, got {type(consult).__name__}")
    return profession, label, type_code.strip(), consult


def _jsonapi_profession(value: Any, where: str) -> tuple[str, str]:
    label = ""
    if isinstance(value, Mapping):
        label = str(value.get("name") or "")
        value = value.get("field_code_profession")
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip().isdigit():
        raise ValueError(f"{where}.field_code_profession.field_code_profession: expected the profession's integer "
                         "code (TRE_G15: 10 = médecin); export with include=field_code_profession&jsonapi_include=1")
    return profession_code(value), label
