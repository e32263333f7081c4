"""Load: a million events at the unthrottled rate into a private stack (Kafka and the Dagster
daemon, as `diana-stack up --dagster` runs them). The sensor's ingestion runs must store every
event exactly once, the consumer group's lag (what `kafka-consumer-groups` would show) must
come back to 0, and memory must stay flat: an ingestion run's peak does not grow with the
events already stored, and the daemon does not grow either.

    .venv/bin/python -m reliability.load                       # docs/reliability.md
    .venv/bin/python -m reliability.load --events 200000 --batch 50000 --no-write
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from confluent_kafka import Consumer, KafkaException, TopicPartition
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from diana_pipeline.config import ExperimentsConfig, load_config
from diana_pipeline.harness.docs import RELIABILITY_PAGE, write_section
from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.harness.stack import private_stack
from diana_pipeline.jobs import INGEST_JOB
from diana_pipeline.local_stack import LocalStack
from diana_pipeline.markdown import table
from diana_pipeline.run_health import PIDS_TAG, RUN_TAG
from diana_pipeline.store import EventStore
from diana_pipeline.traffic import TrafficRun, TrafficSummary, build_spec
from reliability.faults import idle, wait_for

log = logging.getLogger(__name__)
PROBABILITIES = {"control": 0.35, "treatment": 0.55}
SAMPLE_S = 0.5
# Flat memory: no ingestion run (ingesting a batch, then counting its window, which grows
# with the backlog) peaks above this, however many events came before: a run process is
# about 200 MB of Python and Dagster, plus the counting step's 256MB DuckDB limit and its
# overhead (1M events: 450-580 MB). Nor does the daemon grow by more than DAEMON_GROWTH_MB.
RUN_PEAK_BUDGET_MB = 640.0
DAEMON_GROWTH_MB = 50.0


def peak_mb(process: psutil.Process) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    with Path(f"/proc/{process.pid}/status").open() as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Sample:
    at_s: float
    produced: int
    committed: int  # the consumer group's offsets: what ingestion has stored
    run_workers: int
    largest_worker_mb: float
    daemon_mb: float


@dataclass
class Watcher:
    """Samples lag and memory every SAMPLE_S seconds until stopped."""

    stack: LocalStack
    config: ExperimentsConfig
    began: float = field(default_factory=time.monotonic)
    samples: list[Sample] = field(default_factory=list)
    worker_peaks: dict[str, float] = field(default_factory=dict)  # by run id, in start order
    _stop: threading.Event = field(default_factory=threading.Event)

    def offsets(self, consumer: Consumer) -> tuple[int, int]:
        """(messages on the topic, offsets the consumer group has committed)."""
        kafka = self.config.infrastructure.kafka
        partitions = consumer.list_topics(kafka.topic, timeout=10).topics[kafka.topic].partitions
        ends = sum(
            consumer.get_watermark_offsets(TopicPartition(kafka.topic, p), timeout=10)[1]
            for p in partitions
        )
        committed = consumer.committed(
            [TopicPartition(kafka.topic, p) for p in partitions], timeout=10
        )
        return ends, sum(max(tp.offset, 0) for tp in committed)

    def memory(self, instance: DagsterInstance) -> tuple[int, float, float]:
        """(ingestion runs in progress, the largest one's peak MB, the daemon's resident MB).
        A run's worker is the process its tags name (run_health.py)."""
        workers, largest = 0, 0.0
        for record in instance.get_run_records(
            RunsFilter(job_name=INGEST_JOB, statuses=[DagsterRunStatus.STARTED])
        ):
            tags = record.dagster_run.tags
            if tags.get(RUN_TAG) != record.dagster_run.run_id:
                continue  # not yet tagged by its own worker
            pid = int(tags[PIDS_TAG].split(":")[0])
            try:
                peak = peak_mb(psutil.Process(pid))
            except (psutil.Error, OSError):
                continue
            run_id = record.dagster_run.run_id
            self.worker_peaks[run_id] = max(self.worker_peaks.get(run_id, 0.0), peak)
            workers, largest = workers + 1, max(largest, peak)
        daemon = self.stack.processes["dagster-daemon"].running()
        try:
            daemon_mb = daemon.memory_info().rss / 2**20 if daemon is not None else 0.0
        except psutil.Error:
            daemon_mb = 0.0
        return workers, largest, daemon_mb

    def run(self) -> None:
        kafka = self.config.infrastructure.kafka
        consumer = Consumer(
            {"bootstrap.servers": kafka.bootstrap_servers, "group.id": kafka.consumer_group}
        )
        instance = DagsterInstance.from_config(str(self.stack.settings.dagster_home))
        try:
            while not self._stop.is_set():
                try:
                    produced, committed = self.offsets(consumer)
                except KafkaException as exc:  # a coordinator moving or loading: next sample
                    log.debug("no offsets this sample: %s", exc)
                    self._stop.wait(SAMPLE_S)
                    continue
                workers, largest, daemon = self.memory(instance)
                at = time.monotonic() - self.began
                self.samples.append(Sample(at, produced, committed, workers, largest, daemon))
                self._stop.wait(SAMPLE_S)
        finally:
            consumer.close()
            instance.dispose()

    def stop(self) -> None:
        self._stop.set()


@dataclass
class LoadResult:
    sent: TrafficSummary
    samples: list[Sample]
    worker_peaks_mb: list[float]  # each ingestion run's peak, in the order they started
    caught_up_s: float  # from the first event sent until the lag was 0 again
    events_stored: int
    offsets_ingested: int
    seconds: float

    @property
    def expected_events(self) -> int:
        return sum(self.sent.events.values())

    @property
    def lag_at_end(self) -> int:
        last = self.samples[-1]
        return last.produced - last.committed

    @property
    def flat(self) -> bool:
        return (
            bool(self.worker_peaks_mb)
            and max(self.worker_peaks_mb) <= RUN_PEAK_BUDGET_MB
            and self.daemon_growth_mb <= DAEMON_GROWTH_MB
        )

    @property
    def daemon_growth_mb(self) -> float:
        daemon = [s.daemon_mb for s in self.samples if s.daemon_mb > 0]
        return daemon[-1] - daemon[0] if daemon else 0.0

    @property
    def held(self) -> bool:
        return (
            self.events_stored == self.expected_events
            and self.offsets_ingested == self.sent.sent
            and self.lag_at_end == 0
            and self.flat
        )


def run_load(home: Path, events: int, batch: int, seed: int) -> LoadResult:
    began = time.monotonic()
    extra = {"DIANA_MAX_BATCH_MESSAGES": str(batch), "DIANA_OUTPUT_SINK": "csv"}
    print("  .. starting a private stack (Kafka, Dagster)", file=sys.stderr)
    with private_stack(home, extra, with_dagster=True, with_dynamodb=False) as own:
        config = load_config(REPO_ROOT / "experiments.yaml", env=own.env)
        instance = DagsterInstance.from_config(str(own.settings.dagster_home))
        watcher = Watcher(own.stack, config)
        sampler = threading.Thread(target=watcher.run, name="watcher")
        try:
            sampler.start()
            spec = build_spec(config, PROBABILITIES, eps=None, count=events, seed=seed)
            print(f"  .. {events:,} events, unthrottled", file=sys.stderr)
            started = time.monotonic()
            sent = TrafficRun(config, spec).run()
            print(
                f"  .. sent in {sent.elapsed_s:.1f}s ({sent.rate:,.0f}/s); waiting for the lag",
                file=sys.stderr,
            )
            last_report = 0.0
            while True:
                sample = watcher.samples[-1] if watcher.samples else None
                if sample and sample.produced == sent.sent and sample.committed == sent.sent:
                    break
                if not sampler.is_alive():
                    raise RuntimeError("the watcher thread died; see its traceback above")
                if time.monotonic() - started > 1800:
                    raise TimeoutError("the consumer lag did not come back to 0 within 30 minutes")
                if sample and time.monotonic() - last_report > 10:
                    last_report = time.monotonic()
                    print(
                        f"  .. {sample.at_s:5.0f}s  lag {sample.produced - sample.committed:,}",
                        file=sys.stderr,
                    )
                time.sleep(SAMPLE_S)
            caught_up_s = time.monotonic() - started
            wait_for(lambda: idle(instance), 600, "every run to finish", poll_s=1.0)
            time.sleep(2 * SAMPLE_S)  # one more sample, with the runs done
            watcher.stop()
            sampler.join()
            with EventStore.open_when_free(config.infrastructure.duckdb.path, 120) as store:
                stored, offsets = store.connection.execute(
                    "SELECT (SELECT count(*) FROM events), "
                    "(SELECT sum(end_offset - start_offset) FROM ingested_ranges)"
                ).fetchall()[0]
        finally:
            watcher.stop()
            instance.dispose()
    return LoadResult(
        sent,
        watcher.samples,
        list(watcher.worker_peaks.values()),
        caught_up_s,
        stored,
        offsets,
        time.monotonic() - began,
    )


def render(result: LoadResult, rows: int = 12) -> str:
    samples = result.samples
    step = max(1, len(samples) // rows)
    picked = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    over_time = table(
        [
            "at",
            "on the topic",
            "stored (committed)",
            "lag",
            "ingestion runs",
            "largest run's peak",
            "daemon RSS",
        ],
        [
            (
                f"{s.at_s:.0f} s",
                f"{s.produced:,}",
                f"{s.committed:,}",
                f"{s.produced - s.committed:,}",
                s.run_workers,
                f"{s.largest_worker_mb:.0f} MB",
                f"{s.daemon_mb:.0f} MB",
            )
            for s in picked
        ],
        align="rrrrrrr",
    )
    peaks = ", ".join(f"{p:.0f}" for p in result.worker_peaks_mb)
    held = table(
        ["", "expected", "found"],
        [
            ("events stored", f"{result.expected_events:,}", f"{result.events_stored:,}"),
            ("Kafka offsets ingested", f"{result.sent.sent:,}", f"{result.offsets_ingested:,}"),
            ("consumer lag at the end", "0", f"{result.lag_at_end:,}"),
            (
                "ingestion runs' peaks, in order",
                f"each ≤ {RUN_PEAK_BUDGET_MB:.0f} MB",
                f"{peaks} MB",
            ),
            (
                "the daemon's growth",
                f"≤ {DAEMON_GROWTH_MB:.0f} MB",
                f"{result.daemon_growth_mb:+.0f} MB",
            ),
        ],
        align="lrr",
    )
    return f"{over_time}\n\n{held}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--batch", type=int, default=200_000, help="max_batch_messages (experiments.yaml's)"
    )
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="diana-load-") as home:
        result = run_load(Path(home), args.events, args.batch, args.seed)
    findings = render(result)
    verdict = (
        "held: every event once, lag back to 0, memory flat" if result.held else "DID NOT HOLD"
    )
    summary = (
        f"{result.sent.sent:,} messages sent in {result.sent.elapsed_s:.1f} s "
        f"({result.sent.rate:,.0f}/s); the consumer lag was back to 0 "
        f"{result.caught_up_s:.0f} s after the first was sent "
        f"({result.sent.sent / result.caught_up_s:,.0f} events/s end to end, "
        f"{len(result.worker_peaks_mb)} ingestion runs); the daemon's RSS changed by "
        f"{result.daemon_growth_mb:+.0f} MB. {verdict}."
    )
    print(findings)
    print(summary)
    if not args.no_write:
        write_section(
            RELIABILITY_PAGE,
            "load",
            "Load: a million events, unthrottled",
            f"python -m reliability.load --events {args.events} --batch {args.batch} "
            f"--seed {args.seed}",
            "A private stack (Kafka and the Dagster daemon, output sink CSV); the "
            "traffic generator sends as fast as it can while the sensor's ingestion "
            "runs (each also refreshing the statistics of its windows) drain the "
            "topic. Sampled every 0.5 s: the topic's end offsets, the consumer "
            "group's committed offsets, the peak memory (VmHWM) of every ingestion "
            "run's worker process, and the daemon's resident memory.",
            summary,
            findings,
        )
    return 0 if result.held else 1


if __name__ == "__main__":
    sys.exit(main())
