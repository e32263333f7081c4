"""diana_pipeline.stats as a whole: what it imports."""

from __future__ import annotations

from diana_pipeline import stats


def test_stats_module_does_not_import_dagster() -> None:
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(stats))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert "dagster" not in imported
    assert imported <= {"__future__", "dataclasses", "typing", "numpy", "scipy"}
