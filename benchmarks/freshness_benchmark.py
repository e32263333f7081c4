"""Freshness benchmark: the time from an event produced to its window's posterior in the sink,
with the Dagster daemon doing everything on its own (Kafka sensor, ingestion runs, statistics
automation, CSV sink), at a steady rate.

A private stack (Kafka, DynamoDB Local, the webserver and daemon) on free ports. Traffic runs
in this process; every half second it notes how many exposed and converted users it has sent.
A poller reads the CSV sink every half second. An event is fresh when the sink's totals first
reach the count noted when it was sent; its freshness is that moment minus the send time.

With --history N (10 million by default), the store starts with N events over the 30 days
before now and their counting state, written straight into DuckDB before the stack starts (the
backfill benchmark's generator): a refresh then runs on a month of history, as in production.

    .venv/bin/python -m benchmarks.freshness_benchmark                  # 500/s for 5 minutes
    .venv/bin/python -m benchmarks.freshness_benchmark --eps 200 --duration 60 --history 0 \
        --no-write
    .venv/bin/python -m benchmarks.freshness_benchmark --dimensions    # with 2 dimensions

With --dimensions, the test breaks its results down by two dimensions (docs/segments.md):
every exposure carries a device of 5 values and a country of 20, in the history and the
traffic alike, and the section is written apart from the one without.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, RunsFilter

from benchmarks.backfill_benchmark import fill_events
from diana_pipeline.config import load_config
from diana_pipeline.counting import cumulative_counts
from diana_pipeline.harness.docs import BENCHMARKS_PAGE, write_section
from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.harness.stack import private_stack
from diana_pipeline.markdown import table
from diana_pipeline.sinks.csv_files import PosteriorCsvFiles
from diana_pipeline.sinks.records import RecordError
from diana_pipeline.store import EventStore
from diana_pipeline.traffic import PropertySpec, TrafficRun, TrafficSummary, build_spec

P95_TARGET_S = 15.0
POLL_S = 0.5


DIMENSIONS = "    dimensions: [device, country]\n"
# The traffic's properties with --dimensions: as the backfill benchmark's history.
PROPERTIES = (
    PropertySpec("device", {f"d{k}": 1.0 for k in range(5)}),
    PropertySpec("country", {f"c{k}": 1.0 for k in range(20)}),
)


def experiments_file(home: Path, dimensions: bool) -> Path:
    """The shipped experiments file, or with --dimensions a copy in `home` with two."""
    if not dimensions:
        return REPO_ROOT / "experiments.yaml"
    path = home / "experiments.yaml"
    text = (REPO_ROOT / "experiments.yaml").read_text()
    path.write_text(text.replace("    variants:\n", DIMENSIONS + "    variants:\n", 1))
    return path


def preload_history(events: int, experiments: Path, env: dict[str, str]) -> int:
    """Write `events` events over the 30 days before now into the store of the private
    stack's `env`, with their counting state; returns their exposed plus converted users."""
    config = load_config(experiments, env=env)
    now = datetime.now(UTC)
    fill_events(config, events, now - timedelta(days=30), now - timedelta(minutes=1))
    with EventStore.open(config.infrastructure.store_location) as store:
        totals = cumulative_counts(store.connection, config, datetime(2200, 1, 1))
    return sum(c.exposures + c.successes for c in totals.values())


def sink_total(files: PosteriorCsvFiles) -> int:
    """Exposed plus converted users at the latest window of each variant (cumulative), from
    the overall records."""
    try:
        records = files.read()
    except (OSError, RecordError):
        return 0
    newest: dict[tuple[object, object], dict] = {}
    overall = [r for r in records if r.get("dimension") in (None, "all")]
    for record in sorted(overall, key=lambda r: (r["window_start"], r["timestamp"])):
        newest[(record["test_id"], record["variant"])] = record
    return sum(int(r["exposures_total"]) + int(r["successes_total"]) for r in newest.values())


def run_figures(dagster_home: Path) -> str:
    """Per job: runs, and the median seconds from created to started (queue, process start,
    code load) and from started to finished (the work)."""
    instance = DagsterInstance.from_config(str(dagster_home))
    by_job: dict[str, list[tuple[float, float]]] = {}
    for record in instance.get_run_records():
        if record.start_time and record.end_time and record.create_timestamp:
            created = record.create_timestamp.timestamp()
            by_job.setdefault(record.dagster_run.job_name, []).append(
                (record.start_time - created, record.end_time - record.start_time)
            )
    jobs = table(
        ["job", "runs", "created → started (median)", "started → finished (median)"],
        [
            (
                job,
                len(spans),
                f"{statistics.median(w for w, _ in spans):.1f} s",
                f"{statistics.median(d for _, d in spans):.1f} s",
            )
            for job, spans in sorted(by_job.items())
        ],
        align="lrrr",
    )
    return jobs + "\n\n" + step_figures(instance, "ingest_job")


def step_figures(instance: DagsterInstance, job: str) -> str:
    """Per step of the job's runs: the median seconds from its start to its success."""
    spans: dict[str, list[float]] = {}
    for record in instance.get_run_records(RunsFilter(job_name=job)):
        started: dict[str, float] = {}
        marks: dict[str, float] = {}  # the run's start, first step start, last step end
        for entry in instance.all_logs(record.dagster_run.run_id):
            event = entry.dagster_event
            if event is None:
                continue
            if event.event_type == DagsterEventType.RUN_START:
                marks["run"] = entry.timestamp
            elif event.event_type == DagsterEventType.RUN_SUCCESS and "last" in marks:
                spans.setdefault("(between steps, in all)", []).append(marks.get("between", 0.0))
                spans.setdefault("(after the last step)", []).append(
                    entry.timestamp - marks["last"]
                )
            if event.step_key is None:
                continue
            if event.event_type == DagsterEventType.STEP_START:
                if "first" not in marks and "run" in marks:
                    marks["first"] = entry.timestamp
                    spans.setdefault("(before the first step)", []).append(
                        entry.timestamp - marks["run"]
                    )
                elif "last" in marks:
                    marks["between"] = marks.get("between", 0.0) + entry.timestamp - marks["last"]
                started[event.step_key] = entry.timestamp
            elif event.event_type == DagsterEventType.STEP_SUCCESS:
                spans.setdefault(event.step_key, []).append(
                    entry.timestamp - started[event.step_key]
                )
                marks["last"] = entry.timestamp
    return table(
        [f"{job} step", "runs", "seconds (median)", "seconds (p95)"],
        [
            (step, len(s), f"{statistics.median(s):.2f}", f"{percentile(s, 0.95):.2f}")
            for step, s in spans.items()
        ],
        align="lrrr",
    )


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--eps", type=float, default=500.0)
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--history", type=int, default=10_000_000, help="events preloaded")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--dimensions", action="store_true", help="two dimensions (segments)")
    parser.add_argument(
        "--store", choices=["duckdb", "ducklake"], default="duckdb",
        help="ducklake: the scale profile, the store as DuckLake tables (docs/scale.md)",
    )  # fmt: skip
    parser.add_argument(
        "--parallel-runs", type=int, default=1,
        help="ingestion runs at once (ducklake only; docs/scale.md, Parallel ingestion)",
    )  # fmt: skip
    parser.add_argument(
        "--metrics-topic", default="",
        help="publish the pipeline's metrics to this topic meanwhile (docs/outputs.md)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="diana-bench-") as folder:
        home = Path(folder) / "stack"
        Path(folder).chmod(0o755)  # the scale profile's PostgreSQL runs as its own user
        experiments = experiments_file(Path(folder), args.dimensions)
        env = {"DIANA_OUTPUT_SINK": "csv"}
        if args.store == "ducklake":
            env |= {"DIANA_STACK_PROFILE": "scale", "DIANA_EVENT_STORE": "ducklake"}
        env["DIANA_PARALLEL_RUNS"] = str(args.parallel_runs)
        env["DIANA_METRICS_TOPIC"] = args.metrics_topic
        print("  .. starting a private stack", file=sys.stderr)
        with private_stack(home, env, experiments) as own:
            # This process writes the history and reads the instance (in the scale profile,
            # both in PostgreSQL).
            os.environ.update(own.stack.dagster.instance_env())
            history = preload_history(args.history, experiments, own.env) if args.history else 0
            print("  .. starting the Dagster webserver and daemon", file=sys.stderr)
            own.stack.up(with_dagster=True)
            return measure(args, home, own.env, history, experiments)


def measure(
    args: argparse.Namespace,
    home: Path,
    env: dict[str, str],
    history_users: int,
    experiments: Path,
) -> int:
    """Traffic at the rate, the sink polled, and the lags written up."""
    config = load_config(experiments, env=env)
    files = PosteriorCsvFiles(config.infrastructure.csv.directory)
    sent: list[tuple[float, int]] = []  # (moment, users sent so far)
    seen: list[tuple[float, int]] = []  # (moment, users in the sink)
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            seen.append((time.monotonic(), sink_total(files) - history_users))
            time.sleep(POLL_S)

    def note(summary: TrafficSummary) -> None:
        users = sum(summary.exposed_users.values()) + sum(summary.converted_users.values())
        sent.append((time.monotonic(), users))

    poller = threading.Thread(target=poll, daemon=True)
    try:
        poller.start()
        spec = build_spec(
            config,
            {"control": 0.35, "treatment": 0.55},
            eps=args.eps,
            duration_s=args.duration,
            properties=PROPERTIES if args.dimensions else (),
        )
        print(f"  .. {args.eps:g} events/s for {args.duration:g}s", file=sys.stderr)
        summary = TrafficRun(config, spec, on_progress=note).run()
        note(summary)
        final = sent[-1][1]
        deadline = time.monotonic() + 180
        while (not seen or seen[-1][1] < final) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        done.set()
        poller.join()
        runs = run_figures(home / "dagster_home")
    finally:
        done.set()
    lags = []
    for moment, users in sent:
        reached = next((when for when, total in seen if when >= moment and total >= users), None)
        if reached is None:
            print(f"the sink never reached {users:,} users", file=sys.stderr)
            return 1
        lags.append(reached - moment)
    p50, p95, worst = percentile(lags, 0.5), percentile(lags, 0.95), max(lags)
    lag_table = table(
        ["rate", "duration", "events", "p50", "p95", "max", "mean"],
        [
            (
                f"{args.eps:g}/s",
                f"{args.duration:g} s",
                f"{summary.sent:,}",
                f"{p50:.1f} s",
                f"{p95:.1f} s",
                f"{worst:.1f} s",
                f"{statistics.fmean(lags):.1f} s",
            )
        ],
        align="rrrrrrr",
    )
    print(lag_table)
    print(runs)
    options = (
        (" --dimensions" if args.dimensions else "")
        + (f" --store {args.store}" if args.store != "duckdb" else "")
        + (f" --parallel-runs {args.parallel_runs}" if args.parallel_runs > 1 else "")
        + (f" --metrics-topic {args.metrics_topic}" if args.metrics_topic else "")
    )
    if not args.no_write:
        write_section(
            BENCHMARKS_PAGE,
            "freshness-benchmark"
            + ("-segments" if args.dimensions else "")
            + ("-ducklake" if args.store == "ducklake" else ""),
            "Freshness: event to posterior in the sink"
            + (", with two dimensions (5 and 20 segments)" if args.dimensions else "")
            + (", scale profile, DuckLake store" if args.store == "ducklake" else "")
            + (f", {args.parallel_runs} ingestion runs at once" if args.parallel_runs > 1 else ""),
            f"python -m benchmarks.freshness_benchmark --eps {args.eps:g} "
            f"--duration {args.duration:g} --history {args.history}{options}",
            "The daemon runs the Kafka sensor, the ingestion runs, the statistics "
            "automation and the CSV sink on its own; the lag of each half-second of "
            "traffic is when the sink first counts its users. The store starts with "
            f"{args.history:,} events of history over the 30 days before (their counting "
            f"state built once before the stack starts). Target p95 ≤ {P95_TARGET_S:g} s.",
            lag_table,
            "Where the time goes, from the runs' own records (median per run): a run "
            "waits in the queue and for its process to start and load the code, then "
            "works. An event waits for the sensor's tick and one ingestion run, which "
            "stores it and then refreshes its window's statistics and sink; other runs "
            "are the automation's (late windows) and the schedule's.",
            runs,
        )
    return 0 if p95 <= P95_TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
