"""The README's "A tour" block, run as written against a fresh embedded hub, so the tour cannot rot.

The block is read from README.md, not copied here.  What is substituted, and only that: the launcher
(`M=scripts/meshub` becomes this interpreter's `python -m meshub.cli`, so the test never reinstalls the
venv) and the working folder: a fresh temporary folder holding `examples/` (a link to the project's)
and the hub's default data dir `./meshub-data`, as a user running the tour from the project's root has.
Each command must exit as its comment says (`# ... exit N ...`, else 0), and the commands the tour is
about must print what the tour promises.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.test_embedded import embedded_hub
from tests.services import EXAMPLES, FIXTURES_CDA, free_port
from tests.unit.test_fixtures import EXPECTED

pytestmark = pytest.mark.integration
README = EXAMPLES.parent / "README.md"
LAUNCHER = "M=scripts/meshub"
EXIT = re.compile(r"#.*\bexit (\d+)\b")


def tour_commands(readme: str) -> list[str]:
    """The command lines of the first ```sh block of the "A tour" section (comment-only lines dropped)."""
    section = readme.split("\n## A tour\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("\n```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def expected_exit(line: str) -> int:
    found = EXIT.search(line)
    return int(found.group(1)) if found else 0


def test_the_tour_is_runnable_text() -> None:
    """No placeholder to fill in, no file outside the repository, every example it names exists."""
    lines = tour_commands(README.read_text())
    assert lines[0] == LAUNCHER
    for line in lines:
        assert not re.search(r"<[a-z ]+>", line) and "../" not in line and not line.endswith("\\"), line
        for word in shlex.split(line, comments=True):
            if word.startswith("examples/"):
                assert list(EXAMPLES.parent.glob(word)), f"{word} (in {line!r}) names no file"


def _imported(out: str, work: Path) -> None:
    assert "imported 2 patient(s)" in out, out


def _submitted(out: str, work: Path) -> None:
    rows = {Path(row["file"]).name: row for row in map(json.loads, out.splitlines())}
    assert set(rows) == set(EXPECTED)
    for name, expected in EXPECTED.items():
        row = rows[name]
        if expected[0] == "accept":
            assert (row["status"], row["category"]) == ("indexed", expected[1]), row
        else:
            assert row["status"] == "rejected" and expected[1] in {f["rule"] for f in row["findings"]}, row


def _listed(out: str, work: Path) -> None:
    assert len(out.splitlines()) == 15, out  # the 15 valid examples of 279035121518989


def _filtered(out: str, work: Path) -> None:
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows and all(r["category"] == "BIOLOGIE" and r["service_date"] >= "2024-01-01" for r in rows), rows


def _copied(out: str, work: Path) -> None:
    assert (work / "copy.xml").read_bytes() == (FIXTURES_CDA / "BIO-CR-BIO_2024.01_TSH_1.xml").read_bytes()


def _rejected(out: str, work: Path) -> None:
    assert "rejected" in out and "[ins.key]" in out, out


#: which tour line (a pattern) -> what that command must have printed on stdout, or done
CHECKS: dict[str, Callable[[str, Path], None]] = {
    r"\$M patients import examples/roster\.csv\b": _imported,
    r"\$M submit examples/cda/\*\.xml --wait --json\b": _submitted,
    r"\$M documents 279035121518989\s*(#|$)": _listed,
    r"\$M documents 279035121518989 --category BIOLOGIE --from 2024-01-01 --json\b": _filtered,
    r"\$M get \S+ -o copy\.xml\b": _copied,
    r'\$M status "\$sub" --wait\b': _rejected,
}


def _script(lines: list[str], tmp: Path) -> str:
    """One bash script: each line's stdout/stderr/exit status to files (a brace group keeps `sub=`)."""
    launcher = f"M={shlex.quote(f'{shlex.quote(sys.executable)} -m meshub.cli')}"
    body = [launcher if line == LAUNCHER else f"{{ {line}\n}} >{tmp}/out.{i} 2>{tmp}/err.{i}; echo $? >{tmp}/rc.{i}"
            for i, line in enumerate(lines)]
    return "\n".join(body) + "\n"


def test_the_readme_tour_runs_as_written_on_a_fresh_embedded_hub(tmp_path: Path) -> None:
    lines = tour_commands(README.read_text())
    work = tmp_path / "checkout"
    work.mkdir()
    (work / "examples").symlink_to(EXAMPLES)
    config = tmp_path / "meshub.toml"
    config.write_text(f"[s3]\nembedded_port = {free_port()}\n")
    with embedded_hub(Path("meshub-data"), config, cwd=work):
        done = subprocess.run(["bash", "-c", _script(lines, tmp_path)], cwd=work, capture_output=True, text=True,
                              timeout=600)
    assert done.returncode == 0, done.stderr
    checked = set()
    for i, line in enumerate(lines):
        if line == LAUNCHER:
            continue
        out, err = (tmp_path / f"out.{i}").read_text(), (tmp_path / f"err.{i}").read_text()
        rc = int((tmp_path / f"rc.{i}").read_text())
        assert rc == expected_exit(line), (line, rc, out[-2000:], err[-2000:])
        for pattern, check in CHECKS.items():
            if re.search(pattern, line):
                check(out, work)
                checked.add(pattern)
    assert checked == set(CHECKS), f"the tour lost a command it is about: {set(CHECKS) - checked}"
