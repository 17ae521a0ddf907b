"""Roster CSV parsing: all lines or none, every problem named by line and column (pure)."""

from __future__ import annotations

import pytest

from hub.records import PatientStatus
from pipelines.record.core.roster import parse_roster
from tests.builders import ROSTER_HEADER, TEST_INS, roster_line, with_key


def test_valid_roster_gives_one_record_per_line() -> None:
    other = with_key("1850799123456")
    result = parse_roster(ROSTER_HEADER + roster_line() + roster_line(other, status="opposed"))
    assert result.ok
    assert [(p.ins, p.status) for p in result.patients] == [(TEST_INS, PatientStatus.ACTIVE),
                                                            (other, PatientStatus.OPPOSED)]
    assert result.patients[0].postal_address == "1 rue de Test, 75000 Paris"


def test_extra_columns_are_allowed_and_bom_ignored() -> None:
    text = "\ufeff" + ROSTER_HEADER.strip() + ",extra\n" + roster_line().strip() + ",whatever\n"
    assert parse_roster(text).ok


def test_missing_column_is_named() -> None:
    result = parse_roster("ins,oid\n" + TEST_INS + ",1.2.250.1.213.1.4.10\n")
    assert not result.ok and "birth_name" in str(result.problems[0])


def test_every_bad_line_is_reported_and_nothing_is_returned_as_valid_for_them() -> None:
    bad_key = TEST_INS[:13] + "00"
    text = ROSTER_HEADER + roster_line() + roster_line(bad_key) + roster_line(status="sleeping")
    result = parse_roster(text)
    assert not result.ok
    where = {(p.line, p.column) for p in result.problems}
    assert (3, "ins") in where and (4, "status") in where
    assert all(TEST_INS not in str(p) for p in result.problems)  # no identity echoed in errors


def test_corsica_ins_is_accepted_with_its_key() -> None:
    corsica = with_key("185072A123456")
    assert parse_roster(ROSTER_HEADER + roster_line(corsica)).ok


def test_vitale_serial_column_is_optional_validated_and_kept_out_of_the_record() -> None:
    header = ROSTER_HEADER.strip() + ",vitale_serial\n"
    other = with_key("1850799123456")
    result = parse_roster(header + roster_line().strip() + ",1234 5678 90\n" + roster_line(other).strip() + ",\n")
    assert result.ok
    assert dict(result.vitale) == {TEST_INS: "1234567890"}
    assert all("1234567890" not in str(p.to_dict()) for p in result.patients)
    bad = parse_roster(header + roster_line().strip() + ",12#SECRET#34\n")
    assert [(p.line, p.column) for p in bad.problems] == [(2, "vitale_serial")]
    assert "SECRET" not in str(bad.problems[0])
    assert parse_roster(ROSTER_HEADER + roster_line()).vitale == {}


def test_birth_dates_are_kept_as_yyyy_mm_dd() -> None:
    line = roster_line().replace("1979-03-01", "19790301")
    assert parse_roster(ROSTER_HEADER + line).patients[0].birth_date == "1979-03-01"


@pytest.mark.parametrize(("line", "where"), [
    (roster_line().replace("TEST", "=1+1"), (2, "birth_name")),
    (roster_line().replace("Jeanne", "@SUM(A1)"), (2, "given_names")),
    (roster_line().replace(",51215,", ",-2,"), (2, "birth_place")),
    (roster_line().replace("+336", "=336"), (2, "phone")),
    (roster_line().replace("TEST", "A\x00B"), (2, "birth_name")),
    (roster_line().replace("TEST", "x" * 1001), (2, "birth_name")),
    (roster_line() + roster_line(), (3, "ins")),
    (roster_line().replace("TEST", "x" * 200_000), (2, "*")),
])
def test_a_hostile_cell_rejects_the_file_naming_line_and_column_never_the_value(line: str,
                                                                                where: tuple[int, str]) -> None:
    result = parse_roster(ROSTER_HEADER + line)
    assert not result.ok  # import_roster imports nothing then
    assert [(p.line, p.column) for p in result.problems] == [where]
    assert "1+1" not in str(result.problems[0]) and "SUM" not in str(result.problems[0])


def test_a_phone_may_start_with_plus_and_an_address_may_span_lines() -> None:
    line = roster_line().replace('"1 rue de Test,', '"1 rue de Test\nBâtiment B,')
    result = parse_roster(ROSTER_HEADER + line)
    assert result.ok and result.patients[0].phone == "+33600000000" and "\n" in result.patients[0].postal_address
