"""docs/faults.md holds one table, fault -> what happens -> what is lost -> recovery -> the test that proves
it. The table and the suite must match: every test the table names exists, and every fault test in
tests/faults/ is named by a row."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import REPO

PAGE = REPO / "docs/faults.md"
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
COLUMNS = ["fault", "what happens", "what is lost", "how to recover", "the test that proves it"]


def table() -> list[list[str]]:
    """The rows of the page's one table (header first), cells stripped."""
    lines = PAGE.read_text().splitlines()
    separators = [i for i, line in enumerate(lines) if re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line)]
    assert len(separators) == 1, f"{PAGE}: expected exactly one table, found {len(separators)}"
    start = separators[0] - 1
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        if line is not lines[separators[0]]:
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def named_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_the_table_names_existing_tests_and_every_fault_test():
    header, *rows = table()
    assert [h.lower() for h in header] == COLUMNS
    named: set[tuple[str, str]] = set()
    for row in rows:
        assert len(row) == len(COLUMNS), f"{PAGE}: a row with {len(row)} cells: {row}"
        assert all(row), f"{PAGE}: an empty cell in {row[0]!r}"
        refs = TEST_REF.findall(row[-1])
        assert refs, f"{PAGE}: row {row[0]!r} names no test as `tests/...py::test_name`"
        named |= set(refs)
    for path, name in sorted(named):
        assert (REPO / path).is_file(), f"{PAGE}: {path} does not exist"
        assert name in named_tests(REPO / path), f"{PAGE}: {path} has no test {name}"
    here = Path(__file__).resolve()
    suite = {
        (str(p.relative_to(REPO)), name)
        for p in sorted(here.parent.glob("test_*.py"))
        if p != here
        for name in named_tests(p)
    }
    assert suite - named == set(), f"fault tests missing from {PAGE}: {sorted(suite - named)}"
