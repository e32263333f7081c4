"""Sections of docs/ pages: each command replaces its own and keeps the others."""

from __future__ import annotations

from pathlib import Path

from diana_pipeline.harness.docs import Page, replace_section, write_section


def test_a_section_is_replaced_in_place_and_the_others_kept(tmp_path: Path) -> None:
    page = Page(tmp_path / "docs" / "page.md", "# Page\n")
    replace_section(page, "one", "first")
    replace_section(page, "two", "second")
    replace_section(page, "one", "first, again")
    assert page.path.read_text() == (
        "# Page\n\n<!-- one:start -->\nfirst, again\n<!-- one:end -->\n\n"
        "<!-- two:start -->\nsecond\n<!-- two:end -->\n"
    )


def test_a_written_section_says_when_on_what_and_how_it_was_measured(tmp_path: Path) -> None:
    page = Page(tmp_path / "page.md", "# Page\n")
    write_section(page, "bench", "A benchmark", "python -m bench --fast", "Text.", "| t |")
    section = page.path.read_text().split("<!-- bench:start -->\n")[1]
    title, blank, measured, command, *rest = section.splitlines()
    assert (title, blank) == ("## A benchmark", "")
    assert measured.startswith("Measured ") and " cores; Python " in measured
    assert command == "Command: `python -m bench --fast`"
    assert rest == ["", "Text.", "", "| t |", "<!-- bench:end -->"]
