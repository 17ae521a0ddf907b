"""Decision tables shipped as data: the CDA schema, the JDV_J07 type codes, the classification TOML.

Owns: reading config/cda/ (XSD tree), config/value-sets/JDV_J07_XdsTypeCode_CISIS.xml and
config/classification.toml and config/notifications.toml from this package's directory into typed values, once at start;
the habilitation matrix: config/habilitations.toml (shipped default), or a saved JSON:API export of the
official matrix (load_official_matrix).
Does not: validate or classify (pipelines.cda does, purely), use the network (schemaLocations are
relative paths inside config/cda/, parsed with no_network), or read anything else.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from lxml import etree

from hub.access import Habilitations
from hub.errors import ConfigError
from pipelines.cda.classification import ClassificationTables, tables_from_mapping
from pipelines.cda.validation import ValidationRules
from pipelines.notify.core.policy import NotifyPolicy, policy_from_mapping
from pipelines.record.core.habilitations import known_type_classes, matrix_from_jsonapi, matrix_from_mapping

HERE = Path(__file__).parent
SCHEMA = HERE / "cda" / "CDA_extended.xsd"
J07 = HERE / "value-sets" / "JDV_J07_XdsTypeCode_CISIS.xml"
CLASSIFICATION = HERE / "classification.toml"
NOTIFICATIONS = HERE / "notifications.toml"
HABILITATIONS = HERE / "habilitations.toml"
_SVS_CONCEPT = "{urn:ihe:iti:svs:2008}Concept"


def _local_parser() -> etree.XMLParser:
    # Our own files, but parsed the safe way anyway: no network, no external entities.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def load_schema(path: Path = SCHEMA) -> etree.XMLSchema:
    """The CDA XSD, with includes/imports resolved relative to `path`."""
    try:
        return etree.XMLSchema(etree.parse(str(path), parser=_local_parser()))
    except (OSError, etree.XMLSyntaxError, etree.XMLSchemaParseError) as exc:
        raise ConfigError(f"cannot load CDA schema {path.name}: {exc}") from exc


def load_type_labels(path: Path = J07) -> dict[str, str]:
    """typeCode -> displayName of an IHE SVS value set (JDV_J07)."""
    try:
        tree = etree.parse(str(path), parser=_local_parser())
    except (OSError, etree.XMLSyntaxError) as exc:
        raise ConfigError(f"cannot read value set {path.name}: {exc}") from exc
    labels = {c.get("code") or "": c.get("displayName") or "" for c in tree.iter(_SVS_CONCEPT)}
    labels.pop("", None)
    if not labels:
        raise ConfigError(f"value set {path.name} has no Concept")
    return labels


def load_validation_rules(*, max_bytes: int = 20 * 1024 * 1024) -> ValidationRules:
    """Schema + J07 type codes + size cap, ready for pipelines.cda.validation.validate()."""
    type_codes = frozenset(load_type_labels())
    return ValidationRules(schema=load_schema(), type_codes=type_codes, max_bytes=max_bytes)


def load_classification(path: Path = CLASSIFICATION) -> ClassificationTables:
    """The classification decision tables, with the J07 labels for type_label."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return tables_from_mapping(data, type_labels=load_type_labels())
    except (OSError, tomllib.TOMLDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot load classification table {path.name}: {exc}") from exc


def load_notify_policy(path: Path = NOTIFICATIONS, *, digest_window_s: int = 3600) -> NotifyPolicy:
    """The notification policy table (event kind x patient status -> channels)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return policy_from_mapping(data, digest_window_s=digest_window_s)
    except (OSError, tomllib.TOMLDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot load notification policy {path.name}: {exc}") from exc


def load_habilitations(path: Path | None = None, *, classification: Path = CLASSIFICATION) -> Habilitations:
    """The habilitation matrix of a TOML table (default: the shipped config/habilitations.toml), classCode
    groups expanded into the typeCodes classification.toml maps to them."""
    path = path or HABILITATIONS
    type_classes = known_type_classes(load_classification(classification))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return matrix_from_mapping(data, type_classes=type_classes, origin=path.name)
    except (OSError, tomllib.TOMLDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot load habilitation matrix {path.name}: {exc}") from exc


def load_official_matrix(path: Path) -> Habilitations:
    """The official habilitation matrix from a saved JSON:API export of cms.monespacesante.fr (one page, or
    a JSON list of pages); profession n becomes JDV_J01 code G15_<n>."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return matrix_from_jsonapi(document, origin=path.name)
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise ConfigError(f"cannot load official habilitation matrix {path.name}: {exc}. Save every page of "
                          "/jsonapi/node/matrice_professionnel_document?include=field_categorie_de_document,"
                          "field_code_profession,field_type_de_document&jsonapi_include=1 as JSON") from exc
