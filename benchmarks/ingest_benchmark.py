"""Ingest benchmark: events/s from Kafka into DuckDB through Diana's real ingestion code, on a
backlog on a 3-partition topic, beside (a) a bare confluent-kafka consumer reading the same
topic and doing nothing (the limit) and (b) a per-event consumer in the style of the original
engine (poll one message, json.loads, update counters in Python); and the peak RSS of an
ingestion run over the whole backlog, at two backlog sizes (memory must stay flat).

All against a private Kafka broker that this command starts and stops. Diana's run is a
child process, so its peak RSS is its own.

    .venv/bin/python -m benchmarks.ingest_benchmark                # 2M and 8M, docs/benchmarks.md
    .venv/bin/python -m benchmarks.ingest_benchmark --sizes 200000 --no-write
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from unittest.mock import patch

from confluent_kafka import Consumer, TopicPartition

from diana_pipeline.config import ExperimentsConfig, load_config
from diana_pipeline.counting import state as counting_state
from diana_pipeline.harness.docs import BENCHMARKS_PAGE, write_section
from diana_pipeline.harness.kafka import KafkaForTests
from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.harness.stack import private_stack
from diana_pipeline.ingestion import ingest, make_consumer, plan_runs, watermarks
from diana_pipeline.markdown import table
from diana_pipeline.traffic import TrafficRun, build_spec

SHARE_OF_RAW_TARGET = 0.5
OVER_PER_EVENT_TARGET = 10.0
RSS_TARGET_MB = 500.0
STATE_SHARE_TARGET = 0.8  # issue 20: with the counting state, ≥ 0.8× ingestion before it
# The last commit before issue 20's counting state: its ingestion is "before", run from a
# copy of that commit's files (git archive) in the same venv, on the same backlog.
BEFORE_REVISION = "6ce44d1"


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def fill(kafka: KafkaForTests, topic: str, events: int) -> float:
    """The backlog: Diana's traffic engine, unthrottled, seeded."""
    config = kafka.config_for(topic)
    spec = build_spec(config, {"control": 0.35, "treatment": 0.55}, eps=None, count=events, seed=1)
    summary = TrafficRun(config, spec).run()
    assert summary.deliveries.delivered == events, summary.deliveries
    return summary.rate


def assigned_consumer(kafka: KafkaForTests, topic: str):
    """A consumer on every partition at once, with large fetches: the fastest reader, not
    Diana's (whose runs read a partition at a time with a few MB in flight)."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
        }
    )
    marks = watermarks(consumer, topic)
    consumer.assign([TopicPartition(topic, p, low) for p, (low, _) in marks.items()])
    return consumer, sum(high - low for low, high in marks.values())


def raw_consumer(kafka: KafkaForTests, topic: str) -> float:
    """Read everything in batches and do nothing with it."""
    consumer, total = assigned_consumer(kafka, topic)
    try:
        started, seen = time.perf_counter(), 0
        while seen < total:
            seen += sum(
                1 for m in consumer.consume(num_messages=10_000, timeout=1.0) if not m.error()
            )
        return total / (time.perf_counter() - started)
    finally:
        consumer.close()


def per_event_consumer(kafka: KafkaForTests, topic: str) -> float:
    """The original engine's loop: one message at a time, json.loads, counters in Python."""
    consumer, total = assigned_consumer(kafka, topic)
    counters: Counter[tuple[str, str, str]] = Counter()
    users: dict[tuple[str, str], str] = {}
    try:
        started, seen = time.perf_counter(), 0
        while seen < total:
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            seen += 1
            try:
                event = json.loads(message.value())
                key = (event["test_id"], event["variant"], event["event_type"])
            except (ValueError, KeyError, TypeError):
                continue
            counters[key] += 1
            users.setdefault((event["test_id"], event["user_id"]), event["variant"])
        return total / (time.perf_counter() - started)
    finally:
        consumer.close()


def source_at(revision: str, into: Path) -> Path:
    """The repository's files at `revision`, copied into `into`."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", revision], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def diana_ingest(
    kafka: KafkaForTests,
    topic: str,
    store: Path,
    with_state: bool = True,
    source: Path = REPO_ROOT,
) -> dict[str, float]:
    """One ingestion run over the whole backlog, in a child process (for its own peak RSS);
    without the counting state's maintenance (its marginal cost), or with the code of another
    commit (`source`: the ingestion before issue 20)."""
    env = {**kafka.env_for(topic), "DIANA_DUCKDB_PATH": str(store), "PYTHONPATH": str(source)}
    child = subprocess.run(
        [sys.executable, "-m", "benchmarks.ingest_benchmark", "--child"]
        + ([] if with_state else ["--without-state"]),
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if child.returncode != 0:
        raise RuntimeError(f"ingestion child failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """This process's peak resident memory. Not getrusage's ru_maxrss: Linux carries that
    over from the parent through fork and exec, and the parent here holds the backlog's
    counters; VmHWM belongs to this process's own address space."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def topic_marks(config: ExperimentsConfig) -> dict[int, tuple[int, int]]:
    """The (low, high) watermarks of every partition of the configured topic."""
    consumer = make_consumer(config.infrastructure.kafka)
    try:
        return watermarks(consumer, config.infrastructure.kafka.topic)
    finally:
        consumer.close()


def child(with_state: bool) -> int:
    """Plan one run over every offset of the topic, as the sensor would with an unlimited
    micro-batch, and ingest it with the real code (without the counting state: the same code
    with its folds left out, so the run stores the events alone)."""
    config = load_config(REPO_ROOT / "experiments.yaml")
    marks = topic_marks(config)
    total = sum(high - low for low, high in marks.values())
    [ranges], _ = plan_runs(marks, {}, max_batch=total, max_runs=1)
    started = time.perf_counter()
    if with_state:
        result = ingest(config, ranges, run_id="benchmark")
    else:
        with patch.object(counting_state, "fold_if_current", return_value=0):
            result = ingest(config, ranges, run_id="benchmark")
    seconds = time.perf_counter() - started
    stored = sum(result.counts.events_by_window.values())
    peak_mb = peak_rss_mb()
    print(json.dumps({"messages": total, "events": stored, "seconds": seconds, "peak_mb": peak_mb}))
    return 0 if stored == total else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="2000000,8000000", help="backlog sizes, comma-separated")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--without-state", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(with_state=not args.without_state)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    progress("starting a private Kafka broker")
    with (
        tempfile.TemporaryDirectory(prefix="diana-bench-") as home,
        private_stack(Path(home), with_dynamodb=False) as own,
    ):
        kafka = KafkaForTests(own.settings.bootstrap_servers, own.env)
        before_code = source_at(BEFORE_REVISION, Path(home) / f"code-{BEFORE_REVISION}")
        for size in sizes:
            topic = kafka.new_topic(partitions=3)
            progress(f"{size:,} events: filling the topic")
            fill_rate = fill(kafka, topic, size)
            progress(f"{size:,} events: bare consumer")
            raw = raw_consumer(kafka, topic)
            progress(f"{size:,} events: per-event consumer (json.loads, counters)")
            per_event = per_event_consumer(kafka, topic)
            progress(f"{size:,} events: Diana's ingestion into DuckDB (one run, child)")
            diana = diana_ingest(kafka, topic, Path(home) / f"events-{size}.duckdb")
            progress(f"{size:,} events: the same without the counting state's folds")
            without = diana_ingest(
                kafka, topic, Path(home) / f"without-{size}.duckdb", with_state=False
            )
            progress(f"{size:,} events: the ingestion before issue 20 ({BEFORE_REVISION})")
            before = diana_ingest(
                kafka, topic, Path(home) / f"before-{size}.duckdb", source=before_code
            )
            rows.append(
                {
                    "size": size,
                    "fill": fill_rate,
                    "raw": raw,
                    "per_event": per_event,
                    "diana": diana["messages"] / diana["seconds"],
                    "peak_mb": diana["peak_mb"],
                    "without": without["messages"] / without["seconds"],
                    "before": before["messages"] / before["seconds"],
                }
            )
    figures = render(rows)
    print(figures)
    first = rows[0]
    met = (
        first["diana"] >= SHARE_OF_RAW_TARGET * first["raw"]
        and first["diana"] >= OVER_PER_EVENT_TARGET * first["per_event"]
        and all(r["peak_mb"] < RSS_TARGET_MB for r in rows)
        and all(r["diana"] >= STATE_SHARE_TARGET * r["before"] for r in rows)
    )
    if not args.no_write:
        write_docs(figures, args.sizes)
    return 0 if met else 1


def write_docs(figures: str, sizes: str) -> None:
    write_section(
        BENCHMARKS_PAGE,
        "ingest-benchmark",
        "Ingest: Kafka to DuckDB",
        f"python -m benchmarks.ingest_benchmark --sizes {sizes}",
        "A backlog of traffic_job events on a 3-partition topic of a local broker. "
        "Diana: `diana_pipeline.ingestion.ingest` over every offset in one run "
        "(validation, DuckDB insert, ledger, counting state, per-window counts) in a child "
        "process; its peak RSS is that process's (VmHWM). 'Before issue 20' is the same run "
        f"with the code of commit {BEFORE_REVISION}, the last before the counting state; "
        "'without the folds' is today's code with the run's folds into the counting state "
        "switched off (what the state alone costs). Targets: ≥ 50% of the bare consumer, "
        "≥ 10× the per-event consumer, peak RSS < 500 MB and flat, "
        f"≥ {STATE_SHARE_TARGET}× before issue 20.",
        figures,
    )


def render(rows: list[dict[str, float]]) -> str:
    return table(
        [
            "backlog",
            "bare consumer (limit)",
            "per-event consumer",
            "Diana ingest",
            "before issue 20",
            "Diana / before",
            "without the folds",
            "Diana / without",
            "Diana / bare",
            "Diana / per-event",
            "Diana peak RSS",
        ],
        [
            (
                f"{r['size']:,}",
                f"{r['raw']:,.0f}/s",
                f"{r['per_event']:,.0f}/s",
                f"{r['diana']:,.0f}/s",
                f"{r['before']:,.0f}/s",
                f"{r['diana'] / r['before']:.2f}×",
                f"{r['without']:,.0f}/s",
                f"{r['diana'] / r['without']:.2f}×",
                f"{r['diana'] / r['raw']:.0%}",
                f"{r['diana'] / r['per_event']:.1f}×",
                f"{r['peak_mb']:,.0f} MB",
            )
            for r in rows
        ],
        align="rrrrrrrrrrr",
    )


if __name__ == "__main__":
    sys.exit(main())
