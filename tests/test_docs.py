"""docs/failure-codes.md stays complete: every failure code has a row, and every test it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from cluster.errors import CLUSTER_ERROR_CODES
from segment1b.errors import FAILURE_CODES

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "failure-codes.md"
TEST_REF = re.compile(r"`(tests/test_\w+\.py)::(test_\w+)`")


def _code_rows(text: str) -> set[str]:
    """Codes that start a table row: | `CODE` | ..."""
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", text, flags=re.M))


def _tests_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.name.startswith("test_")}


@pytest.mark.parametrize("codes", [FAILURE_CODES, CLUSTER_ERROR_CODES], ids=["segment1b", "cluster"])
def test_every_code_has_a_row(codes):
    rows = _code_rows(DOC.read_text())
    missing = sorted(set(codes) - rows)
    assert not missing, f"docs/failure-codes.md has no row for {missing}"


def test_the_doc_names_no_unknown_code():
    unknown = sorted(_code_rows(DOC.read_text()) - set(FAILURE_CODES) - set(CLUSTER_ERROR_CODES))
    assert not unknown, f"docs/failure-codes.md has rows for codes that do not exist: {unknown}"


def test_every_test_named_exists():
    refs = TEST_REF.findall(DOC.read_text())
    assert len(refs) > 50
    missing = []
    for file, name in sorted(set(refs)):
        path = ROOT / file
        if not path.is_file() or name not in _tests_of(path):
            missing.append(f"{file}::{name}")
    assert not missing, f"docs/failure-codes.md names tests that do not exist: {missing}"


def test_every_code_row_names_a_test():
    for line in DOC.read_text().splitlines():
        m = re.match(r"^\| `([A-Z][A-Z0-9_]+)` \|", line)
        if m:
            assert TEST_REF.search(line), f"the row of {m.group(1)} names no test"


def test_at_least_25_bad_input_cases():
    section = DOC.read_text().split("## 2.")[1].split("## 3.")[0]
    cases = re.findall(r"^\| (\d+) \|", section, flags=re.M)
    assert len(cases) >= 25 and [int(c) for c in cases] == list(range(1, len(cases) + 1))
