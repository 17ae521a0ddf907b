"""Every ANS example CDA in examples/cda gets the outcome we defend, with its reason.

The fixtures come from ansforge/TestContenuCDA-3-0 (commit 7cd489b3, see examples/cda/SOURCE.md) and
ship with the project, so these tests run on a fresh clone (a missing folder fails, it never skips).
All 18 are well-formed and valid against config/cda/CDA_extended.xsd (the extended schema already
imports sdtc, IHE pharmacy, IHE LAB and DICOM), so the outcome is decided by our header, INS and
typeCode rules.
"""

from __future__ import annotations

import pytest

from config.tables import load_classification, load_validation_rules
from pipelines.cda.classification import ClassificationTables, classify
from pipelines.cda.validation import ValidationRules, validate
from tests.services import FIXTURES_CDA as FIXTURES

Accept = tuple[str, str, str]  # ("accept", category, classCode)
Reject = tuple[str, str]  # ("reject", rule)

EXPECTED: dict[str, Accept | Reject] = {
    # Lettre de liaison / CR (11488-4, class 10) of the AVC model; test INS 279035121518989, key 89 right.
    "AVC-PAVC_2022.01.xml": ("accept", "CPT_REND", "10"),
    # CR de biologie N1 (PDF): 11502-2 is class 10 but the typeCode rule puts it in BIOLOGIE.
    "BIO-CR-BIO_2021.01_CDA-R2-Niveau-1.xml": ("accept", "BIOLOGIE", "10"),
    # CR de biologie N3 (XD-LAB): same typeCode, same category.
    "BIO-CR-BIO_2024.01_TSH_1.xml": ("accept", "BIOLOGIE", "10"),
    # TROD angine (96173-0): a point-of-care lab test, BIOLOGIE by typeCode rule.
    "BIO-TROD_2024.01_Angine.xml": ("accept", "BIOLOGIE", "10"),
    # Historique des remboursements (REMB, class 60): REMB view.
    "CNAM-HR_2021.01.xml": ("accept", "REMB", "60"),
    # Certificat de santé du 8e jour: the recordTarget INS 223042545611404 carries key 04 while
    # 97 - (2230425456114 mod 97) = 82 (DOMAIN.md §3 lists it among the ANS wrong-key examples).
    # The document is wrong, not our rule: the DMP would answer 904, so we reject it.
    "CSE-CS8_2024.01.xml": ("reject", "ins.key"),
    # Generic N1 document (PDF) typed 11502-2: BIOLOGIE.
    "DOC_NON_STRUCTURE_CDA-R2-N1.xml": ("accept", "BIOLOGIE", "10"),
    # CR d'imagerie (18748-4, class 31).
    "IMG_CR_IMG_2024.01.xml": ("accept", "RADIO_SC", "31"),
    # Patient summary IPS-FR (60591-5 Synthèse médicale, class 11).
    "IPS-FR_2024.01.xml": ("accept", "SYNTHESE", "11"),
    # Lettre de liaison d'entrée (18761-7 note de transfert, class 10).
    "LDL-EES_2022.01.xml": ("accept", "CPT_REND", "10"),
    # Lettre de liaison de sortie (11490-0, class 10).
    "LDL-SES_2022.01.xml": ("accept", "CPT_REND", "10"),
    # Synthèse antepartum (57055-6, class 11); production OID 4.8 with a right key (10).
    "OBP-SAP_2024.01.xml": ("accept", "SYNTHESE", "11"),
    # CR de télémédecine N1 (85208-7, class 10).
    "TLM-CR_2022.01.xml": ("accept", "CPT_REND", "10"),
    # Note de vaccination (87273-9, class 45): vaccination record, CAR_VAC by typeCode rule.
    "VAC-NOTE_2023.01.xml": ("accept", "CAR_VAC", "45"),
    # Historique des vaccinations (11369-6, class 11): CAR_VAC by typeCode rule.
    "VAC_2023.01.xml": ("accept", "CAR_VAC", "11"),
    # Volet de synthèse médicale (SYNTH, class 11).
    "VSM_1.4_2022.01.xml": ("accept", "SYNTHESE", "11"),
    # Dispensation médicamenteuse (60593-1, class 43): ORD_SOIN.
    "eDISP-MED_2024.01.xml": ("accept", "ORD_SOIN", "43"),
    # Prescription de produits de santé (57833-6, class 42): ORD_SOIN.
    "eP-MED-DM_2024.01_PosoStruct.xml": ("accept", "ORD_SOIN", "42"),
}


def _fixture_names() -> list[str]:
    return sorted(p.name for p in FIXTURES.glob("*.xml"))


@pytest.fixture(scope="module")
def rules() -> ValidationRules:
    return load_validation_rules()


@pytest.fixture(scope="module")
def tables() -> ClassificationTables:
    return load_classification()


def test_every_fixture_has_an_expected_outcome() -> None:
    assert FIXTURES.is_dir(), f"the examples ship with the project: {FIXTURES} is missing"
    assert set(_fixture_names()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_outcome(name: str, rules: ValidationRules, tables: ClassificationTables) -> None:
    report = validate((FIXTURES / name).read_bytes(), rules)
    expected = EXPECTED[name]
    if expected[0] == "reject":
        assert not report.ok
        assert expected[1] in {f.rule for f in report.findings}, report.findings
        return
    assert report.ok, [f.to_dict() for f in report.findings]
    assert report.header is not None
    result = classify(report.header, tables)
    assert ("accept", result.category, result.class_code) == expected
    assert not result.format_code.startswith("urn:asipSante:modelesHorsProfils"), result.reasons
