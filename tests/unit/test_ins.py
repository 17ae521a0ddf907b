"""INS matricule checks: key arithmetic, Corsica, format, OID (DOMAIN.md §3)."""

from __future__ import annotations

import pytest

from hub.ins import check_ins, ins_key
from pipelines.cda.validation import DEFAULT_INS_OIDS

LOC = "/ClinicalDocument/recordTarget/patientRole/id[1]"
TEST_OID = "1.2.250.1.213.1.4.10"


@pytest.mark.parametrize(
    ("nir13", "key"),
    [
        ("2790351215189", 89),  # ANS test identity 279035121518989
        ("2210425456114", 83),  # DOMAIN.md §3: 221042545611404 carries 04, correct key 83
        ("2230425456114", 82),  # 223042545611404 (CSE-CS8 fixture)
        ("2221275056112", 47),  # 222127505611201
        ("2240275115835", 12),  # 224027511583555
        ("2880912345678", 94),  # 288091234567823
        ("2460374330002", 53),  # 246037433000291
        ("185022A123456", 82),  # Corsica: 2A read as 19 -> 97 - 1850219123456 mod 97
        ("185022B123456", 12),  # Corsica: 2B read as 18 -> 97 - 1850218123456 mod 97
    ],
)
def test_ins_key(nir13: str, key: int) -> None:
    assert ins_key(nir13) == key


@pytest.mark.parametrize("bad", ["279035121518", "27903512151899", "2790X51215189", "2792C51215189", ""])
def test_ins_key_refuses_malformed_input(bad: str) -> None:
    with pytest.raises(ValueError):
        ins_key(bad)


@pytest.mark.parametrize(
    ("matricule", "oid", "expected"),
    [
        ("279035121518989", TEST_OID, None),  # valid, test OID
        ("279035121518989", "1.2.250.1.213.1.4.8", None),  # valid, NIR OID
        ("279035121518989", "1.2.250.1.213.1.4.9", None),  # NIA
        ("279035121518989", "1.2.250.1.213.1.4.11", None),  # demo
        ("185022A12345682", TEST_OID, None),  # Corsica 2A with its right key
        ("185022B12345612", TEST_OID, None),  # Corsica 2B with its right key
        ("221042545611404", TEST_OID, ("ins.key", "904")),  # DOMAIN.md §3 wrong keys
        ("223042545611404", TEST_OID, ("ins.key", "904")),
        ("222127505611201", TEST_OID, ("ins.key", "904")),
        ("224027511583555", TEST_OID, ("ins.key", "904")),
        ("288091234567823", TEST_OID, ("ins.key", "904")),
        ("246037433000291", TEST_OID, ("ins.key", "904")),
        ("279035121518988", TEST_OID, ("ins.key", "904")),  # off by one
        ("185022A12345600", TEST_OID, ("ins.key", "904")),  # Corsica, wrong key
        ("27903512151898", TEST_OID, ("ins.format", "905")),  # 14 characters
        ("2790351215189890", TEST_OID, ("ins.format", "905")),  # 16 characters
        ("27903512151898A", TEST_OID, ("ins.format", "905")),  # letter in the key
        ("2790X5121518989", TEST_OID, ("ins.format", "905")),  # letter elsewhere
        ("2792C5121518989", TEST_OID, ("ins.format", "905")),  # only 2A/2B allowed
        ("185022a12345600", TEST_OID, ("ins.format", "905")),  # lower-case Corsica
        ("", TEST_OID, ("ins.format", "905")),
        ("２７９０３５１２１５１８９８９", TEST_OID, ("ins.format", "905")),  # full-width digits (issue 12)
        ("٢٧٩٠٣٥١٢١٥١٨٩٨٩", TEST_OID, ("ins.format", "905")),  # Arabic-Indic digits
        ("2790351215189٨٩", TEST_OID, ("ins.format", "905")),  # a non-ASCII key only
        ("279035121518989", "1.2.250.1.213.1.4.2", ("ins.oid", "904")),  # INS-C: not accepted
        ("279035121518989", "1.2.3.4", ("ins.oid", "904")),
    ],
)
def test_check_ins(matricule: str, oid: str, expected: tuple[str, str] | None) -> None:
    findings = check_ins(matricule, oid, location=LOC, accepted_oids=DEFAULT_INS_OIDS)
    if expected is None:
        assert findings == ()
    else:
        assert [(f.rule, f.code) for f in findings] == [expected]
        assert findings[0].location == LOC


def test_wrong_key_message_gives_the_computed_key_but_never_the_matricule() -> None:
    (finding,) = check_ins("223042545611404", TEST_OID, location=LOC, accepted_oids=DEFAULT_INS_OIDS)
    for message in (finding.message_fr, finding.message_en):
        assert "82" in message
        assert "2230425456114" not in message
        assert "223042545611404" not in message
    assert "2 derniers chiffres" in finding.message_fr
    assert "2 last digits" in finding.message_en
