"""Nothing outside the tests imports from the tests: what the benchmarks and the reliability
suite share with them lives in diana_pipeline.harness; nor do they borrow from the demo."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from diana_pipeline.harness.paths import REPO_ROOT

OUTSIDE_THE_TESTS = ["diana_pipeline", "benchmarks", "reliability"]


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every absolute import in a file, `from x import y` as x."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def imports_of(folders: list[str], package: str) -> list[str]:
    """`file:line module` for each import of `package` or of one of its modules."""
    return [
        f"{path.relative_to(REPO_ROOT)}:{line} {module}"
        for folder in folders
        for path in sorted((REPO_ROOT / folder).rglob("*.py"))
        for line, module in imported_modules(path)
        if module == package or module.startswith(package + ".")
    ]


def test_nothing_outside_the_tests_imports_from_the_tests() -> None:
    assert imports_of(OUTSIDE_THE_TESTS, "diana_pipeline_tests") == []


def test_benchmarks_and_reliability_do_not_borrow_from_the_demo() -> None:
    assert imports_of(["benchmarks", "reliability"], "diana_pipeline.cli.demo") == []


def test_the_check_sees_an_import_in_each_form(tmp_path: Path) -> None:
    module = tmp_path / "borrower.py"
    module.write_text(
        "import diana_pipeline_tests.conftest\n"
        "from diana_pipeline_tests import conftest\n"
        "from diana_pipeline_tests.test_config import BAD_CASES\n"
        "from diana_pipeline_testsuite import x\n"
    )
    found = [m for _, m in imported_modules(module) if m.split(".")[0] == "diana_pipeline_tests"]
    assert found == [
        "diana_pipeline_tests.conftest",
        "diana_pipeline_tests",
        "diana_pipeline_tests.test_config",
    ]
