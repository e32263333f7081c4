"""Backfill benchmark: rebuild 30 days of hourly windows over 10 million events in one run,
beside a plain DuckDB GROUP BY over the same rows (the limit).

The events are written straight into a fresh DuckDB store (no Kafka: this measures the
rebuild, not ingestion). Diana's figure is one in-process run of the statistics job over
every window (variant_increments, posteriors, superiority, allocation and
published_posteriors into the CSV sink), as a single-run backfill from the UI does it. The
counting step alone is also timed, beside the old way (two full counting queries per
window, measured on a sample of windows and scaled).

    .venv/bin/python -m benchmarks.backfill_benchmark                   # docs/benchmarks.md
    .venv/bin/python -m benchmarks.backfill_benchmark --events 1000000 --days 3 --no-write
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest.mock import patch

import duckdb
from dagster import DagsterEventType, DagsterInstance, materialize

from diana_pipeline.assets.ingestion import build_events
from diana_pipeline.assets.statistics import build_statistics
from diana_pipeline.config import ExperimentsConfig, load_config
from diana_pipeline.counting import CountingRules, cumulative_counts, window_counts
from diana_pipeline.counting import state as counting_state
from diana_pipeline.harness.docs import BENCHMARKS_PAGE, write_section
from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.markdown import table
from diana_pipeline.partitions import partition_key
from diana_pipeline.resources import pipeline_resources
from diana_pipeline.store import EventStore

TARGET = 3.0

# Users arrive uniformly over the period; each has an exposure, and with the variant's rate
# a click a few minutes later, else a second exposure. Two events per user, stored in time
# order as ingestion stores them (so that DuckDB's per-row-group min/max of window_start lets
# a query of one window skip the others, as it does on a store that ingestion filled).
_FILL_SQL = """
INSERT INTO events BY NAME
WITH users AS (
    SELECT i AS user_number,
           'u' || i AS user_id,
           CASE WHEN hash(i) % 2 = 0 THEN 'control' ELSE 'treatment' END AS variant,
           $start + to_microseconds((hash(i * 7 + 1) % $span)::BIGINT) AS first_seen
    FROM range($users) AS r(i)
)
SELECT hash_key(event_id) AS event_key, event_id, event_type, 'button-color-test' AS test_id,
       variant, user_id, event_time,
       CASE WHEN event_type = 'Purchase' THEN 1 + (hash(event_id) % 9900) / 100 END AS value,
       -- every user's exposures carry a device of 5 and a country of 20 (segments)
       CASE WHEN event_type = 'ButtonDisplayed'
            THEN '{"country":"c' || hash(user_id || 'c') % 20 || '","device":"d'
                 || hash(user_id || 'd') % 5 || '"}' END AS properties,
       time_bucket(INTERVAL 1 hour, event_time) AS window_start,
       'web-events' AS topic, 0 AS kafka_partition, row_number() OVER () AS kafka_offset,
       now()::TIMESTAMP AS ingested_at
FROM (
    SELECT 'x' || user_number || '-1' AS event_id, 'ButtonDisplayed' AS event_type, variant,
           user_id, first_seen AS event_time FROM users
    UNION ALL
    SELECT 'x' || user_number || '-2',
           CASE WHEN (hash(user_number * 13 + 5) % 1000) <
                     (CASE variant WHEN 'control' THEN 350 ELSE 550 END)
                THEN 'ButtonClicked' ELSE 'ButtonDisplayed' END,
           variant, user_id,
           least(first_seen + to_microseconds((60 + hash(user_number) % 1200)::BIGINT * 1000000),
                 $last)
    FROM users
    UNION ALL
    -- a fifth of the users buy, a second after their second event, for 1.00 to 100.00
    SELECT 'x' || user_number || '-3', 'Purchase', variant, user_id,
           least(first_seen + to_microseconds((61 + hash(user_number) % 1200)::BIGINT * 1000000),
                 $last)
    FROM users WHERE hash(user_number * 17 + 3) % 1000 < 200
)
ORDER BY event_time
"""
# The same test with two dimensions, of 5 and 20 values (docs/segments.md).
DIMENSIONS = """    dimensions: [device, country]
"""
# The same test with three metrics: the conversion, and a count and a revenue of Purchase.
METRICS = """    metrics:
      - {name: conversion, type: binary, role: primary, event: ButtonClicked}
      - {name: orders, type: count, event: Purchase}
      - {name: revenue, type: revenue, role: guardrail, margin: 0.01, event: Purchase}
"""


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def best_of(runs: int, work) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="diana-backfill-") as home:
        # The runs read experiments.yaml with these variables, like a deployment would.
        env = {
            "DIANA_DUCKDB_PATH": str(Path(home) / "events.duckdb"),
            "DIANA_OUTPUT_SINK": "csv",
            "DIANA_CSV_DIR": str(Path(home) / "csv"),
        }
        with patch.dict(os.environ, env):
            figures = measure(Path(home), args.events, args.days)
    times, rebuild, group_by = render(figures)
    print(times)
    if not args.no_write:
        write_section(
            BENCHMARKS_PAGE,
            "backfill-benchmark",
            "Backfill: rebuilding history in one run",
            f"python -m benchmarks.backfill_benchmark --events {args.events} --days {args.days}",
            f"{figures['events']:,} events ({args.events // 2:,} users, an exposure each "
            "and a click or a second exposure, and a purchase with a value for a fifth of "
            "them; every exposure with a device of 5 and a country of 20) over "
            f"{args.days} days of hourly windows "
            f"({figures['windows']} partitions), written straight into a DuckDB store. "
            "Diana's time is one in-process run of the statistics job over every window "
            f"({figures['materialized']:,} asset materialisations, {figures['rows']:,} CSV "
            f"records). Target: ≤ {TARGET:.0f}× the GROUP BY.",
            times,
        )
    return 0 if rebuild <= TARGET * group_by else 1


def write_history(
    home: Path, event_count: int, days: int
) -> tuple[ExperimentsConfig, datetime, datetime, float]:
    """An experiments file in `home` whose windows start `days` before today (UTC midnight),
    and `event_count` events over those days written straight into its DuckDB store with
    their counting state; returns the config, the first and the last moment (aware UTC) and
    the seconds the state's rebuild took."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=days)
    home.mkdir(parents=True, exist_ok=True)
    experiments = home / "experiments.yaml"
    experiments.write_text(
        (REPO_ROOT / "experiments.yaml")
        .read_text()
        .replace("start: 2026-11-01T00:00:00Z", f"start: {start:%Y-%m-%dT%H:%M:%SZ}")
    )
    config = load_config(experiments)
    state_seconds = fill_events(config, event_count, start, today)
    return config, start, today, state_seconds


def fill_events(
    config: ExperimentsConfig, event_count: int, start: datetime, end: datetime
) -> float:
    """Write `event_count` events between `start` and `end` (aware UTC) straight into the
    config's store, then build the counting state that ingestion would have kept with them;
    returns the seconds that rebuild took."""
    progress(
        f"writing {event_count:,} events from {start:%Y-%m-%d} to {end:%Y-%m-%d} into the store"
    )
    with EventStore.open(config.infrastructure.store_location) as store:
        store.connection.execute(
            _FILL_SQL,
            {
                "users": event_count // 2,
                "start": start.replace(tzinfo=None),
                "span": int((end - start).total_seconds()) * 1_000_000,
                "last": end.replace(tzinfo=None) - timedelta(microseconds=1),
            },
        )
        progress("building the counting state from all events (ingestion keeps it otherwise)")
        return counting_state.rebuild(store.connection, CountingRules.of(config))


def measure(home: Path, event_count: int, days: int) -> dict[str, float]:
    config, start, _, state_seconds = write_history(home, event_count, days)
    experiments = home / "experiments.yaml"
    path = config.infrastructure.duckdb.path
    with EventStore.open(path) as store:
        events = store.count_events()
    windows = [
        (start.replace(tzinfo=None) + timedelta(hours=h),
         start.replace(tzinfo=None) + timedelta(hours=h + 1))
        for h in range(days * 24)
    ]  # fmt: skip

    progress("plain GROUP BY (best of 3)")
    group_by_sql = (
        "SELECT window_start, test_id, variant, event_type, count(*), "
        "count(DISTINCT user_id) FROM events GROUP BY ALL"
    )
    with duckdb.connect(str(path), read_only=True) as con:
        group_by = best_of(3, lambda: con.execute(group_by_sql).fetchall())

    progress("counting step alone: the range's counts from the stored steps (best of 3)")
    with EventStore.open(path, read_only=True) as store:
        con = store.connection
        one_pass = best_of(3, lambda: window_counts(con, config, windows))
        progress("counting step the old way: two cutoff queries per window (24 windows)")
        sample = windows[-24:]

        def per_window() -> None:
            for window_start, window_end in sample:
                cumulative_counts(con, config, window_start)
                cumulative_counts(con, config, window_end)

        per_window_scaled = best_of(1, per_window) * len(windows) / len(sample)

    progress(f"Diana: the statistics job over {len(windows)} windows in one run")
    rebuild, steps, materialized, rows = run_job(home, config, experiments, windows)
    assert rows == 2 * len(windows), rows

    progress("the same with three metrics per test: the counting state, then the job")
    experiments.write_text(
        experiments.read_text().replace("    variants:\n", METRICS + "    variants:\n", 1)
    )
    three = load_config(experiments)
    with EventStore.open(path) as store:
        state_three = counting_state.rebuild(store.connection, CountingRules.of(three))
    rebuild_three, steps_three, _, rows_three = run_job(home, three, experiments, windows)
    assert rows_three == 3 * 2 * len(windows), rows_three

    progress("the same with two dimensions (5 and 20 segments): the counting state, the job")
    experiments.write_text(
        experiments.read_text()
        .replace(METRICS, "")
        .replace("    variants:\n", DIMENSIONS + "    variants:\n", 1)
    )
    segmented = load_config(experiments)
    with EventStore.open(path) as store:
        state_segments = counting_state.rebuild(store.connection, CountingRules.of(segmented))
    rebuild_segments, steps_segments, _, rows_segments = run_job(
        home, segmented, experiments, windows
    )
    assert rows_segments == (1 + 5 + 20) * 2 * len(windows), rows_segments

    return {
        "events": events,
        "windows": len(windows),
        "materialized": materialized,
        "rows": rows,
        "group_by": group_by,
        "rebuild": rebuild,
        "steps": steps,
        "one_pass": one_pass,
        "per_window": per_window_scaled,
        "state": state_seconds,
        "rebuild_three": rebuild_three,
        "steps_three": steps_three,
        "state_three": state_three,
        "rebuild_segments": rebuild_segments,
        "steps_segments": steps_segments,
        "state_segments": state_segments,
    }


def run_job(
    home: Path, config: ExperimentsConfig, experiments: Path, windows: list
) -> tuple[float, float, int, int]:
    """One in-process run of the statistics job over every window: its seconds, the seconds
    of Diana's steps in it, the materialisations and the CSV records it left."""
    for old in (home / "csv").glob("*.csv"):
        old.unlink()
    events_asset = build_events(config)
    assets, *_ = build_statistics(config)
    tags = {
        "dagster/asset_partition_range_start": partition_key(windows[0][0]),
        "dagster/asset_partition_range_end": partition_key(windows[-1][0]),
    }
    resources = pipeline_resources(config, experiments)
    with DagsterInstance.ephemeral() as instance:
        started = time.perf_counter()
        result = materialize(
            [*assets, events_asset.to_source_asset()],
            resources=resources,
            tags=tags,
            instance=instance,
        )
        seconds = time.perf_counter() - started
        steps = step_seconds(instance, result.run_id)
    assert result.success
    materialized = len(result.get_asset_materialization_events())
    assert materialized == len(assets) * len(windows), materialized
    rows = sum(len(f.read_text().splitlines()) - 1 for f in (home / "csv").glob("*.csv"))
    return seconds, sum(steps.values()), materialized, rows


def step_seconds(instance: DagsterInstance, run_id: str) -> dict[str, float]:
    """Per step, from its start to its first materialisation event: Diana's work (counting,
    statistics, DuckDB writes, the sink), without Dagster's logging of the materialisations
    of every partition, which comes after."""
    started: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            started[event.step_key] = entry.timestamp
        elif event.event_type in (
            DagsterEventType.ASSET_MATERIALIZATION,
            DagsterEventType.ASSET_CHECK_EVALUATION,
        ):
            seconds.setdefault(event.step_key, entry.timestamp - started[event.step_key])
    return seconds


def render(f: dict[str, float]) -> tuple[str, float, float]:
    group_by = f["group_by"]
    rebuild, steps = f["rebuild"], f["steps"]
    rows = [
        (
            "plain DuckDB GROUP BY (window, test, variant, type: events and users)",
            f"{group_by:.2f}",
            "1.0",
        ),
        (
            "Diana: the statistics job, one run over every window, CSV sink",
            f"{rebuild:.2f}",
            f"{rebuild / group_by:.1f}",
        ),
        (
            "of which Diana's steps (counting, statistics, DuckDB writes, CSV sink)",
            f"{steps:.2f}",
            f"{steps / group_by:.1f}",
        ),
        (
            "of which Dagster's run bookkeeping (run creation, an event per asset and window)",
            f"{rebuild - steps:.2f}",
            f"{(rebuild - steps) / group_by:.1f}",
        ),
        (
            "counting step alone: the range's counts from the stored steps",
            f"{f['one_pass']:.2f}",
            f"{f['one_pass'] / group_by:.1f}",
        ),
        (
            "(not in the job) the counting state rebuilt from all events, which ingestion "
            "otherwise keeps batch by batch",
            f"{f['state']:.2f}",
            f"{f['state'] / group_by:.1f}",
        ),
        (
            "counting step the old way: two cutoff queries per window (scaled from 24)",
            f"{f['per_window']:.1f}",
            f"{f['per_window'] / group_by:.0f}",
        ),
        (
            "three metrics per test (conversion, a count and a revenue of Purchase): the job",
            f"{f['rebuild_three']:.2f}",
            f"{f['rebuild_three'] / group_by:.1f} ({f['rebuild_three'] / rebuild:.2f}× one metric)",
        ),
        (
            "of which Diana's steps",
            f"{f['steps_three']:.2f}",
            f"{f['steps_three'] / group_by:.1f} ({f['steps_three'] / steps:.2f}× one metric)",
        ),
        (
            "(not in the job) their counting state rebuilt from all events",
            f"{f['state_three']:.2f}",
            f"{f['state_three'] / group_by:.1f} ({f['state_three'] / f['state']:.2f}× one metric)",
        ),
        (
            "two dimensions (5 and 20 segments), the conversion: the job",
            f"{f['rebuild_segments']:.2f}",
            f"{f['rebuild_segments'] / group_by:.1f} "
            f"({f['rebuild_segments'] / rebuild:.2f}× no dimensions)",
        ),
        (
            "of which Diana's steps",
            f"{f['steps_segments']:.2f}",
            f"{f['steps_segments'] / group_by:.1f} "
            f"({f['steps_segments'] / steps:.2f}× no dimensions)",
        ),
        (
            "(not in the job) their counting state rebuilt from all events",
            f"{f['state_segments']:.2f}",
            f"{f['state_segments'] / group_by:.1f} "
            f"({f['state_segments'] / f['state']:.2f}× no dimensions)",
        ),
    ]
    return table(["what", "time (s)", "× the GROUP BY"], rows, align="lrr"), rebuild, group_by


if __name__ == "__main__":
    sys.exit(main())
