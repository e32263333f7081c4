"""The counting rules of docs/design.md §3 as moments per user, in one place: the per-user
state (counting/state.py) and its steps are built from these SQL pieces, and the full recount
(counting/recount.py) states the same rules directly, as the reference the tests hold them to.

Per test and user, from their exposure and success events (the test's `exposure_event` and
`success_event`; other events play no part):
    t1  first exposure, v its variant
    t2  first exposure in a variant other than v (the user leaves the counts then)
    c1  first success at any time
    ca  first success at or after t1; the user converts at s = ca when ca ≤ t1 + window
    co  first success tagged with a variant other than v
At a cutoff T (only events before T count) a user adds 1 to a measure while T lies in an
interval (opens, closes] of these moments; the intervals become +1/−1 steps in the windows of
their ends, and a measure at T is the sum of the steps in the windows before T.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from diana_pipeline.config import ALL_SEGMENTS, ExperimentsConfig

# Bumped when the state's rows or steps change meaning: a state of another version is rebuilt.
STATE_VERSION = 4

# The measures a user's moments open and close: the counts per variant, and the quality
# figures per test (variant '').
EXPOSURES, SUCCESSES = "exposures", "successes"
QUALITY_MEASURES = (
    "multi_variant_users",  # exposed in two variants: left out of the counts
    "orphan_success_users",  # a success, never exposed
    "clicks_before_exposure_users",  # exposed in one variant, every success before it
    "other_variant_click_users",  # exposed in one variant, a success tagged with another
)


@dataclass(frozen=True)
class CountingRules:
    """What the counting depends on in experiments.yaml: per test the exposure and success
    events and the conversion window, and the window grid. State kept under other rules is
    stale (a changed conversion window changes who converted)."""

    tests: tuple[tuple[str, str, str, int], ...]  # test_id, exposure, success, window in µs
    origin_us: int
    size_us: int
    # The metrics summed per user (counting/metric_sums.py): test_id, metric, type, event;
    # and the ratios of two of them: test_id, metric, numerator, denominator.
    metrics: tuple[tuple[str, str, str, str], ...] = ()
    ratios: tuple[tuple[str, str, str, str], ...] = ()
    # The segment breakdowns (docs/segments.md): test_id, dimension.
    dimensions: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, config: ExperimentsConfig) -> CountingRules:
        grid = config.partitions.grid
        return cls(
            tuple(
                (
                    t.test_id,
                    t.exposure_event,
                    t.success_event,
                    int(t.conversion_window.total_seconds() * 1_000_000),
                )
                for t in config.tests
            ),
            grid.origin_us,
            grid.size_us,
            tuple(
                (t.test_id, m.name, "revenue" if m.type == "mean" else m.type, m.event)
                for t in config.tests
                for m in t.other_metrics
                if m.event is not None
            ),
            tuple(
                (t.test_id, m.name, m.numerator, m.denominator)
                for t in config.tests
                for m in t.other_metrics
                if m.type == "ratio"
            ),
            tuple((t.test_id, d) for t in config.tests for d in t.dimensions),
        )

    @property
    def fingerprint(self) -> str:
        text = json.dumps(
            [STATE_VERSION, self.tests, self.origin_us, self.size_us, self.metrics, self.ratios,
             self.dimensions]
        )  # fmt: skip
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def tests_relation(self) -> tuple[str, list[object]]:
        """A VALUES list of the tests (test_id, exposure_event, success_event, window_us),
        with its parameters, for a CTE `tests`."""
        rows = ", ".join("(?, ?, ?, ?::BIGINT)" for _ in self.tests)
        return rows, [value for test in self.tests for value in test]

    def metrics_relation(self) -> tuple[str, list[object]]:
        """A VALUES list of the summed metrics (test_id, metric, type, event), for a CTE
        `metrics`; only when there are some."""
        return ", ".join("(?, ?, ?, ?)" for _ in self.metrics), [v for m in self.metrics for v in m]

    def ratios_relation(self) -> tuple[str, list[object]]:
        """A VALUES list of the ratios (test_id, metric, numerator, denominator), for a CTE
        `ratios`; a dummy row that matches no metric when there are none."""
        if not self.ratios:
            return "(NULL, NULL, NULL, NULL)", []
        return ", ".join("(?, ?, ?, ?)" for _ in self.ratios), [v for r in self.ratios for v in r]

    def dimensions_relation(self) -> tuple[str, list[object]]:
        """A VALUES list of (test_id, dimension) for a CTE `dims`: every test's dimensions and
        `all`, the overall rows'."""
        rows = [(test_id, ALL_SEGMENTS) for test_id, *_ in self.tests] + list(self.dimensions)
        return ", ".join("(?, ?)" for _ in rows), [v for row in rows for v in row]

    def window_start_sql(self, moment: str) -> str:
        """SQL for the start of the grid window holding `moment` (floored, also before the
        origin, like WindowGrid.window_start_us)."""
        us = f"epoch_us({moment})"
        origin, size = self.origin_us, self.size_us
        return f"make_timestamp({us} - ((({us} - {origin}) % {size}) + {size}) % {size})"


def user_key_sql(events: str) -> str:
    """SQL for the key of the user of a row of `events` (an alias with the events' columns):
    the user within their test, as the state and its steps know them."""
    return f"hash_key({events}.test_id || chr(31) || {events}.user_id)"


def rule_events_sql(source: str, tests: str) -> str:
    """The rows of `source` (columns of the events table) that the rules read, as
    (test_id, user_key, is_exposure, variant, event_time, properties: an exposure's only);
    `tests` is the tests' VALUES."""
    return f"""
    SELECT e.test_id, {user_key_sql("e")} AS user_key,
           e.event_type = t.exposure_event
               AS is_exposure, e.variant, e.event_time,
           CASE WHEN e.event_type = t.exposure_event THEN e.properties END AS properties
    FROM {source} e
    JOIN (SELECT * FROM (VALUES {tests}) AS v(test_id, exposure_event, success_event, window_us))
         t ON t.test_id = e.test_id
    WHERE e.event_type = t.exposure_event OR e.event_type = t.success_event"""


# Each user's moments, from their rule events (or representatives) in `rows`, as
# (test_id, user_key, t1, v, t2, c1, ca, co, p1): p1 the first exposure's properties.
MOMENTS_SQL = """
WITH r AS ({rows}),
first_exposure AS (
    SELECT test_id, user_key, min(event_time) AS t1, arg_min(variant, event_time) AS v
    FROM r WHERE is_exposure GROUP BY test_id, user_key
)
SELECT r.test_id, r.user_key, any_value(f.t1) AS t1, any_value(f.v) AS v,
    min(r.event_time) FILTER (WHERE r.is_exposure AND r.variant <> f.v) AS t2,
    min(r.event_time) FILTER (WHERE NOT r.is_exposure) AS c1,
    min(r.event_time) FILTER (WHERE NOT r.is_exposure AND r.event_time >= f.t1) AS ca,
    min(r.event_time) FILTER (WHERE NOT r.is_exposure AND r.variant <> f.v) AS co,
    -- the properties of the first exposure (of ties, the least text; none sorts last)
    nullif(min(coalesce(r.properties, '~')) FILTER (WHERE r.is_exposure AND r.event_time = f.t1),
           '~') AS p1
FROM r LEFT JOIN first_exposure f USING (test_id, user_key)
GROUP BY r.test_id, r.user_key
"""

# A user's representative rows: the fewest of their rule events (within reason) that give the
# same moments as all of them, now and after any events still to come, which can only move t1
# earlier: the first exposure of each variant (t1, v, p1 and t2 for any v), every success before
# t1 (one of them becomes ca when a late exposure moves t1 before it), and the first success
# at or after t1 of each variant (c1, ca and co for any v). Most users keep one or two rows.
# `first_exposures` gives each user's t1 (test_id, user_key, t1): their moments, when known.
REPRESENTATIVES_SQL = """
WITH r AS ({rows})
SELECT r.test_id, r.user_key, r.is_exposure, r.variant, min(r.event_time) AS event_time,
    -- the first one's properties, of ties the least text as for p1
    nullif(min({{'t': r.event_time, 'p': coalesce(r.properties, '~')}}).p, '~') AS properties
FROM r JOIN ({first_exposures}) f USING (test_id, user_key)
GROUP BY r.test_id, r.user_key, r.is_exposure, r.variant,
    -- each success before t1 in a group of its own
    CASE WHEN NOT r.is_exposure AND (f.t1 IS NULL OR r.event_time < f.t1) THEN r.event_time END
"""
_FIRST_EXPOSURES = (
    "SELECT test_id, user_key, min(event_time) FILTER (WHERE is_exposure) AS t1 "
    "FROM r GROUP BY test_id, user_key"
)


def representatives_sql(rows: str, first_exposures: str = _FIRST_EXPOSURES) -> str:
    """The representatives of the users of `rows`, given their t1 (worked out by default)."""
    return REPRESENTATIVES_SQL.format(rows=rows, first_exposures=first_exposures)


# Most users are plain: exposed, every exposure and success in one variant v, no success
# before t1. Their moments give their representatives back (the first exposure (v, t1) and the
# first success (v, ca)), so they need no rows of their own; the others ("kept" users) do.
PLAIN = "(t1 IS NOT NULL AND t2 IS NULL AND co IS NULL AND NOT coalesce(c1 < t1, false))"

# The representatives of the plain users among `moments`.
PLAIN_REPRESENTATIVES_SQL = f"""
SELECT test_id, user_key, true AS is_exposure, v AS variant, t1 AS event_time,
    p1 AS properties
FROM ({{moments}}) WHERE {PLAIN}
UNION ALL
SELECT test_id, user_key, false, v, ca, NULL FROM ({{moments}}) WHERE {PLAIN} AND ca IS NOT NULL
"""


# A user's segment in each dimension of their test (docs/segments.md): the value of that
# property on their first exposure, `(none)` without one; `all` in the overall rows. Over
# `users` (with test_id and p1), as (users' columns, dimension, segment).
SEGMENTED_SQL = """
SELECT u.*, d.dimension,
    CASE WHEN d.dimension = 'all' THEN 'all'
         ELSE coalesce(json_extract_string(u.p1, '$."' || d.dimension || '"'), '(none)')
    END AS segment
FROM ({users}) u JOIN (SELECT * FROM (VALUES {dimensions}) AS v(test_id, dimension)) d
    USING (test_id)
"""

# The steps of the users' moments in `moments` (columns of MOMENTS_SQL and a `sign`, +1 or -1:
# a user's steps are added, or taken back when their moments are replaced), per dimension and
# segment (`all`, `all` for the overall ones; the quality measures are overall only).
# least() and greatest() skip NULLs in DuckDB: a moment that never came closes nothing.
STEPS_SQL = """
WITH tests AS (
    SELECT * FROM (VALUES {tests}) AS v(test_id, exposure_event, success_event, window_us)
),
users AS ({segmented}),
intervals(test_id, dimension, segment, measure, variant, opens, closes, sign) AS (
    SELECT test_id, dimension, segment, 'exposures', v, t1, t2, sign FROM users
        WHERE t1 IS NOT NULL
    UNION ALL SELECT test_id, dimension, segment, 'successes', v, s, t2, sign FROM users
        WHERE s IS NOT NULL
    UNION ALL SELECT test_id, 'all', 'all', 'multi_variant_users', '', t2, NULL, sign FROM users
        WHERE dimension = 'all' AND t2 IS NOT NULL
    UNION ALL SELECT test_id, 'all', 'all', 'orphan_success_users', '', c1, t1, sign FROM users
        WHERE dimension = 'all' AND c1 IS NOT NULL AND (t1 IS NULL OR c1 < t1)
    UNION ALL SELECT test_id, 'all', 'all', 'clicks_before_exposure_users', '', t1,
        least(t2, ca), sign FROM users WHERE dimension = 'all' AND c1 < t1
    UNION ALL SELECT test_id, 'all', 'all', 'other_variant_click_users', '', greatest(t1, co),
        t2, sign FROM users WHERE dimension = 'all' AND t1 IS NOT NULL AND co IS NOT NULL
),
steps(test_id, dimension, segment, measure, variant, moment, change) AS (
    SELECT test_id, dimension, segment, measure, variant, opens, sign FROM intervals
    UNION ALL SELECT test_id, dimension, segment, measure, variant, greatest(opens, closes),
        -sign FROM intervals WHERE closes IS NOT NULL
)
SELECT test_id, dimension, segment, measure, variant, {window_start} AS window_start,
    sum(change) AS change
FROM steps GROUP BY ALL
"""
# STEPS_SQL's users: the moments with s, each user's success that counts (ca within the window).
STEP_USERS_SQL = """
SELECT m.*, CASE WHEN m.ca <= m.t1 + to_microseconds(t.window_us) THEN m.ca END AS s
FROM ({moments}) m JOIN tests t USING (test_id)
"""
