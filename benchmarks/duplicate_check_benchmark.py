"""Duplicate-check benchmark: what storing one 50,000-event batch costs as its hourly window
fills, in both stores, with the check at the event's time (today) side by side with the check
across the whole window (before 2026-12-03, kept here as the baseline).

One window is filled in time order, as live traffic fills it, through `EventStore.add_events`.
At each size the next batch (the next span of time, and 2% more events that repeat the
batch before's) is stored in a transaction that is rolled back, best of 5: once as the store
does it, once with the window-wide check swapped in. The DuckLake store's catalog is in a private
PostgreSQL (scale profile), its files on local disk.

    .venv/bin/python -m benchmarks.duplicate_check_benchmark              # docs/benchmarks.md
    .venv/bin/python -m benchmarks.duplicate_check_benchmark --events 1000000 --no-write
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from benchmarks.backfill_benchmark import best_of, progress
from diana_pipeline import store as store_module
from diana_pipeline.events import NO_VALUE, EventColumns
from diana_pipeline.harness.docs import BENCHMARKS_PAGE, write_section
from diana_pipeline.harness.postgres import postgres_for_tests
from diana_pipeline.markdown import table
from diana_pipeline.store import EventStore, StoreLocation, WriteCounts
from diana_pipeline.windows import to_microseconds

BATCH = 50_000
REDELIVERED = BATCH // 50  # 2% of a batch repeats events of the batch before
WINDOW = datetime(2026, 12, 1, 10)
HOUR_US = 3_600_000_000
TARGET_GROWTH = 1.5  # a batch at the largest window costs at most 1.5× one in an empty window

# The check before 2026-12-03: the stored events of the batch's window, every one of them
# (its bounds were the statement's constants; $first_us and $last_us go unused).
TODAYS_CONDITION = """
    WHERE events.event_time BETWEEN make_timestamp($first_us) AND make_timestamp($last_us)
      AND events.event_time = incoming.event_time AND events.event_key = incoming.event_key
"""
WINDOW_WIDE_CONDITION = f"""
    WHERE events.window_start = make_timestamp({to_microseconds(WINDOW)})
      AND $first_us::BIGINT <= $last_us::BIGINT
      AND events.window_start = incoming.window_start AND events.event_key = incoming.event_key
"""
assert TODAYS_CONDITION in store_module._NEW_EVENTS
WINDOW_WIDE_CHECK = store_module._NEW_EVENTS.replace(TODAYS_CONDITION, WINDOW_WIDE_CONDITION)


def batch(number: int, batches: int) -> EventColumns:
    """The `number`th batch of a window filled by `batches` of them, in time order: BATCH new
    events, and from the second batch on REDELIVERED first ones that repeat the batch
    before's last events."""
    step = HOUR_US // (batches * BATCH)
    first = number * BATCH
    ids = list(range(first - REDELIVERED if number else first, first + BATCH))
    start = to_microseconds(WINDOW)
    offset = number * (BATCH + REDELIVERED)
    return EventColumns(
        kafka_partition=[0] * len(ids),
        kafka_offset=list(range(offset, offset + len(ids))),
        event_id=[f"event-{i}" for i in ids],
        event_type=["ButtonDisplayed"] * len(ids),
        test_id=["button-color-test"] * len(ids),
        variant=["control" if i % 2 else "treatment" for i in ids],
        user_id=[f"user-{i // 3}" for i in ids],
        event_us=[start + i * step for i in ids],
        window_us=[start] * len(ids),
        value=[NO_VALUE] * len(ids),
        properties=[None] * len(ids),
    )


@contextmanager
def window_wide_check() -> Iterator[None]:
    today = store_module._NEW_EVENTS
    store_module._NEW_EVENTS = WINDOW_WIDE_CHECK
    try:
        yield
    finally:
        store_module._NEW_EVENTS = today


def batch_seconds(store: EventStore, columns: EventColumns) -> float:
    """One batch stored and rolled back, best of 5."""

    def store_and_roll_back() -> None:
        store.connection.execute("BEGIN TRANSACTION")
        try:
            counts = WriteCounts()
            store.add_events("web", columns, counts)
            assert counts.duplicates == (REDELIVERED if columns.kafka_offset[0] else 0)
        finally:
            store.connection.execute("ROLLBACK")

    return best_of(5, store_and_roll_back)


def measure(location: StoreLocation, sizes: list[int], label: str) -> list[tuple]:
    """Per window size: (store, events in the window, today's check, the window-wide one)."""
    batches = max(sizes) // BATCH + 1
    rows = []
    stored = 0
    with EventStore.open(location) as store:
        for size in sizes:
            while stored < size:
                with store.transaction():
                    store.add_events("web", batch(stored // BATCH, batches), WriteCounts())
                stored += BATCH
            progress(f"{label}: {stored:,} events in the window")
            probe = batch(stored // BATCH, batches)
            today = batch_seconds(store, probe)
            with window_wide_check():
                before = batch_seconds(store, probe)
            rows.append((label, f"{stored:,}", f"{today * 1000:.0f}", f"{before * 1000:.0f}"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=8_000_000, help="the window's last size")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    sizes = [0] + [s for s in (1_000_000, 2_000_000, 4_000_000) if s < args.events]
    sizes.append(args.events // BATCH * BATCH)
    with tempfile.TemporaryDirectory(prefix="diana-bench-") as folder:
        rows = measure(Path(folder) / "events.duckdb", sizes, "DuckDB file")
        Path(folder).chmod(0o755)  # the scale profile's PostgreSQL runs as its own user
        progress("starting a private PostgreSQL (scale profile)")
        with postgres_for_tests() as postgres:
            os.environ["DIANA_POSTGRES_PASSWORD"] = postgres.password
            rows += measure(postgres.new_lake_location(Path(folder) / "lake"), sizes, "DuckLake")
    growth = {
        label: float(mine[-1][2]) / max(float(mine[0][2]), 1.0)
        for label in ("DuckDB file", "DuckLake")
        for mine in [[row for row in rows if row[0] == label]]
    }
    met = all(g <= TARGET_GROWTH for g in growth.values())
    rendered = table(
        ["store", "events in the window", "ms per batch, at the event's time",
         "ms per batch, window-wide (before)"],
        rows,
        align="lrrr",
    )  # fmt: skip
    print(rendered)
    if not args.no_write:
        write_section(
            BENCHMARKS_PAGE,
            "duplicate-check-benchmark",
            "The duplicate check against the window's size",
            "python -m benchmarks.duplicate_check_benchmark "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            f"One hourly window filled in time order through the store's `add_events`; at "
            f"each size the next batch, {BATCH:,} new events and {REDELIVERED:,} "
            "redeliveries of the batch before's, stored and rolled back, best of 5: with the "
            "check at the event's time (an event is a duplicate when its event_id is stored "
            "at its timestamp), and with the check across the whole window it replaced. "
            f"Target: a batch at the largest window ≤ {TARGET_GROWTH}× one in an empty "
            f"window, in both stores: {'met' if met else 'missed'} "
            f"({', '.join(f'{k} {v:.2f}×' for k, v in growth.items())}).",
            rendered,
        )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
