"""hub.ins (the edges' INS check: activation, opposition, code request) agrees with intake's rules
(hub.ins): Corsican 2A/2B matricules with their key, and nothing but ASCII digits."""

from __future__ import annotations

import pytest

from hub.ins import check_ins, ins_key, valid_matricule

OID = "1.2.250.1.213.1.4.8"


def keyed(nir13: str) -> str:
    return f"{nir13}{ins_key(nir13):02d}"


CASES = [
    keyed("2790375123456"), keyed("185022A123456"), keyed("291122B050123"), keyed("185022A999999"),
    "185022A12345600", "185022C12345600", "1852A1234567800",
    keyed("2790375123456")[:-2] + "00", "27903751234567", "2790375123456789", "",
    "２７９０３７５１２３４５６" + "00", "٢٧٩٠٣٧٥١٢٣٤٥٦٧٨", keyed("2790375123456") + " ",
]


@pytest.mark.parametrize("text", CASES)
def test_the_edges_accept_exactly_what_intake_accepts(text: str) -> None:
    intake_ok = check_ins(text, OID, location="x", accepted_oids=frozenset({OID})) == () and text.isascii()
    assert valid_matricule(text) is intake_ok


def test_corsican_matricules_read_2a_as_19_and_2b_as_18() -> None:
    a, b = keyed("185022A123456"), keyed("291122B050123")
    assert valid_matricule(a) and valid_matricule(b)
    assert int(a[13:]) == 97 - int("1850219123456") % 97
    assert int(b[13:]) == 97 - int("2911218050123") % 97
    assert not valid_matricule(a[:5] + "2B" + a[7:])  # the key is bound to the département
