"""The size bar of issue 13: no module over 400 lines, no class over 200, no function over 40.

Walks the source packages with `ast` (no import) and lists every offender as file:line, so a failure is the
list of work.  A class or function is measured from its `def`/`class` line to its last line (decorators
excluded); nested functions and methods are measured on their own as well as inside their parent.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("hub", "connectors", "pipelines", "storage", "config", "meshub")
MAX_MODULE, MAX_CLASS, MAX_FUNCTION = 400, 200, 40


def _sources() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def _span(node: ast.AST) -> int:
    end = getattr(node, "end_lineno", None) or getattr(node, "lineno", 0)
    return int(end) - int(getattr(node, "lineno", 0)) + 1


def _offenders() -> list[str]:
    found = []
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(ROOT)
        lines = len(text.splitlines())
        if lines > MAX_MODULE:
            found.append(f"{where}:1 module has {lines} lines (max {MAX_MODULE})")
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, ast.ClassDef) and _span(node) > MAX_CLASS:
                found.append(f"{where}:{node.lineno} class {node.name} has {_span(node)} lines (max {MAX_CLASS})")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _span(node) > MAX_FUNCTION:
                found.append(f"{where}:{node.lineno} function {node.name} has {_span(node)} lines "
                             f"(max {MAX_FUNCTION})")
    return found


def test_sources_are_found() -> None:
    assert len(list(_sources())) > 50


def test_no_module_class_or_function_over_the_bar() -> None:
    offenders = _offenders()
    assert not offenders, "over the size bar:\n" + "\n".join(offenders)
