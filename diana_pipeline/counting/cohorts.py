"""Users grouped by when they were first exposed: what a bandit's statistics need beside the
counts by window (docs/bandit.md). Read from the counting state's per-user moments
(counting/rules.py), so the rules are the same as everywhere else; one pass over the test's
users per call, which only bandit tests pay.

- `first_exposures_by_version`: users by the window and the allocation version in force at
  their first exposure, and the variant they were given: the sample-ratio check's cells.
- `cohort_counts`: per cutoff, users counted by the window of their first exposure (their
  cohort) and variant, with their successes: the period-weighted estimates' strata."""

from __future__ import annotations

from datetime import datetime

import duckdb

from diana_pipeline.counting.rules import CountingRules


def first_exposures_by_version(
    connection: duckdb.DuckDBPyConnection, rules: CountingRules, test_id: str, cutoff: datetime
) -> list[tuple[datetime, int, str, int]]:
    """(window, version, variant, users) of the users first exposed before `cutoff`, in time
    order: version 0 (the configured split) before any version took effect. Users later seen
    in another variant count too: assignment gave them the first one."""
    window = rules.window_start_sql("f.t1")
    return connection.execute(
        f"""
        WITH firsts AS (
            SELECT t1, v FROM user_moments WHERE test_id = ? AND t1 IS NOT NULL AND t1 < ?
        ),
        versions AS (
            SELECT DISTINCT version, effective_from FROM allocation_versions WHERE test_id = ?
        )
        SELECT {window} AS window_start, coalesce(a.version, 0) AS version, f.v, count(*)
        FROM firsts f ASOF LEFT JOIN versions a ON f.t1 >= a.effective_from
        GROUP BY ALL ORDER BY window_start, version, f.v
        """,
        [test_id, cutoff, test_id],
    ).fetchall()


def cohort_counts(
    connection: duckdb.DuckDBPyConnection,
    rules: CountingRules,
    test_id: str,
    cutoffs: list[datetime],
) -> dict[datetime, list[tuple[datetime, str, int, int]]]:
    """cutoff → (cohort window, variant, exposures, successes): the users the counting rules
    count at the cutoff (exposed in one variant so far), by the window of their first
    exposure, and how many of them converted within the conversion window before it."""
    [window_us] = [test[3] for test in rules.tests if test[0] == test_id]
    cohort = rules.window_start_sql("m.t1")
    rows = connection.execute(
        f"""
        WITH m AS (
            SELECT t1, v, t2, CASE WHEN ca <= t1 + to_microseconds(?::BIGINT) THEN ca END AS s
            FROM user_moments WHERE test_id = ? AND t1 IS NOT NULL
        ),
        cuts AS (SELECT unnest(?::TIMESTAMP[]) AS cutoff)
        SELECT c.cutoff, {cohort} AS cohort, m.v, count(*),
               count(*) FILTER (WHERE m.s < c.cutoff)
        FROM m JOIN cuts c ON m.t1 < c.cutoff AND (m.t2 IS NULL OR m.t2 >= c.cutoff)
        GROUP BY ALL ORDER BY ALL
        """,
        [window_us, test_id, cutoffs],
    ).fetchall()
    found: dict[datetime, list[tuple[datetime, str, int, int]]] = {c: [] for c in cutoffs}
    for cutoff, start, variant, exposures, successes in rows:
        found[cutoff].append((start, variant, exposures, successes))
    return found
