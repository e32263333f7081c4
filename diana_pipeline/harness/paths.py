"""Where the repository's files are, for code that runs from a checkout (tests, benchmarks,
the reliability suite): the installed package is an editable install of this tree."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CONFIG = REPO_ROOT / "experiments.yaml"
