"""Parallel ingestion benchmark (issue 24): a backlog on a 6-partition topic ingested into the
DuckLake store (scale profile: a private Kafka broker and PostgreSQL) by one run, and by two
runs at once (`ingestion.parallel_runs: 2`, each run one partition group, the counting left
to the fold, which is timed after them); beside a bare consumer and one run into the DuckDB
file. Each run is a child process, as a Dagster run is; its clock starts after its imports.

    .venv/bin/python -m benchmarks.parallel_benchmark                 # docs/benchmarks.md
    .venv/bin/python -m benchmarks.parallel_benchmark --events 200000 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.ingest_benchmark import fill, progress, raw_consumer, topic_marks
from diana_pipeline.config import load_config
from diana_pipeline.counting import CountingRules, fold
from diana_pipeline.counting import state as counting_state
from diana_pipeline.harness.docs import BENCHMARKS_PAGE, write_section
from diana_pipeline.harness.kafka import KafkaForTests
from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.harness.postgres import PostgresForTests
from diana_pipeline.harness.stack import private_stack
from diana_pipeline.ingestion import (
    ingest,
    partition_groups,
    plan_runs,
)
from diana_pipeline.markdown import table
from diana_pipeline.store import EventStore

PARTITIONS = 6
SPEED_UP_TARGET = 1.6  # two runs against one
SHARE_OF_RAW_TARGET = 0.5  # per process, against a bare consumer


class MachineCpu:
    """The whole machine's CPU (Linux's /proc/stat), sampled every SAMPLE_S on a thread of
    its own: how many cores were busy over a span, whoever used them (the runs, the broker,
    PostgreSQL)."""

    SAMPLE_S = 0.05

    def __init__(self) -> None:
        self.samples: list[tuple[float, int, int]] = []  # (time, all jiffies, idle jiffies)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> MachineCpu:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()

    def _sample(self) -> None:
        while True:
            with Path("/proc/stat").open() as stat:
                jiffies = [int(value) for value in stat.readline().split()[1:]]
            self.samples.append((time.time(), sum(jiffies), jiffies[3] + jiffies[4]))
            if self.stopped.wait(self.SAMPLE_S):
                return

    def busy_cores(self, start: float, end: float) -> float:
        """Cores busy on average between the samples nearest `start` and `end`."""
        first = min(self.samples, key=lambda sample: abs(sample[0] - start))
        last = min(self.samples, key=lambda sample: abs(sample[0] - end))
        jiffies, idle = last[1] - first[1], last[2] - first[2]
        return (os.cpu_count() or 1) * (jiffies - idle) / jiffies


def child(group: int, groups: int, as_planned: bool) -> int:
    """Ingest one partition group's whole backlog (all of it when `groups` is 1): in one run,
    or `as_planned`, in the runs the Kafka sensor plans (ingestion.max_batch_messages each),
    one after the other, each followed by what its statistics step does first: the fold of
    what awaits counting, under the store's writer lock."""
    config = load_config(REPO_ROOT / "experiments.yaml")
    marks = topic_marks(config)
    mine = partition_groups(marks, groups)[group]
    if os.environ.get("BENCHMARK_ALL_PARTITIONS"):  # one run over every group's offsets
        mine = marks
    messages = sum(high - low for low, high in mine.values())
    batch = config.ingestion.max_batch_messages if as_planned else messages
    runs, _ = plan_runs(mine, {}, max_batch=batch, max_runs=messages)
    rules = CountingRules.of(config)
    started, cpu, events = time.time(), time.process_time(), 0
    for number, ranges in enumerate(runs):
        events += ingest(config, ranges, run_id=f"benchmark-{group}-{number}").counts.events
        if as_planned:
            with EventStore.open(config.infrastructure.store_location) as store:
                counting_state.ensure_current(store.connection, rules)
    ended, cpu = time.time(), time.process_time() - cpu
    print(json.dumps({"messages": messages, "events": events,
                      "started": started, "ended": ended, "cpu": cpu}))  # fmt: skip
    return 0


def runs_at_once(
    env: dict[str, str], groups: int, as_planned: bool = False
) -> list[dict[str, float]]:
    """`groups` child runs started together; each one's figures."""
    children = []
    for group in range(groups):
        command = [sys.executable, "-m", "benchmarks.parallel_benchmark", "--child",
                   "--group", str(group), "--groups", str(groups)]  # fmt: skip
        command += ["--as-planned"] if as_planned else []
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        children.append(
            subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, **env}, **pipes)
        )
    figures = []
    for process in children:
        out, err = process.communicate(timeout=3600)
        if process.returncode != 0:
            raise RuntimeError(f"ingestion child failed:\n{err[-3000:]}")
        figures.append(json.loads(out.strip().splitlines()[-1]))
    return figures


def timed_fold(env: dict[str, str]) -> float:
    """Count what the parallel runs appended, as the next statistics step does."""
    config = load_config(REPO_ROOT / "experiments.yaml", env={**os.environ, **env})
    started = time.perf_counter()
    with EventStore.open(config.infrastructure.store_location) as store:
        counting_state.ensure_current(store.connection, CountingRules.of(config))
        assert counting_state.rebuilds(store.connection) == 0
    return time.perf_counter() - started


def left_to_count(env: dict[str, str]) -> int:
    """The events stored but not counted yet."""
    config = load_config(REPO_ROOT / "experiments.yaml", env={**os.environ, **env})
    with EventStore.open(config.infrastructure.store_location, read_only=True) as store:
        return sum(r.events for r in fold.pending_ranges(store.connection))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--group", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--groups", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--as-planned", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.group, args.groups, args.as_planned)
    with (
        tempfile.TemporaryDirectory(prefix="diana-bench-") as folder,
        MachineCpu() as machine,
    ):
        Path(folder).chmod(0o755)  # the scale profile's PostgreSQL runs as its own user
        progress("starting a private Kafka broker and PostgreSQL (scale profile)")
        scale = {"DIANA_STACK_PROFILE": "scale"}
        with private_stack(Path(folder) / "stack", scale, with_dynamodb=False) as own:
            kafka = KafkaForTests(own.settings.bootstrap_servers, own.env)
            password = own.stack.dagster.instance_env()["DIANA_POSTGRES_PASSWORD"]
            os.environ["DIANA_POSTGRES_PASSWORD"] = password  # for the fold, in this process
            postgres = PostgresForTests(
                own.settings.postgres_port, password, own.env, own.stack.postgres
            )
            topic = kafka.new_topic(partitions=PARTITIONS)
            progress(f"{args.events:,} events on {PARTITIONS} partitions: filling the topic")
            fill(kafka, topic, args.events)
            progress("bare consumer")
            raw = raw_consumer(kafka, topic)
            base = {**kafka.env_for(topic), "DIANA_POSTGRES_PASSWORD": password}
            progress("one run into the DuckDB file")
            file_env = {**base, "DIANA_DUCKDB_PATH": str(Path(folder) / "events.duckdb")}
            [file_run] = runs_at_once(file_env, 1)
            progress("one run into DuckLake")
            one_env = {**base, **postgres.new_lake(Path(folder) / "one")}
            [one] = runs_at_once(one_env, 1)
            progress("one run into DuckLake, the counting left to the fold")
            alone_env = {
                **base, **postgres.new_lake(Path(folder) / "alone"), "DIANA_PARALLEL_RUNS": "2"
            }  # fmt: skip
            [alone] = runs_at_once({**alone_env, "BENCHMARK_ALL_PARTITIONS": "1"}, 1)
            progress("two runs at once into DuckLake, then the fold")
            two_env = {
                **base, **postgres.new_lake(Path(folder) / "two"), "DIANA_PARALLEL_RUNS": "2"
            }  # fmt: skip
            two = runs_at_once(two_env, 2)
            counted_at = max(r["ended"] for r in two) + timed_fold(two_env)
            progress("the sensor's runs, one at a time into DuckLake")
            planned_env = {**base, **postgres.new_lake(Path(folder) / "planned-one")}
            [planned_one] = runs_at_once(planned_env, 1, as_planned=True)
            progress("the sensor's runs, two partition groups at once, each run's fold after it")
            planned_env = {**base, **postgres.new_lake(Path(folder) / "planned-two")}
            planned_env["DIANA_PARALLEL_RUNS"] = "2"
            planned_two = runs_at_once(planned_env, 2, as_planned=True)
            assert left_to_count(planned_env) == 0  # each group's last run counted its own
    rows = _rows(
        args.events, raw, machine, file_run, one, alone, two, counted_at, planned_one, planned_two
    )
    header = ["", "seconds", "events/s", "against one run", "per process, of a bare consumer",
              "cores", "machine's cores"]  # fmt: skip
    figures = table(header, rows["table"], align="lrrrrrr")
    batch = load_config(REPO_ROOT / "experiments.yaml").ingestion.max_batch_messages
    planned = (
        f"The sensor's runs ({batch:,} messages each, in one process per group), two partition "
        f"groups at once against one at a time: {rows['planned_speed_up']:.2f}×."
    )
    cores = os.cpu_count() or 1
    planned += (
        f" One run kept {rows['machine_one']:.2f} of this machine's {cores} cores busy, so "
        f"that two runs at the same CPU per event can be {cores / rows['machine_one']:.2f}× "
        f"one run at most; the machine's CPU per event, one run {rows['cpu_us_one']:.1f} µs, "
        f"two runs then the fold {rows['cpu_us_two']:.1f} µs."
    )
    print(figures + "\n\n" + planned)
    if not args.no_write:
        write_section(
            BENCHMARKS_PAGE,
            "parallel-benchmark",
            "Parallel ingestion: one run and two at once (DuckLake)",
            f"python -m benchmarks.parallel_benchmark --events {args.events}",
            f"{args.events:,} events of traffic_job on a {PARTITIONS}-partition topic of a "
            "local broker; the DuckLake catalog in the scale profile's local PostgreSQL, its "
            "files on local disk; this machine's 2 cores run the broker, PostgreSQL and the "
            "runs. Each run is a child process ingesting with the real code; two runs at once "
            "each take one partition group and leave the counting to the fold, timed after "
            "them as one step (in Dagster each run's statistics steps fold what it appended, "
            "beside the other group's run). The sensor's runs: each group's backlog in the runs "
            "the Kafka sensor plans, one after the other, each followed by its statistics "
            "step's fold, under the store's writer lock, as in Dagster; one at a time, they "
            "count as they store. 'cores' is a run's CPU time over its wall time, 'machine's "
            "cores' the whole machine's busy cores over the row's span (runs, broker, "
            "PostgreSQL). "
            "Targets: two runs, then the fold ≥ "
            f"{SPEED_UP_TARGET}× one run; per process ≥ {SHARE_OF_RAW_TARGET:.0%} of a bare "
            "consumer.",
            figures + "\n\n" + planned,
        )
    met = rows["speed_up"] >= SPEED_UP_TARGET and rows["share"] >= SHARE_OF_RAW_TARGET
    return 0 if met else 1


def _rows(
    events: int,
    raw: float,
    machine: MachineCpu,
    file_run: dict[str, float],
    one: dict[str, float],
    alone: dict[str, float],
    two: list[dict[str, float]],
    counted_at: float,
    planned_one: dict[str, float],
    planned_two: list[dict[str, float]],
) -> dict:
    def span(runs: list[dict[str, float]], until: float | None = None) -> tuple[float, float]:
        """From the first run's start to the last one's end, or to `until`."""
        end = until if until is not None else max(r["ended"] for r in runs)
        return min(r["started"] for r in runs), end

    def seconds(runs: list[dict[str, float]], until: float | None = None) -> float:
        start, end = span(runs, until)
        return end - start

    def busy(runs: list[dict[str, float]], until: float | None = None) -> float:
        return machine.busy_cores(*span(runs, until))

    def share(runs: list[dict[str, float]]) -> str:
        return f"{min(r['messages'] / (r['ended'] - r['started']) for r in runs) / raw:.0%}"

    def row(label: str, runs: list[dict[str, float]], until: float | None = None) -> tuple:
        took = seconds(runs, until)
        rate = events / took
        cores = "+".join(f"{r['cpu'] / (r['ended'] - r['started']):.1f}" for r in runs)
        return (label, f"{took:.1f}", f"{rate:,.0f}", f"{rate * seconds([one]) / events:.2f}×",
                share(runs), cores, f"{busy(runs, until):.2f}")  # fmt: skip

    table_rows = [
        ("bare consumer (reads, does nothing)", "", f"{raw:,.0f}", "", "100%", "", ""),
        row("one run, DuckDB file", [file_run]),
        row("one run, DuckLake", [one]),
        row("one run, DuckLake, counting left to the fold", [alone]),
        row("two runs at once, DuckLake: stored", two),
        row("two runs at once, DuckLake, then the fold", two, counted_at),
        row("the sensor's runs, one at a time, DuckLake", [planned_one]),
        row("the sensor's runs, two groups at once, each run's fold after it", planned_two),
    ]
    counted_in = seconds(two, counted_at)
    counted = events / counted_in
    return {
        "machine_one": busy([one]),
        "cpu_us_one": busy([one]) * seconds([one]) / events * 1e6,
        "cpu_us_two": busy(two, counted_at) * counted_in / events * 1e6,
        "planned_speed_up": seconds([planned_one]) / seconds(planned_two),
        "table": table_rows,
        "speed_up": counted * seconds([one]) / events,
        "share": min(r["messages"] / (r["ended"] - r["started"]) for r in two) / raw,
    }


if __name__ == "__main__":
    sys.exit(main())
