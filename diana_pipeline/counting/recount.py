"""The full recount: the counting rules of docs/design.md §3 stated directly as SQL over every
event before a cutoff. The pipeline reads its counts from the incremental state
(counting/state.py); this is the reference the tests hold that state equal to, and what
`diana-state check` compares it with.

A Bernoulli trial is a user. As of a cutoff T (only events before T count):
- a user is exposed to a test at their first exposure event and belongs to its variant;
- a success is a success event of an exposed user at or after that first exposure and
  within the test's conversion window; each user counts at most once as exposed and once
  as a success, so successes ≤ exposures always;
- users seen in more than one variant are excluded (and counted);
- success events of users never exposed are orphans (and counted).
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.counting.figures import MetricSums, Quality, VariantCounts
from diana_pipeline.counting.metric_sums import VALUE_SCALE
from diana_pipeline.counting.rules import CountingRules

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


def recount_quality(
    connection: duckdb.DuckDBPyConnection, config: ExperimentsConfig, cutoff: datetime
) -> dict[str, Quality]:
    """Per test, the users left out of the counts as of `cutoff`."""
    values, params = _tests_values(config, with_window=False)
    sql = _QUALITY_SQL.format(tests=values).replace("$cutoff", "?")
    rows = connection.execute(sql, [*params, cutoff]).fetchall()
    return {test_id: Quality(*figures) for test_id, *figures in rows}


# The metric sums of counting/metric_sums.py, stated per user at the cutoff: the users counted
# (as in _CUMULATIVE_SQL), each one's total per metric, then summed per variant.
_METRIC_SUMS_SQL = """
WITH tests(test_id, exposure_event, success_event, window_us) AS (
    SELECT * FROM (VALUES {tests})
),
metrics(test_id, metric, type, event) AS (SELECT * FROM (VALUES {metrics})),
ratios(test_id, metric, numerator, denominator) AS (SELECT * FROM (VALUES {ratios})),
counted AS (
    SELECT e.test_id, e.user_id, min(e.event_time) AS t1, any_value(t.window_us) AS window_us,
           min(e.variant) AS variant
    FROM events e JOIN tests t ON t.test_id = e.test_id AND e.event_type = t.exposure_event
    WHERE e.event_time < $cutoff
    GROUP BY e.test_id, e.user_id HAVING count(DISTINCT e.variant) = 1
),
user_totals AS (
    SELECT c.test_id, c.user_id, c.variant, m.metric,
           CASE WHEN any_value(m.type) = 'binary' THEN 1 ELSE sum(
               CASE WHEN m.type = 'revenue'
                    THEN coalesce(round(e.value * {scale})::HUGEINT, 0) ELSE 1 END) END AS total
    FROM counted c
    JOIN events e ON e.test_id = c.test_id AND e.user_id = c.user_id
    JOIN metrics m ON m.test_id = e.test_id AND m.event = e.event_type
    WHERE e.event_time < $cutoff AND e.event_time >= c.t1
      AND e.event_time <= c.t1 + to_microseconds(c.window_us)
    GROUP BY ALL
)
SELECT test_id, metric, variant, sum(total), sum(total * total), 0 FROM user_totals GROUP BY ALL
UNION ALL
SELECT r.test_id, r.metric, n.variant, 0, 0, sum(n.total * d.total)
FROM ratios r
JOIN user_totals n ON n.test_id = r.test_id AND n.metric = r.numerator
JOIN user_totals d ON d.test_id = r.test_id AND d.metric = r.denominator AND d.user_id = n.user_id
GROUP BY ALL
"""


def recount_metric_sums(
    connection: duckdb.DuckDBPyConnection, config: ExperimentsConfig, cutoff: datetime
) -> dict[tuple[str, str, str], MetricSums]:
    """(test_id, metric, variant) -> the sums of every summed metric (and ratio) counted from
    the events before `cutoff`; keys with no users are left out."""
    rules = CountingRules.of(config)
    if not rules.metrics:
        return {}
    tests, params = rules.tests_relation()
    metrics, metric_params = rules.metrics_relation()
    ratios, ratio_params = rules.ratios_relation()
    sql = _METRIC_SUMS_SQL.format(
        tests=tests, metrics=metrics, ratios=ratios, scale=VALUE_SCALE
    ).replace("$cutoff", "?")
    rows = connection.execute(
        sql, [*params, *metric_params, *ratio_params, cutoff, cutoff]
    ).fetchall()
    sums: dict[tuple[str, str, str], MetricSums] = {}
    for test_id, metric, variant, total, squares, products in rows:
        key = (test_id, metric, variant)
        sums[key] = sums.get(key, MetricSums()) + MetricSums(total, squares, products)
    return sums


# The counts per segment, stated per user at the cutoff: the counted users (as in
# _CUMULATIVE_SQL) with the properties of their first exposure (of ties the least text, none
# last), and whether they converted.
_SEGMENT_COUNTS_SQL = """
WITH tests(test_id, exposure_event, success_event, window_us) AS (
    SELECT * FROM (VALUES {tests})
),
dims(test_id, dimension) AS (SELECT * FROM (VALUES {dimensions})),
ev AS (
    SELECT e.*, t.exposure_event, t.success_event, t.window_us
    FROM events e JOIN tests t USING (test_id) WHERE e.event_time < $cutoff
),
counted AS (
    SELECT test_id, user_id, min(event_time) AS t1, min(variant) AS variant,
           any_value(window_us) AS window_us
    FROM ev WHERE event_type = exposure_event
    GROUP BY test_id, user_id HAVING count(DISTINCT variant) = 1
),
firsts AS (
    SELECT c.*, nullif(min(coalesce(e.properties, '~')), '~') AS p1,
           bool_or(s.user_id IS NOT NULL) AS converted
    FROM counted c
    JOIN ev e ON e.test_id = c.test_id AND e.user_id = c.user_id
        AND e.event_type = e.exposure_event AND e.event_time = c.t1
    LEFT JOIN ev s ON s.test_id = c.test_id AND s.user_id = c.user_id
        AND s.event_type = s.success_event AND s.event_time >= c.t1
        AND s.event_time <= c.t1 + to_microseconds(c.window_us)
    GROUP BY ALL
)
SELECT f.test_id, d.dimension,
       coalesce(json_extract_string(f.p1, '$."' || d.dimension || '"'), '(none)') AS segment,
       f.variant, count(*), count(*) FILTER (WHERE f.converted)
FROM firsts f JOIN dims d USING (test_id)
GROUP BY ALL
"""


def recount_segment_counts(
    connection: duckdb.DuckDBPyConnection, config: ExperimentsConfig, cutoff: datetime
) -> dict[tuple[str, str, str, str], VariantCounts]:
    """(test_id, dimension, segment, variant) -> users exposed and converted as of `cutoff`,
    for every test's dimensions; segments without users are left out."""
    rules = CountingRules.of(config)
    if not rules.dimensions:
        return {}
    tests, params = rules.tests_relation()
    dims = ", ".join("(?, ?)" for _ in rules.dimensions)
    sql = _SEGMENT_COUNTS_SQL.format(tests=tests, dimensions=dims).replace("$cutoff", "?")
    dim_params = [v for pair in rules.dimensions for v in pair]
    rows = connection.execute(sql, [*params, *dim_params, cutoff]).fetchall()
    return {tuple(row[:4]): VariantCounts(row[4], row[5]) for row in rows}  # type: ignore[misc]
