"""diana_pipeline.stats as a whole: what each of its modules imports, and the public names
that callers reach through the package."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil

from diana_pipeline import stats


def _imported_outside_the_package(module_name: str) -> set[str]:
    """Top-level names of what a module imports, leaving out the package's own modules."""
    tree = ast.parse(inspect.getsource(importlib.import_module(module_name)))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module or "")
        elif isinstance(node, ast.ImportFrom):
            imported.add(stats.__name__)  # relative: within the package
    return {
        name.split(".")[0]
        for name in imported
        if name != stats.__name__ and not name.startswith(f"{stats.__name__}.")
    }


def test_no_stats_module_imports_dagster() -> None:
    modules = [
        stats.__name__,
        *(f"{stats.__name__}.{info.name}" for info in pkgutil.iter_modules(stats.__path__)),
    ]
    # Not vacuous: the submodules are found, not only the package's __init__.
    assert {f"{stats.__name__}.{name}" for name in ("quadrature", "beta", "decision")} <= set(
        modules
    )
    for module_name in modules:
        imported = _imported_outside_the_package(module_name)
        assert "dagster" not in imported, module_name
        assert imported <= {
            "__future__",
            "collections",
            "dataclasses",
            "typing",
            "numpy",
            "scipy",
        }, module_name


def test_public_names_stay_importable_from_the_package() -> None:
    for name in (
        "prob_best",
        "expected_loss",
        "prob_best_and_expected_loss",
        "prob_superiority",
        "credible_interval",
        "uplift_interval",
        "srm_pvalue",
        "thompson_allocation",
        "decide",
        "Decision",
        "Verdict",
        "PROB_BEST_TO_WIN",
        "FloatArray",
    ):
        assert name in stats.__all__
        assert hasattr(stats, name)
    assert stats.PROB_BEST_TO_WIN == 0.95
