"""classify(): the decision rows of config/classification.toml, one test row each."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest

from config.tables import CLASSIFICATION, load_classification, load_type_labels
from pipelines.cda.classification import ClassificationTables, classify, tables_from_mapping
from pipelines.cda.header import CdaHeader

BASE = CdaHeader(
    document_id="1.2.3^1", type_code="", type_code_system="2.16.840.1.113883.6.1", type_display="",
    title="t", effective_time="20220101120000+0100", confidentiality="N", language="fr-FR",
    patient_ins="279035121518989", patient_ins_oid="1.2.250.1.213.1.4.10", author_id=None,
    author_specialty=None, custodian_id=None, template_ids=(), replaces=(), set_id=None,
    version_number=None, nonxml_body_media_type=None,
)
LDL_SES = "1.2.250.1.213.1.1.1.29"


@pytest.fixture(scope="module")
def tables() -> ClassificationTables:
    return load_classification()


def header(type_code: str, *templates: str, media: str | None = None, conf: str = "N") -> CdaHeader:
    return dataclasses.replace(
        BASE, type_code=type_code, template_ids=templates, nonxml_body_media_type=media, confidentiality=conf
    )


@pytest.mark.parametrize(
    ("type_code", "class_code", "category"),
    [
        ("11488-4", "10", "CPT_REND"),  # class 10, no type rule
        ("11502-2", "10", "BIOLOGIE"),  # type rule beats class rule
        ("96173-0", "10", "BIOLOGIE"),  # TROD
        ("51969-4", "10", "BIOLOGIE"),  # génétique
        ("75492-9", "10", "DEPISTAG"),
        ("60591-5", "11", "SYNTHESE"),
        ("SYNTH", "11", "SYNTHESE"),
        ("11369-6", "11", "CAR_VAC"),  # class 11 but vaccination record
        ("87273-9", "45", "CAR_VAC"),
        ("96874-3", "45", "CAR_VAC"),
        ("80565-5", "45", "ORD_SOIN"),
        ("18748-4", "31", "RADIO_SC"),
        ("IMG-KOS", "31", "RADIO_SC"),
        ("57833-6", "42", "ORD_SOIN"),
        ("PRESC-KINE", "42", "ORD_SOIN"),
        ("60593-1", "43", "ORD_SOIN"),
        ("18776-5", "44", "ORD_SOIN"),
        ("CERT_DECL", "52", "CERT_MED"),
        ("89601-9", "52", "CERT_MED"),
        ("REMB", "60", "REMB"),
        ("DOCPAT05", "90", "BIOLOGIE"),
        ("DOCPAT08", "90", "SYNTHESE"),
        ("EXPPAT_1", "90", "AUTR_DOC"),
        ("EXPPAT_3", "90", "DIR_ANT"),
        ("51851-4", "95", "DOC_ADM"),
        ("ATTEST-RESID", "95", "DOC_ADM"),  # prefix rule
        ("ATTEST-NOUVELLE", "95", "DOC_ADM"),  # prefix rule covers future ATTEST-* codes
        ("74465-6", "95", "AUTR_DOC"),  # questionnaire: type rule keeps it out of DOC_ADM
        ("FEUILLE-DE-STYLE", "99", "AUTR_DOC"),
        ("29274-8", "99", "AUTR_DOC"),  # in J07, class unknown: fallback
        ("NOT-A-CODE", "99", "AUTR_DOC"),
    ],
)
def test_class_and_category(
    tables: ClassificationTables, type_code: str, class_code: str, category: str
) -> None:
    result = classify(header(type_code, LDL_SES), tables)
    assert (result.class_code, result.category) == (class_code, category)
    assert len(result.reasons) == 3


@pytest.mark.parametrize(
    ("templates", "media", "level", "format_code"),
    [
        ((), "application/pdf", "N1", "urn:ihe:iti:xds-sd:pdf:2008"),
        ((), "text/plain", "N1", "urn:ihe:iti:xds-sd:text:2008"),
        ((), "image/jpeg", "N1", "urn:ihe:iti-fr:xds-sd:jpeg:2010"),
        ((), "application/zip", "N1", "urn:asipSante:modelesHorsProfils:2011"),
        (("1.2.250.1.213.1.1.1.36",), None, "N3", "urn:asip:ci-sis:hr:2019"),
        (("1.2.250.1.213.1.1.1.5", "1.2.250.1.213.1.1.1.5.1"), None, "N3", "urn:asip:ci-sis:cse-cs8:2017"),
        # French model row wins over the generic IHE XD-LAB row, whatever the document order
        (("1.3.6.1.4.1.19376.1.3.3", "1.2.250.1.213.1.1.1.55"), None, "N3", "urn:ihe:lab:xd-lab:2008"),
        (("1.3.6.1.4.1.19376.1.3.3",), None, "N3", "urn:ihe:lab:xd-lab:2008"),
        (("1.2.250.1.213.1.1.1.39",), None, "N3", "urn:ihe:pharm:pre:2010"),
        (("2.16.840.1.113883.2.8.2.1", "1.2.250.1.213.1.1.1.1"), None, "N3",
         "urn:asipSante:modelesHorsProfils:2011"),
    ],
)
def test_format_and_level(
    tables: ClassificationTables, templates: tuple[str, ...], media: str | None, level: str, format_code: str
) -> None:
    result = classify(header("11488-4", *templates, media=media), tables)
    assert (result.level, result.format_code) == (level, format_code)


def test_confidentiality_and_labels(tables: ClassificationTables) -> None:
    result = classify(header("11502-2", LDL_SES, conf="R"), tables)
    assert result.confidentiality == ("R",)
    assert result.type_label == "CR d'examens biologiques"  # from JDV_J07
    assert result.to_dict()["reasons"] == list(result.reasons)


def test_reasons_carry_no_patient_data(tables: ClassificationTables) -> None:
    assert "279035121518989" not in " ".join(classify(header("11502-2", LDL_SES), tables).reasons)


def test_every_j07_code_gets_a_class_row_except_the_documented_ones(tables: ClassificationTables) -> None:
    unmapped = {code for code in load_type_labels() if classify(header(code), tables).class_code == "99"}
    assert unmapped == {"29274-8", "101881-1", "E1762", "FEUILLE-DE-STYLE"}


def _toml() -> dict[str, Any]:
    return tomllib.loads(Path(CLASSIFICATION).read_text(encoding="utf-8"))


def test_tables_refuse_an_unknown_category() -> None:
    data = _toml()
    data["categories"]["by_class"]["10"] = "NOPE"
    with pytest.raises(ValueError, match="NOPE"):
        tables_from_mapping(data)


def test_tables_name_a_missing_key() -> None:
    data = _toml()
    del data["formats"]
    with pytest.raises(ValueError, match="formats"):
        tables_from_mapping(data)
