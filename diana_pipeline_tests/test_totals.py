"""Reading totals back: one record per window, the newest window's totals, expected totals."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from diana_pipeline.totals import expected_totals, latest_records, latest_totals, totals_of

TEN, ELEVEN = datetime(2026, 11, 21, 10), datetime(2026, 11, 21, 11)
MINUTE = timedelta(minutes=1)


def record(
    variant: str, window_start: datetime, computed: datetime, exposures: int, successes: int
) -> dict[str, object]:
    return {
        "test_id": "t",
        "variant": variant,
        "window_start": window_start,
        "timestamp": computed,
        "exposures_total": exposures,
        "successes_total": successes,
    }


def test_latest_records_keep_the_last_given_per_window_in_first_seen_order() -> None:
    first = record("a", TEN, TEN + MINUTE, 5, 1)
    other = record("b", TEN, TEN + MINUTE, 6, 2)
    again = record("a", TEN, TEN + 2 * MINUTE, 7, 3)
    later = record("a", ELEVEN, ELEVEN + MINUTE, 9, 4)
    assert latest_records([first, other, again, later]) == [again, other, later]


def test_latest_totals_take_the_newest_window_and_its_newest_refresh() -> None:
    records = [
        # Out of order, as a DynamoDB scan gives them back; window 11:00 refreshed once.
        record("a", ELEVEN, ELEVEN + 5 * MINUTE, 30, 9),
        record("a", ELEVEN, ELEVEN + MINUTE, 20, 4),
        record("a", TEN, TEN + MINUTE, 10, 2),
        record("b", TEN, TEN + MINUTE, 11, 3),
    ]
    assert latest_totals(records) == Counter(
        {("t", "a", "exposures"): 30, ("t", "a", "successes"): 9,
         ("t", "b", "exposures"): 11, ("t", "b", "successes"): 3}
    )  # fmt: skip


def test_totals_of_rows_and_expected_totals_of_a_traffic_summary() -> None:
    baseline = totals_of([record("a", TEN, TEN, 10, 2)])
    summary = {
        "expected_counts": [
            {"test_id": "t", "variant": "a", "exposed_users": 5, "converted_users": 1},
            {"test_id": "t", "variant": "b", "exposed_users": 4, "converted_users": 0},
        ]
    }
    assert expected_totals(baseline, summary) == Counter(
        {("t", "a", "exposures"): 15, ("t", "a", "successes"): 3,
         ("t", "b", "exposures"): 4, ("t", "b", "successes"): 0}
    )  # fmt: skip
    assert baseline == Counter({("t", "a", "exposures"): 10, ("t", "a", "successes"): 2})


def test_other_metrics_neither_replace_nor_count_as_the_conversion() -> None:
    clicked = {**record("a", TEN, TEN + MINUTE, 10, 2), "metric": "clicked"}
    revenue = {**record("a", TEN, TEN + MINUTE, 10, 0), "metric": "revenue",
               "successes_total": None}  # fmt: skip
    assert latest_records([clicked, revenue]) == [clicked, revenue]
    expected = Counter({("t", "a", "exposures"): 10, ("t", "a", "successes"): 2})
    assert latest_totals([clicked, revenue], conversions={"t": "clicked"}) == expected
    assert latest_totals([{**clicked, "metric": "conversion"}, revenue]) == expected
