"""Refresh benchmark: what one live refresh of the latest window costs as the history grows,
read from the incremental counting state, side by side with a full recount of the history
(what every refresh did before issue 20).

For each history size, 30 days of events (the backfill benchmark's generator) are written
straight into a fresh DuckDB store and the counting state is built from them (ingestion keeps
it batch by batch; here it is rebuilt once, and that time is reported too). Then the latest
window's refresh is timed, best of 3, under the event store's memory limit: counting, the
quality figures and the posterior records; first from the state, then by a full recount: the
same rules applied to every event in one pass (`counting.state.recount_steps` with one part,
under the limit of its own a rebuild has), which is what each refresh did before issue 20.
(The reference queries of counting/recount.py, one query per cutoff, run out of the 256 MB
limit at 10M events.)

    .venv/bin/python -m benchmarks.refresh_benchmark                     # docs/benchmarks.md
    .venv/bin/python -m benchmarks.refresh_benchmark --events 100000 1000000 --no-write
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from benchmarks.backfill_benchmark import best_of, progress, write_history
from diana_pipeline.analysis import posterior_records
from diana_pipeline.counting import CountingRules, quality, window_counts
from diana_pipeline.counting import state as counting_state
from diana_pipeline.harness.docs import BENCHMARKS_PAGE, write_section
from diana_pipeline.markdown import table
from diana_pipeline.resources.event_store import DEFAULT_MEMORY_LIMIT
from diana_pipeline.store import EventStore

DAYS = 30
TARGET_GROWTH, TARGET_SECONDS = 1.5, 0.5  # issue 20: flat from 1M to 30M, ≤ 0.5 s at 30M


@dataclass
class Figures:
    state: float  # the refresh from the counting state
    recount: float  # the same refresh by a full recount
    rebuild: float  # building the state from all events, once


def refresh_seconds(folder: Path, events: int) -> Figures:
    """Write `events` over DAYS days, then time the latest window's refresh (best of 3)."""
    home = folder / f"history-{events}"
    config, _, today, rebuild = write_history(home, events, DAYS)
    path = config.infrastructure.duckdb.path
    naive_today = today.replace(tzinfo=None)
    latest = (naive_today - timedelta(hours=1), naive_today)

    def from_state() -> tuple[list, object]:
        with EventStore.open(path, memory_limit=DEFAULT_MEMORY_LIMIT) as store:
            counts = window_counts(store.connection, config, [latest])
            figures = quality(store.connection, config, latest[1])
            return posterior_records(config, counts, [latest], naive_today), figures

    def by_recount() -> tuple[list, object]:
        with EventStore.open(path, memory_limit=DEFAULT_MEMORY_LIMIT) as store:
            counting_state.recount_steps(
                store.connection, CountingRules.of(config), "recounted", parts=1
            )
            counts = window_counts(store.connection, config, [latest], steps_table="recounted")
            figures = quality(store.connection, config, latest[1], steps_table="recounted")
            return posterior_records(config, counts, [latest], naive_today), figures

    # Like for like: both ways give the same records and quality figures.
    if from_state() != by_recount():
        raise AssertionError("the refresh from the state differs from the full recount")
    progress(f"refreshing the latest window over {events:,} events from the state (best of 3)")
    state = best_of(3, from_state)
    progress(f"refreshing the latest window over {events:,} events by a full recount (best of 3)")
    recount = best_of(3, by_recount)
    shutil.rmtree(home)
    return Figures(state, recount, rebuild)


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
        figures = {n: refresh_seconds(Path(scratch), n) for n in args.events}
    smallest = figures[min(figures)]
    rows = [
        (
            f"{n:,}",
            f"{f.state:.3f}",
            f"{f.state / smallest.state:.1f}×",
            f"{f.recount:.2f}",
            f"{f.recount / f.state:,.0f}×",
            f"{f.rebuild:.1f}",
        )
        for n, f in figures.items()
    ]
    rendered = table(
        [
            "events of history",
            "refresh from the state (s)",
            "× the smallest",
            "by a full recount (s)",
            "recount / state",
            "state rebuilt from all events, once (s)",
        ],
        rows,
        align="rrrrrr",
    )
    largest = figures[max(figures)]
    met = largest.state <= TARGET_SECONDS and largest.state <= TARGET_GROWTH * smallest.state
    print(rendered)
    if not args.no_write:
        write_section(
            BENCHMARKS_PAGE,
            "refresh-benchmark",
            "Refresh cost against the history",
            "python -m benchmarks.refresh_benchmark "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            f"{DAYS} days of events written straight into DuckDB, and the counting state "
            "built from them once (ingestion keeps it batch by batch). One refresh of the "
            "latest window (counting, quality figures, posterior records) under the event "
            "store's memory limit, best of 3: from the state, and by a full recount of every "
            "event before the window's end, as every refresh did before issue 20. Target "
            f"(issue 20): ≤ {TARGET_GROWTH}× from the smallest to the largest history and "
            f"≤ {TARGET_SECONDS} s at the largest: {'met' if met else 'missed'}.",
            rendered,
        )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
