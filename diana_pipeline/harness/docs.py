"""The sections that benchmarks and reliability scenarios write into docs/: each command
replaces its own section of a page, between markers, and keeps the others."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy

from diana_pipeline.harness.paths import REPO_ROOT


@dataclass(frozen=True)
class Page:
    path: Path
    new_page: str  # what the page starts with when it does not exist yet


BENCHMARKS_PAGE = Page(
    REPO_ROOT / "docs" / "benchmarks.md",
    "# Benchmarks\n\nEvery figure comes with its baseline, measured in the same run.\n",
)
RELIABILITY_PAGE = Page(REPO_ROOT / "docs" / "reliability.md", "# Reliability\n")


def machine() -> str:
    """The CPU, its cores and the versions that the figures depend on."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"numpy {np.__version__}, scipy {scipy.__version__}"
    )


def replace_section(page: Page, name: str, body: str) -> None:
    """Write the section `name` of `page` (between its <!-- name:start/end --> markers, at
    the end when it has none yet), keeping the others."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = f"{start}\n{body}\n{end}"
    page.path.parent.mkdir(exist_ok=True)
    text = page.path.read_text() if page.path.exists() else page.new_page
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    page.path.write_text(text)


def write_section(page: Page, name: str, title: str, command: str, *paragraphs: str) -> None:
    """The section `name`: its title, when and on what it was measured, the command that
    reproduces it, then its paragraphs (text, tables)."""
    lines = [
        f"## {title}",
        "",
        f"Measured {dt.date.today().isoformat()} on {machine()}.",
        f"Command: `{command}`",
    ]
    for paragraph in paragraphs:
        lines += ["", paragraph]
    replace_section(page, name, "\n".join(lines))
