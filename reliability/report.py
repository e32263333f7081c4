"""docs/reliability.md: each scenario writes its own section, keeping the others."""

from __future__ import annotations

import time

from benchmarks.stats_benchmark import machine, replace_section
from diana_pipeline.harness.paths import REPO_ROOT

DOCS = REPO_ROOT / "docs" / "reliability.md"


def write_section(name: str, title: str, command: str, *paragraphs: str) -> None:
    """The section `name`: its title, when and on what it was measured, the command that
    reproduces it, then its paragraphs (text, tables)."""
    lines = [
        f"## {title}",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {machine()}.",
        f"Command: `{command}`",
    ]
    for paragraph in paragraphs:
        lines += ["", paragraph]
    replace_section(name, "\n".join(lines), DOCS)
