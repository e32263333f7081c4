"""The metrics beyond the conversion (docs/metrics.md), counted by the same user-level rules
(counting/rules.py): per test, metric and variant, the sums over counted users of each user's
total and of its square (and, for a ratio, of the product of its two parts' totals), as
cumulative functions of the cutoff T, so that a window's figures are sums of stored steps.

A user counted at T (exposed before T, in one variant: t1 < T ≤ t2) has, per metric, the
total of the metric's events e with t1 ≤ e < T and e ≤ t1 + conversion window:
    binary   1 if there is one, else 0
    count    their number
    revenue  the sum of their `value` (0 for an event without one), in micro-units
             (VALUE_SCALE), so that every sum is an exact integer whatever the order of
             the additions
A user's total only moves at their events, so it is a step function of T: per window, the
change of the user's level (total, square, product) from the window before, and at t2 (the
user leaves the counts) the whole level taken back.

The state keeps every event of a summed metric's event type (`user_values`) since a late
exposure can move t1 before any of them.
"""

from __future__ import annotations

from diana_pipeline.counting.rules import user_key_sql

# Revenue in integer micro-units: exact sums in HUGEINT for |value| ≤ 1e12 (the events'
# bound) and per-user squares up to totals of ~1.3e13 units.
VALUE_SCALE = 1_000_000


def value_events_sql(source: str, metrics: str) -> str:
    """The rows of `source` (columns of the events table) of a summed metric's event type, as
    (test_id, user_key, event_type, event_time, value); `metrics` is the metrics' VALUES."""
    return f"""
    SELECT e.test_id, {user_key_sql("e")} AS user_key,
           e.event_type, e.event_time, e.value
    FROM {source} e
    SEMI JOIN (SELECT * FROM (VALUES {metrics}) AS v(test_id, metric, type, event)) m
        ON m.test_id = e.test_id AND m.event = e.event_type"""


# The steps of the metric sums of the users' moments in `moments` (columns of MOMENTS_SQL and
# a `sign`) with their value events in `values` (columns of value_events_sql and a `sign`:
# a user's old moments go with their old values, their new moments with all of them).
METRIC_STEPS_SQL = """
WITH tests AS (
    SELECT * FROM (VALUES {tests}) AS v(test_id, exposure_event, success_event, window_us)
),
metrics AS (SELECT * FROM (VALUES {metrics}) AS v(test_id, metric, type, event)),
ratios AS (SELECT * FROM (VALUES {ratios}) AS v(test_id, metric, numerator, denominator)),
users AS ({segmented}),
-- Per user, metric and window, the sum of the amounts of the events that count.
amounts AS (
    SELECT u.test_id, u.user_key, u.sign, u.v, u.t2, u.dimension, u.segment, d.metric, d.type,
           {event_window} AS window_start,
           sum(CASE WHEN d.type = 'revenue'
                    THEN coalesce(round(x.value * {scale})::HUGEINT, 0)
                    ELSE 1::HUGEINT END) AS amount
    FROM users u
    JOIN ({values}) x ON x.test_id = u.test_id AND x.user_key = u.user_key AND x.sign = u.sign
    JOIN metrics d ON d.test_id = x.test_id AND d.event = x.event_type
    WHERE x.event_time >= u.t1 AND x.event_time <= u.closes
      AND (u.t2 IS NULL OR x.event_time < u.t2)
    GROUP BY ALL
),
totals AS (
    SELECT *, CASE WHEN type = 'binary' THEN least(total, 1) ELSE total END AS level
    FROM (SELECT *, sum(amount) OVER (PARTITION BY test_id, user_key, sign, dimension, metric
                                      ORDER BY window_start) AS total
          FROM amounts)
),
parts AS (
    SELECT a.test_id, a.user_key, a.sign, a.v, a.t2, a.dimension, a.segment, r.metric,
           a.window_start,
           coalesce(sum(a.amount) FILTER (WHERE a.metric = r.numerator), 0) AS numerator,
           coalesce(sum(a.amount) FILTER (WHERE a.metric = r.denominator), 0) AS denominator
    FROM amounts a
    JOIN ratios r ON r.test_id = a.test_id AND a.metric IN (r.numerator, r.denominator)
    GROUP BY ALL
),
levels(test_id, user_key, sign, v, t2, dimension, segment, metric, measure, window_start,
       level) AS (
    SELECT test_id, user_key, sign, v, t2, dimension, segment, metric, 'sum', window_start,
        level FROM totals
    UNION ALL SELECT test_id, user_key, sign, v, t2, dimension, segment, metric, 'sum_squares',
        window_start, level * level FROM totals
    UNION ALL SELECT test_id, user_key, sign, v, t2, dimension, segment, metric, 'sum_products',
        window_start, sum(numerator) OVER w * sum(denominator) OVER w FROM parts
        WINDOW w AS (PARTITION BY test_id, user_key, sign, dimension, metric
                     ORDER BY window_start)
),
changes(test_id, dimension, segment, metric, measure, variant, window_start, change) AS (
    SELECT test_id, dimension, segment, metric, measure, v, window_start,
           sign * (level - lag(level, 1, 0) OVER (
               PARTITION BY test_id, user_key, sign, dimension, metric, measure
               ORDER BY window_start))
    FROM levels
    -- the user leaves the counts at t2: their last level goes
    UNION ALL SELECT test_id, dimension, segment, metric, measure, v, {exit_window},
        -sign * arg_max(level, window_start)
    FROM levels WHERE t2 IS NOT NULL
    GROUP BY test_id, user_key, sign, v, t2, dimension, segment, metric, measure
)
SELECT test_id, dimension, segment, metric, measure, variant, window_start,
    sum(change) AS change
FROM changes GROUP BY ALL
"""
# METRIC_STEPS_SQL's users: the exposed users' moments, with the end of their window.
METRIC_USERS_SQL = """
SELECT m.test_id, m.user_key, m.sign, m.v, m.t1, m.t2, m.p1,
       m.t1 + to_microseconds(t.window_us) AS closes
FROM ({moments}) m JOIN tests t USING (test_id) WHERE m.t1 IS NOT NULL
"""
