"""The examples the project ships (examples/): the ANS documents are the ones their SOURCE.md names,
byte for byte; the example roster holds exactly the patients of those documents whose INS is valid,
with the documents' identity traits; and nothing points at a folder outside the repository any more.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from lxml import etree

from hub.ins import check_ins
from pipelines.record.core.roster import INS_OIDS, VITALE_COLUMN, parse_roster
from tests.services import EXAMPLE_ROSTER, EXAMPLES, FIXTURES_CDA

ROOT = EXAMPLES.parent
NS = {"h": "urn:hl7-org:v3"}
SOURCE_ROW = re.compile(r"^\| `(?P<name>[^`]+\.xml)` \| (?P<size>\d+) \| `(?P<sha>[0-9a-f]{64})` \|$")


def _record_target(path: Path) -> dict[str, str]:
    """The first recordTarget's INS (root, extension) and the identity traits a roster line carries."""
    role = etree.parse(str(path)).find("h:recordTarget/h:patientRole", NS)
    assert role is not None, path.name
    ins = role.find("h:id", NS)
    patient = role.find("h:patient", NS)
    assert ins is not None and patient is not None, path.name
    family = patient.find("h:name/h:family[@qualifier='BR']", NS)
    sex, birth = patient.find("h:administrativeGenderCode", NS), patient.find("h:birthTime", NS)
    born = (birth.get("value") or "") if birth is not None else ""
    return {"ins": ins.get("extension") or "", "oid": ins.get("root") or "",
            "birth_name": (family.text or "").strip() if family is not None else "",
            "sex": (sex.get("code") or "") if sex is not None else "",
            "birth_date": f"{born[:4]}-{born[4:6]}-{born[6:8]}"}


def test_source_md_lists_every_example_with_its_size_and_sha256() -> None:
    rows = {m["name"]: (int(m["size"]), m["sha"]) for line in (FIXTURES_CDA / "SOURCE.md").read_text().splitlines()
            if (m := SOURCE_ROW.match(line))}
    files = {p.name: p.read_bytes() for p in FIXTURES_CDA.glob("*.xml")}
    assert len(files) == 18 and set(rows) == set(files)
    for name, data in files.items():  # a checkout that rewrote line ends (CRLF) fails here
        assert rows[name] == (len(data), hashlib.sha256(data).hexdigest()), name


def test_source_md_names_the_upstream_commit_and_the_licence_situation() -> None:
    text = (FIXTURES_CDA / "SOURCE.md").read_text()
    assert "https://github.com/ansforge/TestContenuCDA-3-0" in text
    assert "7cd489b39368809df9bcf2cfef5e5d6354438a02" in text and "**Licence**" in text


def test_the_roster_holds_exactly_the_valid_patients_of_the_examples_with_their_traits() -> None:
    result = parse_roster(EXAMPLE_ROSTER.read_text())
    assert result.ok, [str(p) for p in result.problems]  # the whole file imports
    roster = {p.ins: p for p in result.patients}
    valid: dict[str, dict[str, str]] = {}
    wrong: set[str] = set()
    for path in sorted(FIXTURES_CDA.glob("*.xml")):
        target = _record_target(path)
        if check_ins(target["ins"], target["oid"], location="recordTarget", accepted_oids=INS_OIDS):
            wrong.add(target["ins"])
        else:
            valid.setdefault(target["ins"], target)
    assert wrong == {"223042545611404"}, "the rejection example (CSE-CS8, wrong key on purpose) is kept"
    assert set(roster) == set(valid), "one roster line per patient of a valid example, no other"
    for ins, target in valid.items():
        record = roster[ins]
        assert (record.oid, record.birth_name, record.birth_date, record.sex) == (
            target["oid"], target["birth_name"], target["birth_date"], target["sex"]), ins
        assert record.email.endswith("@example.org") and record.postal_address, ins
    assert set(result.vitale) == set(roster), f"every example patient has a {VITALE_COLUMN}"


def test_no_file_points_at_the_old_shared_folder_outside_the_repository() -> None:
    """The tests, the tour and the docs read a `shared` folder beside the checkout, which a fresh clone lacks."""
    pattern = re.compile(r"\.\./" + "shared" + r"\b|/ \"" + "shared\"")
    tracked = [ROOT / name for name in ("README.md", "Dockerfile", "docker-compose.yml", "pyproject.toml")]
    for folder in ("hub", "connectors", "pipelines", "storage", "config", "meshub", "tests", "benchmarks",
                   "scripts", "docs", "examples", ".ci"):
        tracked += [p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix not in {".pyc", ".xml"}]
    hits = [f"{p.relative_to(ROOT)}:{n}" for p in tracked if p.exists()
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if pattern.search(line)]
    assert hits == []
