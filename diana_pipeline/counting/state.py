"""Incremental counting state in the event store, so that a refresh reads O(windows) rows
whatever the history.

Tables
  user_moments   per test and user, one row: their moments (counting/rules.py)
  user_rows      the representative rule events of the users whose moments cannot give them
                 back (rules.PLAIN): the few rows that give the same moments as all of their
                 events, now and after any events still to come
  window_steps   per test, measure, variant and window: the sum of the users' +1/−1 steps;
                 a measure at a window's end is the sum over the windows before it
  counting_state one row: the rules the state was built under, and how many events of the
                 events table it covers

A batch of new events is merged into the state in one transaction: the chunks an ingestion
run stored, by its folds (`fold_if_current`, every few chunks; counting/fold.py), or a window
rebuilt from Kafka, in the transaction that stores it (`merge_batch`). The batch's users' old
representatives and the batch's events give their new moments (and representatives), and
window_steps moves by the steps of their new moments minus their old. Only the batch's users
are touched (their rows are found by a scan of the 16-byte user keys, not of the events).
Exactly once: a fold records the ledger ranges it counted in its transaction, and a retried
chunk stores no event.

State that does not cover every event (a store written before this state existed, events
written outside `add_events`) or was built under other rules (a changed conversion window
or window grid) is rebuilt from all events before it is next read, once (batches stored
meanwhile are left to that rebuild); `rebuild` does it on demand (`diana-state rebuild`), and
`rebuild_users` repairs the users of a range of windows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import TypeVar

import duckdb

from diana_pipeline.counting import fold
from diana_pipeline.counting.metric_sums import (
    METRIC_STEPS_SQL,
    METRIC_USERS_SQL,
    VALUE_SCALE,
    value_events_sql,
)
from diana_pipeline.counting.rules import (
    MOMENTS_SQL,
    PLAIN,
    PLAIN_REPRESENTATIVES_SQL,
    SEGMENTED_SQL,
    STEP_USERS_SQL,
    STEPS_SQL,
    CountingRules,
    representatives_sql,
    rule_events_sql,
    user_key_sql,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA = """
DROP TABLE IF EXISTS user_state;  -- state version 1: every user's representatives
CREATE TABLE IF NOT EXISTS user_moments (
    test_id  VARCHAR  NOT NULL,
    user_key UHUGEINT NOT NULL,  -- hash_key(test_id, chr(31), user_id) (store.py)
    t1 TIMESTAMP, v VARCHAR, t2 TIMESTAMP, c1 TIMESTAMP, ca TIMESTAMP, co TIMESTAMP,
    p1 VARCHAR  -- the first exposure's properties (its segments)
);
CREATE TABLE IF NOT EXISTS user_rows (
    test_id     VARCHAR   NOT NULL,
    user_key    UHUGEINT  NOT NULL,
    is_exposure BOOLEAN   NOT NULL,
    variant     VARCHAR   NOT NULL,
    event_time  TIMESTAMP NOT NULL,
    properties  VARCHAR             -- an exposure's
);
CREATE TABLE IF NOT EXISTS window_steps (
    test_id      VARCHAR   NOT NULL,
    dimension    VARCHAR   NOT NULL,  -- 'all' for the overall steps (counting/rules.py)
    segment      VARCHAR   NOT NULL,  -- 'all' for the overall steps
    measure      VARCHAR   NOT NULL,  -- counting/rules.py: exposures, successes, quality
    variant      VARCHAR   NOT NULL,  -- '' for the per-test quality measures
    window_start TIMESTAMP NOT NULL,
    change       BIGINT    NOT NULL,
    PRIMARY KEY (test_id, dimension, segment, measure, variant, window_start)
);
CREATE TABLE IF NOT EXISTS user_values (
    test_id    VARCHAR   NOT NULL,
    user_key   UHUGEINT  NOT NULL,
    event_type VARCHAR   NOT NULL,  -- the event of a summed metric (counting/metric_sums.py)
    event_time TIMESTAMP NOT NULL,
    value      DOUBLE
);
CREATE TABLE IF NOT EXISTS metric_steps (
    test_id      VARCHAR   NOT NULL,
    dimension    VARCHAR   NOT NULL,
    segment      VARCHAR   NOT NULL,
    metric       VARCHAR   NOT NULL,
    measure      VARCHAR   NOT NULL,  -- sum, sum_squares, sum_products (of a ratio's parts)
    variant      VARCHAR   NOT NULL,
    window_start TIMESTAMP NOT NULL,
    change       HUGEINT   NOT NULL,  -- revenue in micro-units (metric_sums.VALUE_SCALE)
    PRIMARY KEY (test_id, dimension, segment, metric, measure, variant, window_start)
);
CREATE TABLE IF NOT EXISTS counting_state (
    rules    VARCHAR NOT NULL,  -- CountingRules.fingerprint
    events   BIGINT  NOT NULL,  -- rows of the events table the state covers
    rebuilds BIGINT  NOT NULL   -- times it was rebuilt from all events (after the first batch)
);
"""

_MERGE_TABLES = ("batch_rows", "old_moments", "new_moments", "old_rows")
_ROW = "test_id, user_key, is_exposure, variant, event_time, properties"  # a user_rows row
_MOMENTS = "test_id, user_key, t1, v, t2, c1, ca, co, p1"  # a user_moments row

# MERGE rather than INSERT ... ON CONFLICT: a DuckLake table has no key to conflict on.
_ADD_STEPS = """
MERGE INTO window_steps USING (
    SELECT test_id, dimension, segment, measure, variant, window_start, sum(change) AS change
    FROM ({steps}) GROUP BY ALL
    HAVING sum(change) <> 0
) AS delta USING (test_id, dimension, segment, measure, variant, window_start)
WHEN MATCHED THEN UPDATE SET change = window_steps.change + delta.change
WHEN NOT MATCHED THEN INSERT BY NAME
"""
_ADD_METRIC_STEPS = """
MERGE INTO metric_steps USING (
    SELECT test_id, dimension, segment, metric, measure, variant, window_start,
        sum(change) AS change
    FROM ({steps}) GROUP BY ALL
    HAVING sum(change) <> 0
) AS delta USING (test_id, dimension, segment, metric, measure, variant, window_start)
WHEN MATCHED THEN UPDATE SET change = metric_steps.change + delta.change
WHEN NOT MATCHED THEN INSERT BY NAME
"""
# The state's tables, dropped when they have an older shape (no segments): rebuilt from the
# events before they are next read.
_TABLES = ("user_moments", "user_rows", "user_values", "window_steps", "metric_steps",
           "counting_state")  # fmt: skip


def drop_outdated(connection: duckdb.DuckDBPyConnection) -> None:
    """Drop the state's tables when they predate segments (call before SCHEMA)."""
    shapes = connection.execute(
        "SELECT count(*) FILTER (WHERE table_name = 'window_steps'), "
        "count(*) FILTER (WHERE table_name = 'window_steps' AND column_name = 'dimension') "
        "FROM duckdb_columns() WHERE table_name = 'window_steps' "
        "AND database_name = current_database()"
    ).fetchone()
    if shapes[0] and not shapes[1]:
        log.info("counting state of an older shape: dropped, to be rebuilt from the events")
        for table in _TABLES:
            connection.execute(f"DROP TABLE IF EXISTS {table}")


def _steps(rules: CountingRules, moments: str) -> tuple[str, list[object]]:
    """The steps of `moments` (columns of MOMENTS_SQL and a sign), with their parameters."""
    tests, params = rules.tests_relation()
    dimensions, dimension_params = rules.dimensions_relation()
    users = SEGMENTED_SQL.format(
        users=STEP_USERS_SQL.format(moments=moments), dimensions=dimensions
    )
    sql = STEPS_SQL.format(
        segmented=users, tests=tests, window_start=rules.window_start_sql("moment")
    )
    return sql, params + dimension_params


def _metric_steps(rules: CountingRules, moments: str, values: str) -> tuple[str, list[object]]:
    """The metric steps of `moments` with their `values` (each with a sign), with their
    parameters."""
    tests, params = rules.tests_relation()
    metrics, metric_params = rules.metrics_relation()
    ratios, ratio_params = rules.ratios_relation()
    dimensions, dimension_params = rules.dimensions_relation()
    users = SEGMENTED_SQL.format(
        users=METRIC_USERS_SQL.format(moments=moments), dimensions=dimensions
    )
    sql = METRIC_STEPS_SQL.format(
        tests=tests,
        metrics=metrics,
        ratios=ratios,
        segmented=users,
        values=values,
        scale=VALUE_SCALE,
        event_window=rules.window_start_sql("x.event_time"),
        exit_window=rules.window_start_sql("t2"),
    )
    return sql, params + metric_params + ratio_params + dimension_params


def _events_covered(connection: duckdb.DuckDBPyConnection) -> tuple[str, int] | None:
    row = connection.execute("SELECT rules, events FROM counting_state").fetchone()
    return None if row is None else (row[0], row[1])


def _set_covered(
    connection: duckdb.DuckDBPyConnection, rules: CountingRules, events: int, rebuilt: bool
) -> None:
    before = connection.execute("SELECT rebuilds FROM counting_state").fetchone()
    rebuilds = (before[0] if before else 0) + int(rebuilt)
    connection.execute("DELETE FROM counting_state")
    connection.execute(
        "INSERT INTO counting_state VALUES (?, ?, ?)", [rules.fingerprint, events, rebuilds]
    )


def rebuilds(connection: duckdb.DuckDBPyConnection) -> int:
    """How many times the state was rebuilt from all events (0: merged batch by batch)."""
    row = connection.execute("SELECT rebuilds FROM counting_state").fetchone()
    return row[0] if row else 0


def _events_stored(connection: duckdb.DuckDBPyConnection) -> int:
    return connection.execute("SELECT count(*) FROM events").fetchone()[0]


def _events_counted(connection: duckdb.DuckDBPyConnection) -> int:
    """Stored events less those awaiting the counting fold: what a current state covers."""
    waiting = sum(r.events for r in fold.pending_ranges(connection))
    return _events_stored(connection) - waiting


def is_current(connection: duckdb.DuckDBPyConnection, rules: CountingRules) -> bool:
    """The state covers every stored event that is not awaiting the fold, under these
    rules."""
    return _events_covered(connection) == (rules.fingerprint, _events_counted(connection))


def merge_batch(
    connection: duckdb.DuckDBPyConnection, rules: CountingRules, batch: str, batch_events: int
) -> None:
    """Merge the events of table `batch` (columns of the events table), just added to the
    events table, into the state; call inside the transaction that added them. State that was
    not current before the batch stays so: the next refresh rebuilds it (under the refresh's
    memory limit, not the ingestion's)."""
    before = _events_counted(connection) - batch_events
    covered = _events_covered(connection)
    if covered != (rules.fingerprint, before) and not (covered is None and before == 0):
        log.info("counting state not current: left for the next refresh to rebuild")
        return
    # A batch's queries are small: one thread does them in less time and half the CPU, which
    # the ingestion's reader needs (measured in the ingest benchmark).
    connection.execute("SET threads = 1")
    try:
        _merge(connection, rules, batch)
    finally:
        connection.execute("RESET threads")
    if covered is None:
        _set_covered(connection, rules, batch_events, rebuilt=False)
    else:
        connection.execute("UPDATE counting_state SET events = events + ?", [batch_events])


def _merge(connection: duckdb.DuckDBPyConnection, rules: CountingRules, batch: str) -> None:
    """The batch's users' old representatives and its events give their new moments and
    representatives; window_steps moves by the steps of their new moments minus their old."""
    tests, params = rules.tests_relation()
    connection.execute(
        "CREATE OR REPLACE TEMP TABLE batch_rows AS " + rule_events_sql(batch, tests), params
    )
    batch_users = "SELECT DISTINCT user_key FROM batch_rows"
    if rules.metrics:
        metrics, metric_params = rules.metrics_relation()
        connection.execute(
            "CREATE OR REPLACE TEMP TABLE batch_values AS " + value_events_sql(batch, metrics),
            metric_params,
        )
        batch_users = "SELECT user_key FROM batch_rows UNION SELECT user_key FROM batch_values"
        connection.execute(
            "CREATE OR REPLACE TEMP TABLE old_values AS SELECT x.* FROM user_values x "
            f"SEMI JOIN ({batch_users}) b ON x.user_key = b.user_key"
        )
    # Their moments, by their keys alone (a 16-byte column scan), with row ids for the delete
    # below. Most users of a live batch are new and have none.
    connection.execute(
        "CREATE OR REPLACE TEMP TABLE old_moments AS SELECT m.rowid AS row_id, m.* "
        f"FROM user_moments m SEMI JOIN ({batch_users}) b ON m.user_key = b.user_key"
    )
    returning, kept = connection.execute(
        f"SELECT count(*), count(*) FILTER (WHERE NOT {PLAIN}) FROM old_moments"
    ).fetchone()
    rows = "SELECT * FROM batch_rows"
    if returning:
        old = f"SELECT {_MOMENTS} FROM old_moments"
        rows += " UNION ALL " + PLAIN_REPRESENTATIVES_SQL.format(moments=old)
    if kept:
        connection.execute(
            "CREATE OR REPLACE TEMP TABLE old_rows AS SELECT r.rowid AS row_id, r.* "
            f"FROM user_rows r SEMI JOIN (SELECT user_key FROM old_moments WHERE NOT {PLAIN}) k "
            "ON r.user_key = k.user_key"
        )
        rows += f" UNION ALL SELECT {_ROW} FROM old_rows"
    connection.execute(
        "CREATE OR REPLACE TEMP TABLE new_moments AS " + MOMENTS_SQL.format(rows=rows)
    )
    moments = "SELECT *, 1 AS sign FROM new_moments"
    if returning:
        moments += f" UNION ALL SELECT {_MOMENTS}, -1 FROM old_moments"
    steps, step_params = _steps(rules, moments)
    connection.execute(_ADD_STEPS.format(steps=steps), step_params)
    if rules.metrics:
        # Old moments with old values out, new moments with all values in.
        values = (
            "SELECT *, -1 AS sign FROM old_values UNION ALL SELECT *, 1 FROM old_values "
            "UNION ALL SELECT *, 1 FROM batch_values"
        )
        steps, step_params = _metric_steps(rules, moments, values)
        connection.execute(_ADD_METRIC_STEPS.format(steps=steps), step_params)
        connection.execute("INSERT INTO user_values SELECT * FROM batch_values")
    if returning:
        connection.execute(
            "DELETE FROM user_moments WHERE rowid IN (SELECT row_id FROM old_moments)"
        )
    if kept:
        connection.execute("DELETE FROM user_rows WHERE rowid IN (SELECT row_id FROM old_rows)")
    connection.execute("INSERT INTO user_moments SELECT * FROM new_moments")
    kept_users = f"SELECT test_id, user_key, t1 FROM new_moments WHERE NOT {PLAIN}"
    connection.execute("INSERT INTO user_rows " + representatives_sql(rows, kept_users))
    temporary = (
        "batch_rows",
        "old_moments",
        "new_moments",
        "old_rows",
        "batch_values",
        "old_values",
    )
    for table in temporary:
        connection.execute(f"DROP TABLE IF EXISTS {table}")


def rebuild(connection: duckdb.DuckDBPyConnection, rules: CountingRules) -> float:
    """Rebuild the state and the steps from all events, in one transaction; returns the
    seconds it took."""
    return _in_transaction(connection, lambda: _rebuild(connection, rules))


def _in_transaction(connection: duckdb.DuckDBPyConnection, work: Callable[[], T]) -> T:
    """work() in one transaction: all of it stored, or none."""
    connection.execute("BEGIN TRANSACTION")
    try:
        result = work()
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return result


# A rebuild takes the users in parts of about this many events, each part's queries under
# REBUILD_MEMORY_LIMIT: all in one transaction, whose uncommitted parts DuckDB keeps partly
# pinned, so that it ran out of the store's 256 MB with parts of 2M events (10M events in
# all). At 1 GB, parts of 4M rebuilt 100M events (docs/scale.md).
REBUILD_PART_EVENTS = 4_000_000
REBUILD_MEMORY_LIMIT = "1GB"


@contextmanager
def _rebuild_settings(connection: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """The rebuild's memory limit, and no row order to keep (it costs memory over millions
    of users); the connection's own settings again after."""
    limit = connection.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    connection.execute(f"SET memory_limit = '{REBUILD_MEMORY_LIMIT}'")
    connection.execute("SET preserve_insertion_order = false")
    try:
        yield
    finally:
        # A failed rebuild's transaction refuses SET until rolled back; the run fails, and
        # EventStoreResource.open sets the store's limit again on the next open.
        with suppress(duckdb.TransactionException):
            connection.execute(f"SET memory_limit = '{limit}'")
            connection.execute("RESET preserve_insertion_order")


def _rebuild(connection: duckdb.DuckDBPyConnection, rules: CountingRules) -> float:
    started = time.monotonic()
    with _rebuild_settings(connection):
        _rebuild_in_parts(connection, rules, started)
    seconds = time.monotonic() - started
    log.info("counting state rebuilt from all events in %.1f s", seconds)
    return seconds


def _emptied(connection: duckdb.DuckDBPyConnection, table: str) -> None:
    """Empty `table` by dropping it and creating it again as it was: a DELETE of every row
    keeps the rows' versions in memory until the commit (50M users' moments: 414 MB of the
    rebuild's 1 GB)."""
    created = connection.execute(
        "SELECT sql FROM duckdb_tables() WHERE table_name = ? "
        "AND database_name = current_database() AND schema_name = current_schema()",
        [table],
    ).fetchone()[0]
    connection.execute(f"DROP TABLE {table}")
    connection.execute(created)


def _rebuild_in_parts(
    connection: duckdb.DuckDBPyConnection, rules: CountingRules, started: float
) -> None:
    for table in ("user_moments", "user_rows", "user_values", "window_steps", "metric_steps"):
        _emptied(connection, table)
    stored = _events_stored(connection)
    _steps_in_parts(
        connection, rules, _parts(stored), "rebuilt_steps",
        lambda source: _add_users(connection, rules, source), "rebuild", started,
    )  # fmt: skip
    for table, suffix in _steps_tables(rules):
        connection.execute(f"INSERT INTO {table} BY NAME FROM rebuilt_steps{suffix}")
        connection.execute(f"DROP TABLE rebuilt_steps{suffix}")
    _set_covered(connection, rules, stored, rebuilt=True)
    fold.mark_counted(connection, fold.pending_ranges(connection))  # counted just now


def _parts(events: int) -> int:
    """How many parts a pass over `events` events takes (REBUILD_PART_EVENTS each)."""
    return max(1, -(-events // REBUILD_PART_EVENTS))


def _steps_in_parts(
    connection: duckdb.DuckDBPyConnection,
    rules: CountingRules,
    parts: int,
    table: str,
    add_part: Callable[[str], None],
    task: str,
    started: float,
) -> None:
    """Every window's steps of all users into the temporary table `table` (and `table`_metrics
    with metrics; no zero changes), taking the users in `parts` parts: add_part(source) leaves
    the moments and value events of the users of `source` (all of their events) in the
    temporary tables added_moments and added_values."""
    sums = _steps_tables(rules)
    for steps_table, suffix in sums:
        connection.execute(
            f"CREATE OR REPLACE TEMP TABLE {table}{suffix}_parts AS FROM {steps_table} LIMIT 0"
        )
    for part in range(parts):
        # All of a user id's events fall in one part (a hash of the id: a third of the cost
        # of its md5 key, which every part's scan would compute for every event).
        in_part = f"(SELECT * FROM events WHERE hash(user_id) % {parts} = {part})"
        add_part(in_part if parts > 1 else "events")
        _stage_steps(
            connection, rules, "added_moments", "SELECT *, 1 AS sign FROM added_values", [],
            "part_steps",
        )  # fmt: skip
        for _, suffix in sums:
            connection.execute(f"INSERT INTO {table}{suffix}_parts BY NAME FROM part_steps{suffix}")
            connection.execute(f"DROP TABLE part_steps{suffix}")
        _drop_added(connection)
        if parts > 1:
            log.info(
                "counting state %s: part %d of %d done (%.0f s)",
                task, part + 1, parts, time.monotonic() - started,
            )  # fmt: skip
    for _, suffix in sums:
        connection.execute(
            f"CREATE OR REPLACE TEMP TABLE {table}{suffix} AS SELECT * EXCLUDE (change), "
            f"sum(change) AS change FROM {table}{suffix}_parts GROUP BY ALL "
            "HAVING sum(change) <> 0"
        )
        connection.execute(f"DROP TABLE {table}{suffix}_parts")


def _add_users(connection: duckdb.DuckDBPyConnection, rules: CountingRules, source: str) -> None:
    """Add the state of the users of `source` (a relation of the events table's columns
    holding all of these users' events), who have none yet. Their moments and value events
    stay in the temporary tables added_moments and added_values, for their steps."""
    _moments_of(connection, rules, source)
    connection.execute("INSERT INTO user_moments SELECT * FROM added_moments")
    connection.execute(
        f"INSERT INTO user_rows SELECT r.* FROM added_rows r SEMI JOIN "
        f"(SELECT user_key FROM added_moments WHERE NOT {PLAIN}) k ON r.user_key = k.user_key"
    )
    connection.execute("DROP TABLE added_rows")
    if rules.metrics:
        connection.execute("INSERT INTO user_values SELECT * FROM added_values")


def _moments_of(connection: duckdb.DuckDBPyConnection, rules: CountingRules, source: str) -> None:
    """The representatives, moments and (with metrics) value events of the users of `source`
    (all of their events) into the temporary tables added_rows, added_moments and
    added_values, leaving the state alone."""
    tests, test_params = rules.tests_relation()
    connection.execute(
        "CREATE OR REPLACE TEMP TABLE added_rows AS "
        + representatives_sql(rule_events_sql(source, tests)),
        test_params,
    )
    connection.execute(
        "CREATE OR REPLACE TEMP TABLE added_moments AS "
        + MOMENTS_SQL.format(rows="SELECT * FROM added_rows")
    )
    if rules.metrics:
        metrics, metric_params = rules.metrics_relation()
        connection.execute(
            "CREATE OR REPLACE TEMP TABLE added_values AS " + value_events_sql(source, metrics),
            metric_params,
        )


def _drop_added(connection: duckdb.DuckDBPyConnection) -> None:
    for table in ("added_rows", "added_moments", "added_values"):
        connection.execute(f"DROP TABLE IF EXISTS {table}")


def rebuild_users(
    connection: duckdb.DuckDBPyConnection,
    rules: CountingRules,
    start: datetime,
    end: datetime,
) -> None:
    """A repair: recompute, from all of their events, the state of every user with an event
    in the windows starting in [start, end), then every window's steps from the moments of
    all users (a pass over users, not events), so that steps no user accounts for go too. Call
    inside a transaction."""
    _make_current(connection, rules)  # what awaits the fold, counted before users are redone
    tests, params = rules.tests_relation()
    in_range = "(SELECT * FROM events WHERE window_start >= ? AND window_start < ?)"
    users = f"SELECT user_key FROM ({rule_events_sql(in_range, tests)})"
    users_params: list[object] = [start, end, *params]
    if rules.metrics:
        metrics, metric_params = rules.metrics_relation()
        users += f" UNION SELECT user_key FROM ({value_events_sql(in_range, metrics)})"
        users_params += [start, end, *metric_params]
    connection.execute(
        f"CREATE OR REPLACE TEMP TABLE range_users AS SELECT DISTINCT user_key FROM ({users})",
        users_params,
    )
    for table in ("user_moments", "user_rows", "user_values"):
        connection.execute(
            f"DELETE FROM {table} WHERE user_key IN (SELECT user_key FROM range_users)"
        )
    users_events = (
        f"(SELECT e.* FROM events e SEMI JOIN range_users u ON {user_key_sql('e')} = u.user_key)"
    )
    _add_users(connection, rules, users_events)
    _drop_added(connection)
    connection.execute("DROP TABLE range_users")
    _steps_from_state(connection, rules)


def _steps_from_state(connection: duckdb.DuckDBPyConnection, rules: CountingRules) -> None:
    """Replace every window's steps by the sum of all users' steps in `user_moments`, staged
    in a table DuckDB can spill (a MERGE of the same query over 5M users ran out of 256 MB)."""
    connection.execute("DELETE FROM window_steps")
    connection.execute("DELETE FROM metric_steps")
    _stage_steps(
        connection, rules, "user_moments", "SELECT *, 1 AS sign FROM user_values", [],
        "state_steps",
    )  # fmt: skip
    for table, suffix in _steps_tables(rules):
        connection.execute(
            f"INSERT INTO {table} BY NAME SELECT * FROM state_steps{suffix} WHERE change <> 0"
        )
        connection.execute(f"DROP TABLE state_steps{suffix}")


def recount_steps(
    connection: duckdb.DuckDBPyConnection,
    rules: CountingRules,
    table: str,
    parts: int | None = None,
) -> None:
    """Recompute every window's steps from all events, as a rebuild would, into the temporary
    table `table` (columns of window_steps; `table`_metrics with metrics), leaving the state
    alone. In parts of the users like a rebuild (`parts`: how many; by default one per
    REBUILD_PART_EVENTS events) and under its memory limit; `parts=1` is one pass over the
    events, what each refresh cost before the state existed."""
    started = time.monotonic()
    parts = parts or _parts(_events_stored(connection))

    def part_moments(source: str) -> None:
        _moments_of(connection, rules, source)
        connection.execute("DROP TABLE added_rows")

    with _rebuild_settings(connection):
        _steps_in_parts(connection, rules, parts, table, part_moments, "recount", started)


def _steps_tables(rules: CountingRules) -> list[tuple[str, str]]:
    """The steps' tables, each with the suffix _stage_steps gives its staged steps."""
    return [("window_steps", "")] + ([("metric_steps", "_metrics")] if rules.metrics else [])


def _stage_steps(
    connection: duckdb.DuckDBPyConnection,
    rules: CountingRules,
    moments: str,
    values: str,
    value_params: list[object],
    table: str,
) -> None:
    """Every window's steps of the users in table `moments` (columns of MOMENTS_SQL) into
    the temporary table `table` (columns of window_steps), and with their `values` (a
    relation of user_values' columns and a sign, with its parameters) the metric steps into
    `table`_metrics (columns of metric_steps) when the rules have metrics."""
    users = f"SELECT *, 1 AS sign FROM {moments}"
    steps, step_params = _steps(rules, users)
    connection.execute(
        f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT test_id, dimension, segment, "
        f"measure, variant, window_start, sum(change) AS change FROM ({steps}) GROUP BY ALL",
        step_params,
    )
    if rules.metrics:
        steps, step_params = _metric_steps(rules, users, values)
        connection.execute(
            f"CREATE OR REPLACE TEMP TABLE {table}_metrics AS SELECT test_id, dimension, "
            f"segment, metric, measure, variant, window_start, sum(change) AS change "
            f"FROM ({steps}) GROUP BY ALL",
            # the values' parameters last, where the values sit in the query
            step_params + value_params,
        )


def differences(connection: duckdb.DuckDBPyConnection, rules: CountingRules) -> list[tuple]:
    """Recompute the steps from all events (as a rebuild would, without writing) and return
    the (test_id, measure, variant, window_start, stored, recomputed) rows that differ."""
    recount_steps(connection, rules, "recounted_steps")
    compared = [("window_steps", "recounted_steps", "measure")]
    if rules.metrics:
        # a metric's measures as "metric.measure" (e.g. revenue.sum_squares)
        compared.append(("metric_steps", "recounted_steps_metrics", "metric || '.' || measure"))
    different = []
    for stored, recounted, measure in compared:
        label = (
            f"CASE WHEN dimension = 'all' THEN {measure} "
            f"ELSE dimension || '=' || segment || ':' || {measure} END"
        )
        sql = _DIFFERENT.format(stored=stored, recounted=recounted, label=label)
        different += connection.execute(sql).fetchall()
        connection.execute(f"DROP TABLE {recounted}")
    return different


# A row's measure as "dimension=segment:measure" outside the overall steps.
_DIFFERENT = """
WITH s AS (
    SELECT test_id, {label} AS measure, variant, window_start, change
    FROM {stored} WHERE change <> 0
),
f AS (SELECT test_id, {label} AS measure, variant, window_start, change FROM {recounted})
SELECT test_id, measure, variant, window_start,
       coalesce(s.change, 0) AS stored, coalesce(f.change, 0) AS recomputed
FROM s FULL JOIN f USING (test_id, measure, variant, window_start)
WHERE coalesce(s.change, 0) <> coalesce(f.change, 0)
ORDER BY ALL
"""


def ensure_current(connection: duckdb.DuckDBPyConnection, rules: CountingRules) -> None:
    """Count what awaits the fold (parallel runs' events), or rebuild the state if it does
    not cover every other event under these rules; in one transaction, so that runs
    committing meanwhile are left whole to the next call. A read-only connection reads the
    state as the last fold left it."""
    _in_transaction(connection, lambda: _make_current(connection, rules))


def _make_current(connection: duckdb.DuckDBPyConnection, rules: CountingRules) -> None:
    """ensure_current's work, inside the caller's transaction."""
    pending = fold.pending_ranges(connection)
    waiting = sum(r.events for r in pending)
    covered = _events_covered(connection)
    stored = _events_stored(connection)
    read_only = _read_only(connection)
    if covered is None and stored == waiting:
        if read_only:
            return
        _set_covered(connection, rules, 0, rebuilt=False)  # nothing counted yet
        covered = (rules.fingerprint, 0)
    if covered == (rules.fingerprint, stored - waiting):
        if pending and not read_only:
            _fold(connection, rules, pending, waiting)
        return
    if covered is None:
        why = "no counting state yet"
    elif covered[0] != rules.fingerprint:
        why = "the counting rules changed (experiments.yaml)"
    else:
        why = f"the state covers {covered[1]:,} of {stored - waiting:,} events"
    log.warning("rebuilding the counting state from all events: %s", why)
    _rebuild(connection, rules)


def _fold(
    connection: duckdb.DuckDBPyConnection,
    rules: CountingRules,
    ranges: list[fold.PendingRange],
    waiting: int,
    rebuild_if_unequal: bool = True,
) -> bool:
    """Counts the events of `ranges`; whether it did. When the ledger and the events disagree
    it rebuilds the state from the events, or leaves that to the next refresh (an ingestion
    run's fold, under the run's memory limit)."""
    fold.pending_events(connection, ranges, "folded_events")
    folded = connection.execute("SELECT count(*) FROM folded_events").fetchone()[0]
    if folded != waiting:  # the ledger and the events disagree: count from the events
        log.warning("counting fold: %d events for ledger rows of %d", folded, waiting)
        connection.execute("DROP TABLE folded_events")
        if rebuild_if_unequal:
            _rebuild(connection, rules)
        return False
    _merge(connection, rules, "folded_events")
    connection.execute("UPDATE counting_state SET events = events + ?", [waiting])
    fold.mark_counted(connection, ranges)
    connection.execute("DROP TABLE folded_events")
    log.info("counting fold: %d events of %d ledger ranges counted", waiting, len(ranges))
    return True


def fold_if_current(
    connection: duckdb.DuckDBPyConnection, rules: CountingRules, one_thread: bool = True
) -> int:
    """An ingestion run's fold of the chunks it stored (and any others awaiting the fold), in
    one transaction; returns the events counted. State that is not current is left for the
    next refresh to rebuild, under the refresh's memory limit rather than the ingestion's.
    `one_thread`: a fold's queries are small, and one thread does them in less time and half
    the CPU, which the run's reader needs (measured in the ingest benchmark); DuckDB's
    setting is the database's, so a fold beside other work leaves it alone."""
    # Set outside the transaction, so that a failed fold's rollback is what the caller sees.
    if one_thread:
        connection.execute("SET threads = 1")
    try:
        return _in_transaction(connection, lambda: _fold_if_current(connection, rules))
    finally:
        if one_thread:
            with suppress(duckdb.Error):  # an invalidated database: its error is raised
                connection.execute("RESET threads")


def _fold_if_current(connection: duckdb.DuckDBPyConnection, rules: CountingRules) -> int:
    pending = fold.pending_ranges(connection)
    if not pending:
        return 0
    waiting = sum(r.events for r in pending)
    covered = _events_covered(connection)
    stored = _events_stored(connection)
    if covered is None and stored == waiting:
        _set_covered(connection, rules, 0, rebuilt=False)  # nothing counted before
        covered = (rules.fingerprint, 0)
    if covered != (rules.fingerprint, stored - waiting):
        log.info("counting state not current: left for the next refresh to rebuild")
        return 0
    return waiting if _fold(connection, rules, pending, waiting, rebuild_if_unequal=False) else 0


def _read_only(connection: duckdb.DuckDBPyConnection) -> bool:
    return connection.execute(
        "SELECT readonly FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()[0]
