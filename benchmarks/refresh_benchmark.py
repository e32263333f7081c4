"""Refresh benchmark: what one live refresh of the latest window costs as the history grows,
the baseline of issue 20 (incremental state). Today a refresh recounts every event before the
window's end, so its cost follows the history, not the batch.

For each history size, 30 days of events (the backfill benchmark's generator) are written
straight into a fresh DuckDB store; then the latest window's refresh is timed, best of 3:
counting (`counting.window_counts`), the quality figures, and the posterior records, with the
event store's memory limit as the pipeline sets it.

    .venv/bin/python -m benchmarks.refresh_benchmark                     # docs/benchmarks.md
    .venv/bin/python -m benchmarks.refresh_benchmark --events 100000 1000000 --no-write
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from benchmarks.backfill_benchmark import best_of, progress, write_history
from diana_pipeline.analysis import posterior_records
from diana_pipeline.counting import quality, window_counts
from diana_pipeline.harness.docs import BENCHMARKS_PAGE, write_section
from diana_pipeline.markdown import table
from diana_pipeline.resources.event_store import DEFAULT_MEMORY_LIMIT
from diana_pipeline.store import EventStore

DAYS = 30
TARGET_GROWTH, TARGET_SECONDS = 1.5, 0.5  # issue 20: flat from 1M to 30M, ≤ 0.5 s at 30M


def refresh_seconds(folder: Path, events: int) -> float:
    """Write `events` over DAYS days, then time the latest window's refresh (best of 3)."""
    home = folder / f"history-{events}"
    config, _, today = write_history(home, events, DAYS)
    path = config.infrastructure.duckdb.path
    naive_today = today.replace(tzinfo=None)
    latest = (naive_today - timedelta(hours=1), naive_today)

    def refresh() -> None:
        with EventStore.open(path, memory_limit=DEFAULT_MEMORY_LIMIT) as store:
            counts = window_counts(store.connection, config, [latest])
            quality(store.connection, config, latest[1])
            posterior_records(config, counts, [latest], naive_today)

    progress(f"refreshing the latest window over {events:,} events (best of 3)")
    seconds = best_of(3, refresh)
    shutil.rmtree(home)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events", type=int, nargs="+", default=[1_000_000, 10_000_000, 30_000_000]
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="diana-refresh-") as scratch:
        seconds = {n: refresh_seconds(Path(scratch), n) for n in args.events}
    smallest = seconds[min(seconds)]
    rows = [(f"{n:,}", f"{s:.2f}", f"{s / smallest:.1f}×") for n, s in seconds.items()]
    figures = table(
        ["events of history", "refresh of the latest window (s)", "× the smallest"],
        rows,
        align="rrr",
    )
    largest = seconds[max(seconds)]
    met = largest <= TARGET_SECONDS and largest <= TARGET_GROWTH * smallest
    print(figures)
    if not args.no_write:
        write_section(
            BENCHMARKS_PAGE,
            "refresh-benchmark",
            "Refresh cost against the history",
            "python -m benchmarks.refresh_benchmark "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            f"{DAYS} days of events written straight into DuckDB; one refresh of the latest "
            "window (counting, quality figures, posterior records) under the event store's "
            "memory limit, best of 3. Today a refresh recounts all history before the "
            "window's end: this is the baseline for incremental state (issue 20), whose "
            f"target is ≤ {TARGET_GROWTH}× from the smallest to the largest history and "
            f"≤ {TARGET_SECONDS} s at the largest: {'met' if met else 'missed'}.",
            figures,
        )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
