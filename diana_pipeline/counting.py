"""The counting rules of docs/design.md §3, as SQL over the DuckDB event store.

A Bernoulli trial is a user. As of a cutoff T (only events before T count):
- a user is exposed to a test at their first exposure event and belongs to its variant;
- a success is a success event of an exposed user at or after that first exposure and
  within the test's conversion window; each user counts at most once as exposed and once
  as a success, so successes ≤ exposures always;
- users seen in more than one variant are excluded (and counted);
- success events of users never exposed are orphans (and counted).

Counts are cumulative functions of the cutoff, so a window's increments are
totals(window end) − totals(window start): a backfill over any range of windows gives
exactly what the live path gave. (An increment can be negative when a user counted earlier
shows up in a second variant during the window and leaves the counts.)

`cumulative_counts` states the rules directly, one cutoff per query. `window_counts` gets
every window of a range from one pass over the events: per user it finds the moments the
rules turn on and off (first exposure t1, first exposure in another variant t2, first
success within the conversion window s), so that at a cutoff T the user counts as exposed
when t1 < T ≤ t2 and as a success when s < T ≤ t2. Those moments become +1/−1 steps in
their windows, and totals are running sums of the steps. The tests hold it equal to
`cumulative_counts` at every window end.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb

from diana_pipeline.config import ExperimentsConfig

_CUMULATIVE_SQL = """
WITH tests(test_id, exposure_event, success_event, window_us) AS (
    SELECT * FROM (VALUES {tests})
),
ev AS (
    SELECT e.test_id, e.user_id, e.variant, e.event_type, e.event_time,
           t.exposure_event, t.success_event, t.window_us
    FROM events e JOIN tests t USING (test_id)
    WHERE e.event_time < $cutoff
),
exposures AS (
    SELECT test_id, user_id,
           min(event_time) AS first_exposure,
           arg_min(variant, event_time) AS variant,
           count(DISTINCT variant) AS variants,
           any_value(window_us) AS window_us
    FROM ev WHERE event_type = exposure_event
    GROUP BY test_id, user_id
),
clean AS (SELECT * FROM exposures WHERE variants = 1),
converted AS (
    SELECT DISTINCT c.test_id, c.user_id
    FROM clean c JOIN ev e ON e.test_id = c.test_id AND e.user_id = c.user_id
    WHERE e.event_type = e.success_event
      AND e.event_time >= c.first_exposure
      AND e.event_time <= c.first_exposure + to_microseconds(c.window_us)
)
SELECT c.test_id, c.variant, count(*) AS exposures, count(v.user_id) AS successes
FROM clean c LEFT JOIN converted v ON v.test_id = c.test_id AND v.user_id = c.user_id
GROUP BY ALL
"""

# One pass, one row per (test, user), then counted: a single grouping spills to disk under the
# memory limit where joins and correlated subqueries over a month of events would not fit.
_QUALITY_SQL = """
WITH tests(test_id, exposure_event, success_event) AS (SELECT * FROM (VALUES {tests})),
users AS (
    SELECT e.test_id,
           min(e.variant) FILTER (WHERE e.event_type = t.exposure_event) AS first_variant,
           max(e.variant) FILTER (WHERE e.event_type = t.exposure_event) AS last_variant,
           min(e.event_time) FILTER (WHERE e.event_type = t.exposure_event) AS exposed_at,
           min(e.variant) FILTER (WHERE e.event_type = t.success_event) AS click_low,
           max(e.variant) FILTER (WHERE e.event_type = t.success_event) AS click_high,
           max(e.event_time) FILTER (WHERE e.event_type = t.success_event) AS last_click
    FROM events e JOIN tests t USING (test_id)
    WHERE e.event_time < $cutoff
    GROUP BY e.test_id, e.user_id
)
SELECT t.test_id,
       count(*) FILTER (WHERE first_variant <> last_variant),
       count(*) FILTER (WHERE exposed_at IS NULL AND last_click IS NOT NULL),
       -- exposed in one variant, every click before the first exposure
       count(*) FILTER (WHERE first_variant = last_variant AND last_click < exposed_at),
       -- exposed in one variant, a click tagged with another
       count(*) FILTER (WHERE first_variant = last_variant
                          AND (click_low <> first_variant OR click_high <> first_variant))
FROM tests t LEFT JOIN users u USING (test_id)
GROUP BY t.test_id
"""


_STEPS_SQL = """
WITH tests(test_id, exposure_event, success_event, window_us) AS (
    SELECT * FROM (VALUES {tests})
),
ev AS (
    SELECT e.test_id, e.user_id, e.variant, e.event_type, e.event_time,
           t.exposure_event, t.success_event, t.window_us
    FROM events e JOIN tests t USING (test_id)
    WHERE e.event_time < $cutoff
),
exposed AS (
    SELECT test_id, user_id,
           min(event_time) AS t1,
           arg_min(variant, event_time) AS variant,
           any_value(window_us) AS window_us
    FROM ev WHERE event_type = exposure_event
    GROUP BY test_id, user_id
),
users AS (
    SELECT x.test_id, x.variant, x.t1,
        min(e.event_time) FILTER (
            WHERE e.event_type = e.exposure_event AND e.variant <> x.variant) AS t2,
        min(e.event_time) FILTER (
            WHERE e.event_type = e.success_event AND e.event_time >= x.t1
              AND e.event_time <= x.t1 + to_microseconds(x.window_us)) AS s
    FROM exposed x JOIN ev e ON e.test_id = x.test_id AND e.user_id = x.user_id
    GROUP BY x.test_id, x.user_id, x.variant, x.t1
),
steps(test_id, variant, moment, exposures, successes) AS (
    SELECT test_id, variant, t1, 1, 0 FROM users
    UNION ALL SELECT test_id, variant, t2, -1, 0 FROM users WHERE t2 IS NOT NULL
    UNION ALL SELECT test_id, variant, s, 0, 1 FROM users WHERE s IS NOT NULL
    UNION ALL SELECT test_id, variant, greatest(s, t2), 0, -1
        FROM users WHERE s IS NOT NULL AND t2 IS NOT NULL
)
SELECT test_id, variant,
    -- The window grid (WindowGrid.window_start_us) for moments from the origin on
    make_timestamp($origin + (epoch_us(moment) - $origin) // $size * $size) AS window_start,
    sum(exposures)::BIGINT, sum(successes)::BIGINT
FROM steps GROUP BY ALL ORDER BY window_start
"""


@dataclass(frozen=True)
class VariantCounts:
    exposures: int
    successes: int


@dataclass(frozen=True)
class Quality:
    multi_variant_users: int  # excluded from the counts
    orphan_success_users: int  # successes by users never exposed
    clicks_before_exposure_users: int = 0  # exposed, but every click came before the exposure
    other_variant_click_users: int = 0  # a click tagged with another variant than the exposure


@dataclass(frozen=True)
class WindowCounts:
    """One variant of one test in one window: increments and totals to the window's end."""

    test_id: str
    variant: str
    exposures_inc: int
    successes_inc: int
    exposures_total: int
    successes_total: int


def _tests_values(config: ExperimentsConfig, with_window: bool) -> tuple[str, list[object]]:
    rows, params = [], []
    for test in config.tests:
        placeholders = ["?", "?", "?"] + (["?"] if with_window else [])
        rows.append(f"({', '.join(placeholders)})")
        params += [test.test_id, test.exposure_event, test.success_event]
        if with_window:
            params.append(int(test.conversion_window.total_seconds() * 1_000_000))
    return ", ".join(rows), params


def cumulative_counts(
    connection: duckdb.DuckDBPyConnection, config: ExperimentsConfig, cutoff: datetime
) -> dict[tuple[str, str], VariantCounts]:
    """(test_id, variant) -> exposures and successes counted from events before `cutoff`
    (naive UTC). Every configured variant is present, with zeros when it has no users."""
    values, params = _tests_values(config, with_window=True)
    sql = _CUMULATIVE_SQL.format(tests=values).replace("$cutoff", "?")
    rows = connection.execute(sql, [*params, cutoff]).fetchall()
    counts = {(t.test_id, v): VariantCounts(0, 0) for t in config.tests for v in t.variant_names}
    for test_id, variant, exposures, successes in rows:
        if (test_id, variant) in counts:
            counts[(test_id, variant)] = VariantCounts(exposures, successes)
    return counts


def quality(
    connection: duckdb.DuckDBPyConnection, config: ExperimentsConfig, cutoff: datetime
) -> dict[str, Quality]:
    """Per test, the users left out of the counts as of `cutoff`."""
    values, params = _tests_values(config, with_window=False)
    sql = _QUALITY_SQL.format(tests=values).replace("$cutoff", "?")
    rows = connection.execute(sql, [*params, cutoff]).fetchall()
    return {test_id: Quality(*figures) for test_id, *figures in rows}


def window_counts(
    connection: duckdb.DuckDBPyConnection,
    config: ExperimentsConfig,
    windows: list[tuple[datetime, datetime]],
) -> dict[datetime, list[WindowCounts]]:
    """Per window [start, end) (naive UTC, on the partition grid): increments within it and
    totals at its end, for every test and variant, from one pass over the events."""
    if not windows:
        return {}
    values, params = _tests_values(config, with_window=True)
    grid = config.partitions.grid
    sql = (
        _STEPS_SQL.format(tests=values)
        .replace("$cutoff", "?")
        .replace("$origin", str(grid.origin_us))
        .replace("$size", str(grid.size_us))
    )
    steps = connection.execute(sql, [*params, max(end for _, end in windows)]).fetchall()
    keys = [(t.test_id, v) for t in config.tests for v in t.variant_names]

    # Running sums of the steps (ordered by window), read off at every start and end.
    totals: dict[datetime, dict[tuple[str, str], VariantCounts]] = {}
    running = dict.fromkeys(keys, VariantCounts(0, 0))
    pending = iter(steps)
    step = next(pending, None)
    for cutoff in sorted({moment for window in windows for moment in window}):
        while step is not None and step[2] < cutoff:
            test_id, variant, _, exposures, successes = step
            if (test_id, variant) in running:
                now = running[(test_id, variant)]
                running[(test_id, variant)] = VariantCounts(
                    now.exposures + exposures, now.successes + successes
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
