"""Markdown tables: header, alignment row, cells, and the mistakes they refuse."""

from __future__ import annotations

import pytest

from diana_pipeline.markdown import table


def test_a_table_with_right_aligned_numbers() -> None:
    text = table(("test", "users", "rate"), [("t", 1200, 0.025833), ("u", 7, 1.0)], align="lrr")
    assert text.splitlines() == [
        "| test | users | rate |",
        "|---|---:|---:|",
        "| t | 1200 | 0.02583 |",
        "| u | 7 | 1 |",
    ]


def test_columns_are_left_aligned_by_default_and_a_table_may_have_no_rows() -> None:
    assert table(["a", "b"], []) == "| a | b |\n|---|---|"


def test_a_short_row_is_refused() -> None:
    with pytest.raises(ValueError, match="has 1 cells for 2 columns"):
        table(("a", "b"), [("x", "y"), ("z",)])


@pytest.mark.parametrize("align", ["l", "lrl", "lc"])
def test_align_needs_one_l_or_r_per_column(align: str) -> None:
    with pytest.raises(ValueError, match="align needs one of l/r per column"):
        table(("a", "b"), [], align=align)
