"""Issue 12, robustness of the INS over HTTP: non-ASCII digits are an `ins.format` error at intake and in the
roster (not `patient.unknown`, not imported), and an INS under an OID outside the family is `ins.oid` (904)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests import builders
from tests.integration.hub_harness import RunningHub

pytestmark = pytest.mark.integration

MINIMAL = (Path(__file__).parents[1] / "data" / "minimal_cda.xml").read_text(encoding="utf-8")
FULL_WIDTH = builders.TEST_INS.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
ARABIC_INDIC = builders.TEST_INS.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
INS_ID = f'<id root="{builders.TEST_OID}" extension="{builders.TEST_INS}"/>'


def submit(hub: RunningHub, body: str) -> dict[str, Any]:
    with hub.client() as client:
        accepted = client.post("/v1/documents", content=body.encode(), headers={"Content-Type": "application/xml"})
        assert accepted.status_code == 202, accepted.text
        final = client.get(f"/v1/submissions/{accepted.json()['submission']}", params={"wait": 30}).json()
    assert final["status"] != "pending"
    return dict(final)


def import_roster(hub: RunningHub, *lines: str) -> Any:
    with hub.admin() as admin:
        return admin.post("/v1/patients/import", content=builders.ROSTER_HEADER + "".join(lines))


@pytest.mark.parametrize("ins", [FULL_WIDTH, ARABIC_INDIC], ids=["full-width", "arabic-indic"])
def test_an_ins_in_non_ascii_digits_is_a_format_error_at_intake(stack: RunningHub, ins: str) -> None:
    assert import_roster(stack, builders.roster_line()).status_code == 200  # the ASCII twin is known
    record = submit(stack, MINIMAL.replace(INS_ID, f'<id root="{builders.TEST_OID}" extension="{ins}"/>'))
    assert record["status"] == "rejected"
    rules = {(f["rule"], f["code"]) for f in record["findings"]}
    assert ("ins.format", "905") in rules and "patient.unknown" not in {r for r, _ in rules}, rules


@pytest.mark.parametrize("ins", [FULL_WIDTH, ARABIC_INDIC], ids=["full-width", "arabic-indic"])
def test_an_ins_in_non_ascii_digits_is_refused_by_the_roster(stack: RunningHub, ins: str) -> None:
    response = import_roster(stack, builders.roster_line(ins))
    assert response.status_code == 422, response.text
    assert "line 2" in response.json()["error"]["message_en"]
    with stack.admin() as admin:
        malformed = admin.get(f"/v1/patients/{ins}/documents")  # not an INS: refused at the door (params.InsPath)
        assert malformed.status_code == 422 and malformed.json()["error"]["code"] == "param.out-of-range"
        assert admin.get(f"/v1/patients/{builders.TEST_INS}/documents").status_code in (403, 404)


def test_an_ins_under_an_oid_outside_the_family_is_ins_oid_904(stack: RunningHub) -> None:
    assert import_roster(stack, builders.roster_line()).status_code == 200
    record = submit(stack, MINIMAL.replace(INS_ID, f'<id root="1.2.3.4.5" extension="{builders.TEST_INS}"/>'))
    assert record["status"] == "rejected"
    (finding,) = [f for f in record["findings"] if f["rule"].startswith("ins.")]
    assert (finding["rule"], finding["code"]) == ("ins.oid", "904")
    assert finding["location"] == "/ClinicalDocument/recordTarget/patientRole/id"
    assert builders.TEST_INS not in finding["message_en"] + finding["message_fr"]
