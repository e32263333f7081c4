"""The ledger ranges whose events await counting. Ingestion runs store each chunk's events,
rejected messages and ledger row in one transaction without merging them into the counting
state: their ledger rows say `counted = false` and their events carry the range's start
(`range_start`). A single writer folds them every few chunks and at its run's end
(state.fold_if_current); parallel runs (DuckLake), which append side by side without the
store's writer lock, leave them to the writer's next read of the state
(state.ensure_current). A fold records the ranges it counted in `counted_ranges` in its own
transaction: each range is counted exactly once, whatever runs commit meanwhile. A fold reads
the ledger since `counted_before` only, before which every range is counted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

from diana_pipeline.windows import utc_now

# Every range ingested before `counted_before` is counted, so a fold reads the ledger since
# then only; reading all of it grew with the history (1.1-1.4 s a fold at 5M ledger rows, a
# month of live traffic on 6 partitions). The times are constants to DuckDB, which then
# skips the older row groups (DuckLake: files) by their min/max.
_PENDING = """
SELECT r.topic, r.kafka_partition, r.start_offset, r.events, r.ingested_at
FROM ingested_ranges r
WHERE r.counted = false AND r.ingested_at >= $horizon AND NOT EXISTS (
    SELECT 1 FROM counted_ranges c WHERE c.counted_at >= $counted_since
        AND c.topic = r.topic AND c.kafka_partition = r.kafka_partition
        AND c.start_offset = r.start_offset)
ORDER BY ALL
"""
# A range's ledger row is written moments before its chunk commits. A range written this
# long before one that a fold counted was committed before that one, so the fold saw it and
# counted it too. The margin also covers the clocks of the hosts that write and count.
COMMITTED_WITHIN = timedelta(hours=1)
# A range's events were stored moments before its ledger row, by the same process: the
# margin only has to cover one chunk's time. It lets DuckDB skip the files of older events.
_STORED_BEFORE_LEDGER = "INTERVAL 1 HOUR"


@dataclass(frozen=True)
class PendingRange:
    topic: str
    partition: int
    start: int
    events: int  # newly stored events of the range (its ledger row's count)
    ingested_at: datetime  # when its ledger row was written


def pending_ranges(connection: duckdb.DuckDBPyConnection) -> list[PendingRange]:
    """The ledger ranges stored but not counted yet, in the connection's snapshot."""
    horizon = _horizon(connection)
    parameters = {  # no horizon yet: the whole ledger
        "horizon": horizon or datetime.min,
        "counted_since": datetime.min if horizon is None else horizon - COMMITTED_WITHIN,
    }
    return [PendingRange(*row) for row in connection.execute(_PENDING, parameters).fetchall()]


def _horizon(connection: duckdb.DuckDBPyConnection) -> datetime | None:
    return connection.execute("SELECT max(ingested_at) FROM counted_before").fetchone()[0]


def pending_events(
    connection: duckdb.DuckDBPyConnection, ranges: list[PendingRange], table: str
) -> None:
    """Put the events of `ranges` in temporary table `table` (columns of the events
    table)."""
    connection.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM events LIMIT 0")
    if ranges:
        values = ", ".join(f"(?, {int(r.partition)}, {int(r.start)})" for r in ranges)
        since = min(r.ingested_at for r in ranges)
        connection.execute(
            f"INSERT INTO {table} SELECT e.* FROM events e SEMI JOIN "
            f"(VALUES {values}) AS r(topic, kafka_partition, start_offset) "
            "ON e.topic = r.topic AND e.kafka_partition = r.kafka_partition "
            "AND e.range_start = r.start_offset "
            f"WHERE e.range_start IS NOT NULL AND e.ingested_at >= ? - {_STORED_BEFORE_LEDGER}",
            [*(r.topic for r in ranges), since],
        )


def mark_counted(connection: duckdb.DuckDBPyConnection, ranges: list[PendingRange]) -> None:
    """Record the ranges as counted, in the transaction that counted them: every range
    pending in its snapshot (pending_ranges). Every range written more than
    COMMITTED_WITHIN before the newest of them is counted from now on."""
    if not ranges:
        return
    values = ", ".join(f"(?, {int(r.partition)}, {int(r.start)}, ?)" for r in ranges)
    now = utc_now()
    connection.execute(
        f"INSERT INTO counted_ranges VALUES {values}",
        [value for r in ranges for value in (r.topic, now)],
    )
    horizon = max(r.ingested_at for r in ranges) - COMMITTED_WITHIN
    before = _horizon(connection)
    if before is None or horizon > before:
        connection.execute("DELETE FROM counted_before")
        connection.execute("INSERT INTO counted_before VALUES (?)", [horizon])
