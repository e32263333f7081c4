"""The ledger ranges whose events await counting: parallel ingestion runs (DuckLake) append
events, rejected messages and ledger rows side by side, without the store's writer lock,
so they cannot merge their events into the counting state (one writer's work). Their ledger
rows say `counted = false` and their events carry the range's start (`range_start`); the
writer counts them at its next read of the state (state.ensure_current) and records the
ranges in `counted_ranges` in the same transaction: each range is counted exactly once,
whatever runs commit meanwhile."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from diana_pipeline.windows import utc_now

_PENDING = """
SELECT r.topic, r.kafka_partition, r.start_offset, r.events, r.ingested_at
FROM ingested_ranges r
WHERE r.counted = false AND NOT EXISTS (
    SELECT 1 FROM counted_ranges c WHERE c.topic = r.topic
        AND c.kafka_partition = r.kafka_partition AND c.start_offset = r.start_offset)
ORDER BY ALL
"""
# A range's events were stored moments before its ledger row, by the same process: the
# margin only has to cover one chunk's time. It lets DuckDB skip the files of older events.
_STORED_BEFORE_LEDGER = "INTERVAL 1 HOUR"


@dataclass(frozen=True)
class PendingRange:
    topic: str
    partition: int
    start: int
    events: int  # newly stored events of the range (its ledger row's count)


def pending_ranges(connection: duckdb.DuckDBPyConnection) -> list[PendingRange]:
    """The ledger ranges stored but not counted yet, in the connection's snapshot."""
    rows = connection.execute(_PENDING).fetchall()
    return [PendingRange(t, p, s, n) for t, p, s, n, _ in rows]


def pending_events(connection: duckdb.DuckDBPyConnection, table: str) -> list[PendingRange]:
    """Put the events of the pending ranges in temporary table `table` (columns of the
    events table); returns the ranges."""
    rows = connection.execute(_PENDING).fetchall()
    connection.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM events LIMIT 0")
    if rows:
        ranges = ", ".join(f"(?, {int(p)}, {int(s)})" for _, p, s, _, _ in rows)
        since = min(row[4] for row in rows)
        connection.execute(
            f"INSERT INTO {table} SELECT e.* FROM events e SEMI JOIN "
            f"(VALUES {ranges}) AS r(topic, kafka_partition, start_offset) "
            "ON e.topic = r.topic AND e.kafka_partition = r.kafka_partition "
            "AND e.range_start = r.start_offset "
            f"WHERE e.range_start IS NOT NULL AND e.ingested_at >= ? - {_STORED_BEFORE_LEDGER}",
            [*(row[0] for row in rows), since],
        )
    return [PendingRange(t, p, s, n) for t, p, s, n, _ in rows]


def mark_counted(connection: duckdb.DuckDBPyConnection, ranges: list[PendingRange]) -> None:
    """Record the ranges as counted (in the transaction that counted them)."""
    if ranges:
        values = ", ".join(f"(?, {int(r.partition)}, {int(r.start)}, ?)" for r in ranges)
        now = utc_now()
        connection.execute(
            f"INSERT INTO counted_ranges VALUES {values}",
            [value for r in ranges for value in (r.topic, now)],
        )
