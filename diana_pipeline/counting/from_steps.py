"""Counts and quality figures at window ends, read from the stored steps (counting/state.py):
a refresh reads O(windows) rows whatever the history."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb

from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.counting import state
from diana_pipeline.counting.figures import (
    MetricSums,
    Quality,
    SegmentCounts,
    VariantCounts,
    WindowCounts,
)
from diana_pipeline.counting.rules import EXPOSURES, QUALITY_MEASURES, SUCCESSES, CountingRules


def _steps_before(
    connection: duckdb.DuckDBPyConnection,
    table: str,
    keys: str,
    where: str,
    params: list[object],
    cutoffs: list[datetime],
) -> list[tuple]:
    """The steps of `table` matching `where` before the last cutoff, as (window_start, *keys,
    change) ordered by window, with those before the first cutoff summed per key into one
    row dated just before it: the running sums read off at the cutoffs are the same, and a
    refresh of the latest windows reads O(keys) rows, not O(keys × windows of history)."""
    first, last = min(cutoffs), max(cutoffs)
    return connection.execute(
        f"SELECT CASE WHEN window_start < ? THEN ? ELSE window_start END AS moment, {keys}, "
        # HUGEINT: a DuckLake store keeps the sums of values as DECIMAL(38, 0) (store.py)
        f"sum(change)::HUGEINT FROM {table} WHERE {where} AND window_start < ? "
        "GROUP BY ALL ORDER BY moment",
        [first, first - timedelta(microseconds=1), *params, last],
    ).fetchall()


def window_counts(
    connection: duckdb.DuckDBPyConnection,
    config: ExperimentsConfig,
    windows: list[tuple[datetime, datetime]],
    steps_table: str = "window_steps",
) -> dict[datetime, list[WindowCounts]]:
    """Per window [start, end) (naive UTC, on the partition grid): increments within it and
    totals at its end, for every test and variant. Counts are cumulative functions of the
    cutoff, so a window's increments are totals(end) − totals(start), and a backfill of any
    range gives exactly what the live path gave. (An increment can be negative when a user
    counted earlier shows up in a second variant during the window and leaves the counts.)
    `steps_table` other than the state's holds steps recounted by `state.recount_steps`."""
    if not windows:
        return {}
    if steps_table == "window_steps":
        state.ensure_current(connection, CountingRules.of(config))
    steps = _steps_before(
        connection,
        steps_table,
        "test_id, variant, measure",
        "dimension = 'all' AND measure IN (?, ?)",
        [EXPOSURES, SUCCESSES],
        [moment for window in windows for moment in window],
    )
    keys = [(t.test_id, v) for t in config.tests for v in t.variant_names]

    # Running sums of the steps (ordered by window), read off at every start and end.
    totals: dict[datetime, dict[tuple[str, str], VariantCounts]] = {}
    running = dict.fromkeys(keys, VariantCounts(0, 0))
    pending = iter(steps)
    step = next(pending, None)
    for cutoff in sorted({moment for window in windows for moment in window}):
        while step is not None and step[0] < cutoff:
            _, test_id, variant, measure, change = step
            if (test_id, variant) in running:
                now = running[(test_id, variant)]
                running[(test_id, variant)] = (
                    VariantCounts(now.exposures + change, now.successes)
                    if measure == EXPOSURES
                    else VariantCounts(now.exposures, now.successes + change)
                )
            step = next(pending, None)
        totals[cutoff] = dict(running)

    result = {}
    for start, end in windows:
        before, after = totals[start], totals[end]
        result[start] = [
            WindowCounts(
                test_id,
                variant,
                after[(test_id, variant)].exposures - before[(test_id, variant)].exposures,
                after[(test_id, variant)].successes - before[(test_id, variant)].successes,
                after[(test_id, variant)].exposures,
                after[(test_id, variant)].successes,
            )
            for test_id, variant in keys
        ]
    return result


def quality(
    connection: duckdb.DuckDBPyConnection,
    config: ExperimentsConfig,
    cutoff: datetime,
    steps_table: str = "window_steps",
) -> dict[str, Quality]:
    """Per configured test, the users left out of the counts as of `cutoff` (on the grid);
    `steps_table` as for `window_counts`."""
    if steps_table == "window_steps":
        state.ensure_current(connection, CountingRules.of(config))
    rows = connection.execute(
        f"SELECT test_id, measure, sum(change) FROM {steps_table} "
        "WHERE dimension = 'all' AND variant = '' AND window_start < ? GROUP BY ALL",
        [cutoff],
    ).fetchall()
    figures = {(test_id, measure): int(total) for test_id, measure, total in rows}
    return {
        t.test_id: Quality(*(figures.get((t.test_id, m), 0) for m in QUALITY_MEASURES))
        for t in config.tests
    }


_SUMS = {"sum": "total", "sum_squares": "squares", "sum_products": "products"}


def metric_sums(
    connection: duckdb.DuckDBPyConnection,
    config: ExperimentsConfig,
    cutoffs: list[datetime],
    steps_table: str = "metric_steps",
    segment: tuple[str, str] = ("all", "all"),
) -> dict[datetime, dict[tuple[str, str, str], MetricSums]]:
    """Per cutoff (on the grid), the sums of every summed metric, keyed by (test_id, metric,
    variant) (all present, zeros for none), overall or of one (dimension, segment);
    `steps_table` as for `window_counts`."""
    rules = CountingRules.of(config)
    if steps_table == "metric_steps":
        state.ensure_current(connection, rules)
    keys = [(t.test_id, m.name, v) for t in config.tests for m in t.other_metrics
            for v in t.variant_names]  # fmt: skip
    if not cutoffs or not keys:
        return {cutoff: {} for cutoff in cutoffs}
    steps = _steps_before(
        connection,
        steps_table,
        "test_id, metric, variant, measure",
        "dimension = ? AND segment = ?",
        list(segment),
        cutoffs,
    )
    running = {key: dict.fromkeys(_SUMS.values(), 0) for key in keys}
    result = {}
    pending = iter(steps)
    step = next(pending, None)
    for cutoff in sorted(set(cutoffs)):
        while step is not None and step[0] < cutoff:
            _, test_id, metric, variant, measure, change = step
            if (test_id, metric, variant) in running:
                running[(test_id, metric, variant)][_SUMS[measure]] += change
            step = next(pending, None)
        result[cutoff] = {key: MetricSums(**sums) for key, sums in running.items()}
    return result


def segment_counts(
    connection: duckdb.DuckDBPyConnection,
    config: ExperimentsConfig,
    windows: list[tuple[datetime, datetime]],
) -> dict[datetime, list[SegmentCounts]]:
    """Per window, every segment's counts of every test's dimensions (docs/segments.md): the
    segments the steps hold, by their value, each with every variant (the lumping of the
    smaller ones into (other) comes after). A segment's totals over one dimension add up to
    the test's."""
    if not windows:
        return {}
    state.ensure_current(connection, CountingRules.of(config))
    steps = _steps_before(
        connection,
        "window_steps",
        "test_id, dimension, segment, variant, measure",
        "dimension <> 'all' AND measure IN (?, ?)",
        [EXPOSURES, SUCCESSES],
        [moment for window in windows for moment in window],
    )
    variants = {t.test_id: t.variant_names for t in config.tests}
    dimensions = {(t.test_id, d) for t in config.tests for d in t.dimensions}
    running: dict[tuple[str, str, str, str], list[int]] = {}
    for _, test_id, dimension, segment, _, _, _ in steps:
        if (test_id, dimension) in dimensions:
            for variant in variants[test_id]:
                running.setdefault((test_id, dimension, segment, variant), [0, 0])
    totals: dict[datetime, dict[tuple[str, str, str, str], tuple[int, int]]] = {}
    pending = iter(steps)
    step = next(pending, None)
    for cutoff in sorted({moment for window in windows for moment in window}):
        while step is not None and step[0] < cutoff:
            _, test_id, dimension, segment, variant, measure, change = step
            counts = running.get((test_id, dimension, segment, variant))
            if counts is not None:
                counts[0 if measure == EXPOSURES else 1] += change
            step = next(pending, None)
        totals[cutoff] = {key: (e, s) for key, (e, s) in running.items()}
    return {
        start: [
            SegmentCounts(*key, after[0] - before[0], after[1] - before[1], *after)
            for key, after in totals[end].items()
            for before in [totals[start].get(key, (0, 0))]
        ]
        for start, end in windows
    }
