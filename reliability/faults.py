"""Faults while traffic flows: on a private stack (Kafka, DynamoDB Local, the Dagster webserver
and daemon, output sink DynamoDB plus a posteriors topic), traffic runs for a while and, at
seeded random moments, the scenario kills -9 the daemon with everything under it (code
server, run workers) or a running ingestion run alone, stops and restarts the Kafka broker,
and stops DynamoDB Local for a while during sink writes. Once the traffic has ended and the
pipeline is idle, it re-materialises `published_posteriors` over every window, as the README
tells a user to after a sink outage. Then every sink must hold exactly what the traffic
produced: the events once each, every Kafka offset once, the posteriors in DuckDB, DynamoDB
and the topic equal record for record, and their totals equal the users sent.

    .venv/bin/python -m reliability.faults                          # docs/reliability.md
    .venv/bin/python -m reliability.faults --duration 60 --kills 5 --no-write
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psutil
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus

from diana_pipeline.config import ExperimentsConfig, load_config
from diana_pipeline.harness.docs import RELIABILITY_PAGE, write_section
from diana_pipeline.harness.kafka import KafkaForTests
from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.harness.stack import private_stack
from diana_pipeline.ingestion.kafka_client import METADATA_TIMEOUT_S, STALL_TIMEOUT_S
from diana_pipeline.jobs import INGEST_JOB
from diana_pipeline.local_stack import LocalStack, StackSettings
from diana_pipeline.markdown import table
from diana_pipeline.partitions import partition_key
from diana_pipeline.run_health import PIDS_TAG
from diana_pipeline.sinks.dynamodb_table import PosteriorTable
from diana_pipeline.sinks.records import Record, decode, record_key, to_json
from diana_pipeline.store import EventStore
from diana_pipeline.totals import expected_totals, latest_totals
from diana_pipeline.traffic import NoiseRates, TrafficRun, TrafficSummary, build_spec

OUTPUT_TOPIC = "posteriors-faults"
PROBABILITIES = {"control": 0.35, "treatment": 0.55}
NOISE = NoiseRates(duplicate=0.02, malformed=0.01, orphan_click=0.01)
BUSY = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]
LABELS = {"exposures": "exposed", "successes": "converted"}
# Backfills whose runs may still come (the automation refreshes several windows as one).
PENDING_BACKFILLS = BulkActionsFilter(
    statuses=[BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING]
)
KAFKA_DOWN_S = 5.0  # well inside the producer's 30 s delivery timeout: traffic only waits
DYNAMODB_DOWN_S = 25.0


@dataclass
class FaultLog:
    began: float = field(default_factory=time.monotonic)
    entries: list[tuple[float, str]] = field(default_factory=list)

    def add(self, what: str) -> None:
        at = time.monotonic() - self.began
        self.entries.append((at, what))
        print(f"  .. {at:6.1f}s  {what}", file=sys.stderr, flush=True)


@dataclass
class Check:
    what: str
    expected: object
    found: object

    @property
    def held(self) -> bool:
        return self.expected == self.found


@dataclass
class FaultsResult:
    sent: TrafficSummary
    faults: list[tuple[float, str]]
    checks: list[Check]
    failed_runs: Counter[str]  # job → runs that failed (the faults' footprint)
    refused_sink_writes: int  # published_posteriors steps that failed (DynamoDB down)
    recovery_s: float  # from the end of traffic until every event was stored and runs idle
    seconds: float

    @property
    def exact(self) -> bool:
        return all(check.held for check in self.checks)


# ---- the faults -------------------------------------------------------------------------------


def kill_family(process: psutil.Process) -> int:
    """kill -9 a process and everything under it; returns how many processes died.

    Each member is stopped (SIGSTOP) before its children are listed, so that none starts a
    process the list misses. A `tail -F` of a run's log was found running after the suite: a
    run worker killed between starting Dagster's tail and the watcher that ends it leaves it."""
    family: list[psutil.Process] = []
    pending = [process]
    while pending:
        member = pending.pop()
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signal.SIGSTOP)
            family.append(member)
            pending.extend(member.children())
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signal.SIGKILL)
    psutil.wait_procs(family, timeout=10)
    return len(family)


def running_ingestion_worker(instance: DagsterInstance) -> tuple[str, psutil.Process] | None:
    """A STARTED ingestion run whose worker process is alive, with that process."""
    for record in instance.get_run_records(
        RunsFilter(job_name=INGEST_JOB, statuses=[DagsterRunStatus.STARTED])
    ):
        tag = record.dagster_run.tags.get(PIDS_TAG)
        if not tag:
            continue
        pid = int(tag.split(",")[0].split(":")[0])
        try:
            return record.dagster_run.run_id, psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
    return None


class Faults:
    def __init__(self, stack: LocalStack, instance: DagsterInstance, log: FaultLog) -> None:
        self.stack, self.instance, self.log = stack, instance, log
        self.kafka_outages: list[tuple[float, float]] = []  # wall-clock (from, to)

    def kill_daemon(self) -> None:
        daemon = self.stack.processes["dagster-daemon"].running()
        assert daemon is not None, "the daemon should be running"
        runs = len(self.instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.STARTED])))
        killed = kill_family(daemon)
        self.log.add(
            f"kill -9 the daemon and its {killed - 1} child processes ({runs} run(s) started)"
        )
        self.stack.up(with_dagster=True, with_kafka=False, with_dynamodb=False)
        # Healthy at once (the webserver still sees the old heartbeat); the daemon is at work
        # once it has started its code server.
        wait_for(lambda: self._daemon_children() > 0, 60, "the daemon's code server", poll_s=0.5)
        self.log.add("daemon restarted, its code server up")

    def _daemon_children(self) -> int:
        daemon = self.stack.processes["dagster-daemon"].running()
        return len(daemon.children()) if daemon is not None else 0

    def kill_ingestion_run(self, wait_s: float = 15.0) -> None:
        deadline = time.monotonic() + wait_s
        while (found := running_ingestion_worker(self.instance)) is None:
            if time.monotonic() > deadline:
                self.log.add(f"no ingestion run in flight for {wait_s:.0f}s; killing the daemon")
                self.kill_daemon()
                return
            time.sleep(0.2)
        run_id, worker = found
        kill_family(worker)
        self.log.add(f"kill -9 the worker of ingestion run {run_id[:8]} (pid {worker.pid})")

    def stop_kafka(self) -> None:
        stopping = time.time()
        self.stack.processes["kafka"].stop()
        self.log.add("Kafka broker stopped")
        time.sleep(KAFKA_DOWN_S)
        self.stack.up(with_kafka=True, with_dynamodb=False)
        self.log.add("Kafka broker restarted")
        self.kafka_outages.append((stopping, time.time()))

    def stop_dynamodb(self) -> None:
        self.stack.processes["dynamodb"].stop()
        self.log.add("DynamoDB Local stopped")

    def start_dynamodb(self) -> None:
        self.stack.up(with_kafka=False, with_dynamodb=True)
        self.log.add("DynamoDB Local restarted")


def fault_plan(duration_s: float, kills: int, seed: int) -> list[tuple[float, str]]:
    """(seconds into the traffic, fault), sorted: kills alternate between the daemon and a
    run; Kafka and DynamoDB go down once each."""
    rng = random.Random(seed)
    plan = [
        (rng.uniform(5, duration_s - 5), "kill_daemon" if i % 2 == 0 else "kill_ingestion_run")
        for i in range(kills)
    ]
    plan.append((rng.uniform(0.2, 0.6) * duration_s, "stop_kafka"))
    down = rng.uniform(0.2, 0.5) * duration_s
    plan += [(down, "stop_dynamodb"), (down + DYNAMODB_DOWN_S, "start_dynamodb")]
    return sorted(plan)


# ---- waiting and reading back -----------------------------------------------------------------


def wait_for(predicate, timeout_s: float, what: str, poll_s: float = 2.0, explain=None) -> None:
    """Wait until `predicate()`; past the deadline raise, with `explain()`'s account of the
    state that kept it false when given."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            why = f"\n{explain()}" if explain is not None else ""
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}{why}")
        time.sleep(poll_s)


def pipeline_state(instance: DagsterInstance, store: Path) -> str:
    """What an ingestion that never catches up leaves to look at: the ledger per partition,
    every run with its status and retry tags, and the sensors' last ticks."""
    lines = ["ledger (partition: ranges, offsets, highest end):"]
    with EventStore.open_when_free(store, timeout_s=120) as opened:
        lines += [
            f"  {partition}: {ranges} ranges, {offsets:,} offsets, up to {end:,}"
            for partition, ranges, offsets, end in opened.connection.execute(
                "SELECT kafka_partition, count(*), sum(end_offset - start_offset), "
                "max(end_offset) FROM ingested_ranges GROUP BY ALL ORDER BY 1"
            ).fetchall()
        ]
    lines.append("runs (newest first; created, started, ended: seconds ago):")
    now = time.time()

    def ago(moment: float | None) -> str:
        return "-" if moment is None else f"{now - moment:.0f}"

    for record in instance.get_run_records(limit=60):
        run = record.dagster_run
        tags = {k: v for k, v in run.tags.items() if k.startswith(("diana/resume", "dagster/will"))}
        lines.append(
            f"  {run.run_id[:8]} {run.job_name} {run.status.value} "
            f"{ago(record.create_timestamp.timestamp())}/{ago(record.start_time)}/"
            f"{ago(record.end_time)} parent={(run.parent_run_id or '-')[:8]} {tags}"
        )
    pending = instance.get_backfills(filters=PENDING_BACKFILLS)
    lines.append("pending backfills: " + ", ".join(b.backfill_id for b in pending))
    for state in instance.all_instigator_state():
        for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=3):
            reason = tick.skip_reason or (tick.error.message.strip() if tick.error else "")
            lines.append(f"  tick {state.instigator_name}: {tick.status.value} {reason[:200]}")
    return "\n".join(lines)


def store_value(path: Path, sql: str) -> object:
    with EventStore.open_when_free(path, timeout_s=120) as store:
        return store.connection.execute(sql).fetchall()[0][0]


def idle(instance: DagsterInstance) -> bool:
    """No run in flight, and no backfill waiting for its runs: the statistics automation
    refreshes several windows as a backfill, whose runs the backfill daemon launches up to
    half a minute later (a later window left stale by a late event was once compared in
    that gap)."""
    if instance.get_run_records(RunsFilter(statuses=BUSY), limit=1):
        return False
    return not instance.get_backfills(filters=PENDING_BACKFILLS, limit=1)


def duckdb_posteriors(path: Path) -> dict[str, Record]:
    with EventStore.open_when_free(path, timeout_s=120) as store:
        cursor = store.connection.execute("SELECT * FROM posteriors")
        names = [column[0] for column in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    return {record_key(row): row for row in rows}


def topic_posteriors(kafka: KafkaForTests, topic: str) -> dict[str, Record]:
    """The newest record per key, as a compacted topic keeps it (one key, one partition)."""
    newest: dict[str, Record] = {}
    for _, value in kafka.read_all(topic):
        record = decode(json.loads(value), f"topic {topic}")
        newest[record_key(record)] = record
    return newest


def table_posteriors(config: ExperimentsConfig) -> dict[str, Record]:
    dynamodb = config.infrastructure.dynamodb
    table = PosteriorTable(dynamodb.endpoint_url, dynamodb.region, dynamodb.table)
    return {record_key(r): r for r in table.read()}


def settled(
    instance: DagsterInstance, settings: StackSettings, config: ExperimentsConfig, store: Path
) -> bool:
    """No run in flight, and DynamoDB and the topic hold what DuckDB holds."""
    if not idle(instance):
        return False
    in_duckdb = duckdb_posteriors(store)
    on_topic = topic_posteriors(
        KafkaForTests(settings.bootstrap_servers, settings.env), OUTPUT_TOPIC
    )
    return not differing(in_duckdb, table_posteriors(config)) and not differing(in_duckdb, on_topic)


def differing(reference: dict[str, Record], other: dict[str, Record]) -> int:
    """Records (test, variant, window) missing from `other` or not equal field for field."""
    keys = reference.keys() | other.keys()
    return sum(
        1
        for key in keys
        if key not in reference
        or key not in other
        or to_json(reference[key]) != to_json(other[key])
    )


def rematerialise(settings: StackSettings, env: dict[str, str], windows: list[datetime]) -> None:
    """`dagster asset materialize` over the range, as the README shows; fails loudly."""
    first, last = partition_key(min(windows)), partition_key(max(windows))
    command = [
        str(Path(sys.executable).with_name("dagster")),
        *("asset", "materialize", "-m", "diana_pipeline.definitions"),
        *("--select", "published_posteriors", "--partition-range", f"{first}...{last}"),
    ]
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"re-materialising failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


@dataclass
class StepFailure:
    run_id: str
    step: str
    message: str
    at: float  # wall clock

    def expected(self, kafka_outages: list[tuple[float, float]]) -> bool:
        if self.step == "published_posteriors":
            return True
        # A run that read the broker while it was down fails within the consumer's timeouts.
        slack = max(METADATA_TIMEOUT_S, STALL_TIMEOUT_S) + 30
        return (
            self.step == "events"
            and any(down <= self.at <= up + slack for down, up in kafka_outages)
            and ("Kafka is unreachable" in self.message or "no messages from" in self.message)
        )

    def __str__(self) -> str:
        return f"{self.step} in run {self.run_id[:8]}: {self.message}"


def failed_steps(instance: DagsterInstance, failed_runs: list) -> list[StepFailure]:
    failures = []
    for record in failed_runs:
        run_id = record.dagster_run.run_id
        for entry in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
            data = entry.dagster_event.step_failure_data
            user = data.user_failure_data
            message = (user.description if user else None) or (
                data.error.message.strip() if data.error else ""
            )
            failures.append(StepFailure(run_id, entry.step_key, message, entry.timestamp))
    return failures


# ---- the scenario -----------------------------------------------------------------------------


def run_faults(home: Path, eps: float, duration_s: float, kills: int, seed: int) -> FaultsResult:
    began = time.monotonic()
    sink = {"DIANA_OUTPUT_SINK": "dynamodb", "DIANA_OUTPUT_TOPIC": OUTPUT_TOPIC}
    print("  .. starting a private stack (Kafka, DynamoDB Local, Dagster)", file=sys.stderr)
    with private_stack(home, sink, with_dagster=True) as (env, settings, stack):
        dagster_env = {**env, "DAGSTER_HOME": str(settings.dagster_home)}
        config: ExperimentsConfig = load_config(REPO_ROOT / "experiments.yaml", env=env)
        store = config.infrastructure.duckdb.path
        instance = DagsterInstance.from_config(str(settings.dagster_home))
        try:
            spec = build_spec(
                config, PROBABILITIES, eps=eps, duration_s=duration_s, seed=seed, noise=NOISE
            )
            traffic = TrafficRun(config, spec)
            thread = threading.Thread(target=traffic.run, name="traffic")
            log = FaultLog()
            thread.start()
            log.add(f"traffic started: {eps:g} events/s for {duration_s:g}s")
            faults = Faults(stack, instance, log)
            for at, fault in fault_plan(duration_s, kills, seed):
                time.sleep(max(0.0, at - (time.monotonic() - log.began)))
                getattr(faults, fault)()
            thread.join()
            sent = traffic.summary
            log.add(f"traffic ended: {sent.sent:,} messages sent")
            traffic_end = time.monotonic()
            expected_events = sum(sent.events.values())
            wait_for(
                lambda: store_value(store, "SELECT count(*) FROM events") == expected_events,
                600,
                f"{expected_events:,} events in DuckDB",
                explain=lambda: pipeline_state(instance, store),
            )
            wait_for(
                lambda: idle(instance),
                300,  # with the wait above, inside the test's 1,200 s
                "every run to finish",
                explain=lambda: pipeline_state(instance, store),
            )
            recovery_s = time.monotonic() - traffic_end
            log.add(f"every event stored and the runs idle {recovery_s:.0f}s after the traffic")
            in_duckdb = duckdb_posteriors(store)
            windows = sorted({r["window_start"] for r in in_duckdb.values()})  # type: ignore[type-var]
            rematerialise(settings, dagster_env, windows)  # type: ignore[arg-type]
            log.add(f"published_posteriors re-materialised over {len(windows)} window(s)")
            # The automation may still refresh a window whose upstream changed (a late event
            # makes every later window stale): it rewrites DuckDB, then the sinks. Compare
            # once the pipeline is idle and the sinks caught up, or after the deadline anyway
            # (then the checks below show what differs).
            agreeing = Counter()

            def stays_settled() -> bool:
                # Three looks in a row, 5 s apart: the automation ticks every few seconds, so
                # a refresh it decides on shows up as a run in between.
                fine = settled(instance, settings, config, store)
                agreeing["looks"] = agreeing["looks"] + 1 if fine else 0
                return agreeing["looks"] >= 3

            with contextlib.suppress(TimeoutError):
                wait_for(stays_settled, 240, "the sinks to agree with DuckDB", poll_s=5.0)
            in_duckdb = duckdb_posteriors(store)
            checks = verify(settings, config, sent, store, in_duckdb)
            failed = instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.FAILURE]))
            failed_runs = Counter(record.dagster_run.job_name for record in failed)
            failures = failed_steps(instance, failed)
            refused_sink_writes = sum(1 for f in failures if f.step == "published_posteriors")
            unexpected = [f for f in failures if not f.expected(faults.kafka_outages)]
            # A killed run's steps never end. A step that failed is a bug unless it wrote the
            # sink (DynamoDB down) or read Kafka while the broker was down.
            checks.append(
                Check(
                    "steps that failed, other than writing the sink or reading a stopped broker"
                    + "".join(f"; {f}" for f in unexpected),
                    0,
                    len(unexpected),
                )
            )
        finally:
            instance.dispose()
    return FaultsResult(
        sent,
        log.entries,
        checks,
        failed_runs,
        refused_sink_writes,
        recovery_s,
        time.monotonic() - began,
    )


def verify(
    settings: StackSettings,
    config: ExperimentsConfig,
    sent: TrafficSummary,
    store: Path,
    in_duckdb: dict[str, Record],
) -> list[Check]:
    in_table = table_posteriors(config)
    kafka = KafkaForTests(settings.bootstrap_servers, settings.env)
    on_topic = topic_posteriors(kafka, OUTPUT_TOPIC)
    users = expected_totals(Counter(), sent.as_dict())  # (test, variant, kind) -> users
    overlaps = (
        "SELECT count(*) FROM (SELECT start_offset, lag(end_offset) OVER "
        "(PARTITION BY topic, kafka_partition ORDER BY start_offset) AS previous_end "
        "FROM ingested_ranges) WHERE start_offset < previous_end"
    )
    checks = [
        Check("traffic: messages that failed delivery", 0, sum(sent.deliveries.failed.values())),
        Check(
            "events stored",
            sum(sent.events.values()),
            store_value(store, "SELECT count(*) FROM events"),
        ),
        Check(
            "events stored twice (same event_id)",
            0,
            store_value(store, "SELECT count(*) - count(DISTINCT event_id) FROM events"),
        ),
        Check(
            "bad messages in rejected_events",
            sent.noise["malformed messages"],
            store_value(store, "SELECT count(*) FROM rejected_events"),
        ),
        Check(
            "Kafka offsets ingested",
            sent.sent,
            store_value(store, "SELECT sum(end_offset - start_offset) FROM ingested_ranges"),
        ),
        Check("offset ranges ingested twice (overlapping)", 0, store_value(store, overlaps)),
    ]
    for where, records in (
        ("DuckDB posteriors", in_duckdb),
        ("DynamoDB", in_table),
        (f"topic {OUTPUT_TOPIC}", on_topic),
    ):
        found = latest_totals(list(records.values()))
        checks += [
            Check(f"{where}: {test_id}/{variant} {LABELS[kind]} users", n, found[key])
            for key, n in users.items()
            for test_id, variant, kind in [key]
        ]
    checks += [
        Check("DynamoDB items not equal to DuckDB's record", 0, differing(in_duckdb, in_table)),
        Check("topic records not equal to DuckDB's record", 0, differing(in_duckdb, on_topic)),
    ]
    return checks


def render(result: FaultsResult) -> str:
    happened = table(
        ["at", "what happened"], [(f"{at:.1f} s", what) for at, what in result.faults], align="rl"
    )
    checks = table(
        ["check", "expected", "found", ""],
        [
            (c.what, f"{c.expected:,}", f"{c.found:,}", "ok" if c.held else "**differs**")
            for c in result.checks
        ],
        align="lrrl",
    )
    return f"{happened}\n\n{checks}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--eps", type=float, default=1000.0, help="traffic events per second")
    parser.add_argument("--duration", type=float, default=150.0, help="seconds of traffic")
    parser.add_argument("--kills", type=int, default=6, help="kill -9s (daemon or a run)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--keep", type=Path, help="run in this folder and keep it (logs, Dagster runs, DuckDB)"
    )
    args = parser.parse_args(argv)
    # The broker goes down on purpose: the traffic producer's connection errors are expected.
    logging.getLogger("diana.librdkafka").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="diana-faults-") as scratch:
        home = args.keep or Path(scratch)
        result = run_faults(home, args.eps, args.duration, args.kills, args.seed)
    findings = render(result)
    verdict = "exact: nothing lost, nothing twice" if result.exact else "NOT EXACT"
    failed = ", ".join(f"{n} {job}" for job, n in sorted(result.failed_runs.items())) or "none"
    print(findings)
    print(f"runs failed by the faults (then retried or superseded): {failed}")
    print(f"sink writes that failed while DynamoDB was down: {result.refused_sink_writes}")
    print(verdict)
    if not args.no_write:
        write_section(
            RELIABILITY_PAGE,
            "faults",
            "Faults while traffic flows",
            f"python -m reliability.faults --eps {args.eps:g} --duration {args.duration:g} "
            f"--kills {args.kills} --seed {args.seed}",
            "A private stack with output sink DynamoDB and the posteriors also "
            f"published to a Kafka topic; {result.sent.sent:,} messages of traffic "
            "(with 2% duplicate deliveries and 1% malformed messages). Every event was "
            f"stored and the runs idle {result.recovery_s:.0f} s after the traffic "
            f"ended; runs the faults failed: {failed}, of which "
            f"{result.refused_sink_writes} failed writing to DynamoDB while it was "
            f"down. The whole scenario took {result.seconds:.0f} s. {verdict}.",
            findings,
        )
    return 0 if result.exact else 1


if __name__ == "__main__":
    sys.exit(main())
