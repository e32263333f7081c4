"""Winsorised revenue (docs/metrics.md): each counted user's total capped at the metric's
`winsorize` quantile of all counted users' totals (both variants pooled, users without an
event at 0), so that a few very large orders cannot decide a test.

The cap depends on every user's total at the cutoff, which the steps' sums do not keep, so a
winsorised metric's sums are read per cutoff from the state's tables: the users with a value
event (user_values joined to user_moments), their totals, and the rest at zero. This costs a
pass over the metric's events per cutoff, not over all events; metrics without `winsorize`
pay nothing.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from datetime import datetime
from fractions import Fraction

import duckdb

from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.counting.figures import MetricSums
from diana_pipeline.counting.metric_sums import VALUE_SCALE

# Per counted user at the cutoff with an event of the metric: their variant and total in
# micro-units (the rules of counting/metric_sums.py, stated per user).
_USER_TOTALS_SQL = f"""
SELECT m.v, sum(coalesce(round(x.value * {VALUE_SCALE})::HUGEINT, 0)) AS total
FROM user_moments m
JOIN user_values x ON x.user_key = m.user_key AND x.test_id = m.test_id
WHERE m.test_id = $test AND x.event_type = $event
  AND m.t1 < $cutoff AND (m.t2 IS NULL OR m.t2 >= $cutoff)
  AND x.event_time < $cutoff AND x.event_time >= m.t1
  AND x.event_time <= m.t1 + to_microseconds($window_us)
GROUP BY m.user_key, m.v
"""


def cap_at_quantile(totals: list[int], zeros: int, q: float) -> int:
    """The cap: the q-quantile (linear interpolation between order statistics, numpy's
    default) of `totals` and `zeros` more totals of 0, floored to an integer. In exact
    arithmetic, so that it never depends on rounding."""
    values = sorted(totals)
    n = len(values) + zeros
    if n == 0:
        return 0
    below = bisect_left(values, 0)  # negatives come first, then the zeros

    def at(i: int) -> int:
        if i < below:
            return values[i]
        return 0 if i < below + zeros else values[i - zeros]

    h = (n - 1) * Fraction(q)
    low = math.floor(h)
    high = min(low + 1, n - 1)
    return math.floor(at(low) + (h - low) * (at(high) - at(low)))


def winsorized_sums(
    connection: duckdb.DuckDBPyConnection,
    config: ExperimentsConfig,
    users: dict[datetime, dict[tuple[str, str], int]],
) -> dict[datetime, dict[tuple[str, str, str], MetricSums]]:
    """Per cutoff, the sums of every winsorised metric with each user's total capped at the
    metric's quantile (in micro-units, the cap rounded down to one), keyed (test_id, metric,
    variant); `users` gives per cutoff the counted users per (test_id, variant)."""
    result: dict[datetime, dict[tuple[str, str, str], MetricSums]] = {c: {} for c in users}
    for test in config.tests:
        window_us = int(test.conversion_window.total_seconds() * 1_000_000)
        for metric in test.other_metrics:
            if metric.winsorize is None:
                continue
            for cutoff, counted in users.items():
                rows = connection.execute(
                    _USER_TOTALS_SQL,
                    {"test": test.test_id, "event": metric.event, "cutoff": cutoff,
                     "window_us": window_us},
                ).fetchall()  # fmt: skip
                everyone = sum(counted.get((test.test_id, v), 0) for v in test.variant_names)
                totals = [int(total) for _, total in rows]
                cap = cap_at_quantile(totals, everyone - len(rows), metric.winsorize)
                for variant in test.variant_names:
                    mine = [min(int(total), cap) for v, total in rows if v == variant]
                    # users without an event are at 0, capped too should the cap be below
                    zeros = counted.get((test.test_id, variant), 0) - len(mine)
                    mine += [min(0, cap)] * zeros if cap < 0 else []
                    result[cutoff][(test.test_id, metric.name, variant)] = MetricSums(
                        sum(mine), sum(t * t for t in mine)
                    )
    return result
