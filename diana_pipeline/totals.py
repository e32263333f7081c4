"""Reading totals back: exposed and converted users per test and variant, cumulative, as a
sink's records or a traffic summary say them. The demo, the end-to-end tests and the
reliability suite compare the two."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TypeVar

from diana_pipeline.config import ALL_SEGMENTS, DEFAULT_METRIC

# (test_id, variant, "exposures" | "successes") -> users
Totals = Counter[tuple[str, str, str]]

R = TypeVar("R", bound=Mapping[str, object])


def latest_records(records: Iterable[R]) -> list[R]:
    """One record per test, metric, segment, variant and window: of a window written more than once
    (refreshed, or kept in two files) the last one given counts. In the order each was first
    seen."""
    latest: dict[tuple[object, ...], R] = {}
    for record in records:
        key = (record["test_id"], record.get("metric"), record.get("dimension"),
               record.get("segment"), record["variant"], record["window_start"])  # fmt: skip
        latest[key] = record
    return list(latest.values())


def latest_totals(
    records: Iterable[Mapping[str, object]], conversions: Mapping[str, str] | None = None
) -> Totals:
    """Per variant, exposed and converted users at the latest window (totals are cumulative),
    from the records of each test's conversion (named in `conversions` by test, else
    `conversion`); a record written twice (a window refreshed) counts once: the newest
    timestamp wins."""
    names = conversions or {}
    records = [
        r
        for r in records
        if r.get("metric") in (None, names.get(str(r["test_id"]), DEFAULT_METRIC))
        and r.get("dimension") in (None, ALL_SEGMENTS)
    ]
    # A sink gives its records back in no particular order: put them in the order written.
    written = sorted(records, key=lambda r: (r["window_start"], r["timestamp"]))  # type: ignore[index]
    newest: dict[tuple[object, object], Mapping[str, object]] = {}
    for record in latest_records(written):
        newest[(record["test_id"], record["variant"])] = record
    return totals_of(newest.values())


def totals_of(rows: Iterable[Mapping[str, object]]) -> Totals:
    """The totals of rows that each hold one variant's `exposures_total` and
    `successes_total` (a window's records, or the latest_window metadata of a run)."""
    totals: Totals = Counter()
    for row in rows:
        key = (str(row["test_id"]), str(row["variant"]))
        totals[(*key, "exposures")] = int(row["exposures_total"])  # type: ignore[call-overload]
        totals[(*key, "successes")] = int(row["successes_total"])  # type: ignore[call-overload]
    return totals


def expected_totals(baseline: Totals, summary: Mapping[str, object]) -> Totals:
    """`baseline` plus the users a traffic summary says it sent (its expected_counts)."""
    expected = Counter(baseline)
    for row in summary["expected_counts"]:  # type: ignore[attr-defined]
        expected[(row["test_id"], row["variant"], "exposures")] += row["exposed_users"]
        expected[(row["test_id"], row["variant"], "successes")] += row["converted_users"]
    return expected
