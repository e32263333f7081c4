"""diana-engine through a real stack of its own: the progress lines count exactly the traffic
sent, the metrics topic's records agree with the ledger the runs wrote, Ctrl-C exits 130 and
--run-for exits 0, and the engine stops what it started and leaves what ran before."""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from diana_pipeline.cli.engine import STATUS_PREFIX
from diana_pipeline.config import load_config
from diana_pipeline.harness.paths import REPO_ROOT, SHIPPED_CONFIG
from diana_pipeline.harness.stack import private_stack_environment
from diana_pipeline.local_stack import LocalStack, StackSettings
from diana_pipeline.sinks.console_log import PREFIX
from diana_pipeline.store import EventStore
from diana_pipeline_tests.conftest import run_command
from diana_pipeline_tests.test_end_to_end import processes_of

pytestmark = pytest.mark.servers

METRICS_TOPIC = "diana-metrics"
KINDS = {
    "empty", "oversized", "not_json", "not_an_object", "missing_field", "bad_field",
    "bad_value", "bad_properties", "unknown_test", "unknown_variant", "bad_timestamp",
    "timestamp_out_of_range",
}  # fmt: skip


class Engine:
    """diana-engine as a user starts it, its output read line by line as it comes (both
    streams drained, so that neither pipe fills and stalls it)."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("diana-engine")), *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.errors: list[str] = []
        self.readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_errors, daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            self.lines.put(line.rstrip("\n"))

    def _read_errors(self) -> None:
        for line in self.process.stderr:  # type: ignore[union-attr]
            self.errors.append(line)

    def wait_for(self, wanted: Callable[[list[str]], bool], timeout_s: float, what: str) -> None:
        """Read lines until `wanted(seen)` holds; fails after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not wanted(self.seen):
            if self.process.poll() is not None and self.lines.empty():
                raise AssertionError(f"diana-engine exited: {''.join(self.errors)[-3000:]}")
            with contextlib.suppress(queue.Empty):
                self.seen.append(self.lines.get(timeout=1.0))
            assert time.monotonic() < deadline, f"no {what} within {timeout_s:.0f}s"

    def finish(self, timeout_s: float = 120) -> tuple[int, str]:
        """Its exit code and what it wrote on stderr, once it has ended."""
        code = self.process.wait(timeout=timeout_s)
        for reader in self.readers:
            reader.join(timeout=10)  # the pipes end with the process
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code, "".join(self.errors)


def latest_posteriors(lines: list[str]) -> dict[str, dict]:
    """The variant's last Posterior ► line of the engine's output."""
    latest = {}
    for line in lines:
        if line.startswith(PREFIX) and "{" in line:
            record = json.loads(line.removeprefix(PREFIX))
            latest[record["variant"]] = record
    return latest


def statuses(lines: list[str]) -> list[dict]:
    return [json.loads(line.removeprefix(STATUS_PREFIX)) for line in lines
            if line.startswith(STATUS_PREFIX)]  # fmt: skip


def metrics_records(bootstrap_servers: str) -> list[dict]:
    """Everything on the metrics topic so far (a topic that does not exist yet: none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": "engine-test",
                         "enable.auto.commit": False})  # fmt: skip
    try:
        topics = consumer.list_topics(METRICS_TOPIC, timeout=10).topics
        if METRICS_TOPIC not in topics or topics[METRICS_TOPIC].error is not None:
            return []
        _, end = consumer.get_watermark_offsets(TopicPartition(METRICS_TOPIC, 0), timeout=10)
        consumer.assign([TopicPartition(METRICS_TOPIC, 0, 0)])
        records = []
        while len(records) < end:
            message = consumer.poll(10)
            assert message is not None and not message.error(), "the metrics topic stalled"
            records.append(json.loads(message.value()))
        return records
    finally:
        consumer.close()


def test_the_engine_shows_every_event_and_publishes_each_runs_metrics(tmp_path: Path) -> None:
    home = tmp_path / "stack"
    env = {**private_stack_environment(home), "DIANA_METRICS_TOPIC": METRICS_TOPIC}
    stack = LocalStack(StackSettings.from_environment(REPO_ROOT, SHIPPED_CONFIG, env))
    config = load_config(SHIPPED_CONFIG, env=env)
    bootstrap = config.infrastructure.kafka.bootstrap_servers
    try:
        stack.up(with_dynamodb=False)  # Kafka runs before the engine: it must stay
        kafka_pid = stack.processes["kafka"].running().pid  # type: ignore[union-attr]
        engine = Engine(env, "--run-for", "0", "--progress-interval", "2", "--no-ui")
        engine.wait_for(lambda seen: any(s.startswith("diana-engine: running") for s in seen),
                        240, "start")  # fmt: skip
        traffic = run_command(
            "diana-traffic", "--count", "900", "--eps", "300", "--seed", "5", "--json",
            "--malformed-rate", "0.05", "--duplicate-rate", "0.05", env=env,
        )  # fmt: skip
        assert traffic.returncode == 0, traffic.stderr[-3000:]
        summary = json.loads(traffic.stdout)
        expected = {
            row["variant"]: (row["exposed_users"], row["converted_users"])
            for row in summary["expected_counts"]
        }
        malformed = summary["noise"]["malformed messages"]
        duplicates = summary["noise"]["duplicate deliveries"]
        assert malformed > 0 and duplicates > 0

        def caught_up(seen: list[str]) -> bool:
            latest = latest_posteriors(seen)
            shown = {v: (r["exposures_total"], r["successes_total"]) for v, r in latest.items()}
            return shown == expected and any(s["consumer_lag"] == 0 for s in statuses(seen))

        engine.wait_for(caught_up, 300, "posteriors counting every user sent")
        for record in latest_posteriors(engine.seen).values():  # the original's form
            assert list(record)[:4] == ["test_id", "variant", "alpha", "beta"]
            assert record["alpha"] == 1 + record["successes_total"]  # experiments.yaml's prior
        # The status line counts what the runs stored: every delivery, valid or not.
        engine.wait_for(
            lambda seen: statuses(seen)[-1]["events_ingested"] + statuses(seen)[-1]["rejected"]
            + statuses(seen)[-1]["duplicates"] == summary["sent"],
            60, "a status line with every message",
        )  # fmt: skip
        status = statuses(engine.seen)[-1]
        assert (status["rejected"], status["duplicates"]) == (malformed, duplicates)
        assert status["runs_failed"] == 0

        # The metrics of every ingestion run reach the topic (after each run ends).
        deadline = time.monotonic() + 120
        while True:
            records = metrics_records(bootstrap)
            ingestion = [r for r in records if r["kind"] == "ingestion"]
            if (
                sum(r["events_ingested"] + r["rejected"] + r["duplicates"] for r in ingestion)
                >= (summary["sent"])
            ):
                break
            assert time.monotonic() < deadline, f"metrics never covered the traffic: {records}"
            time.sleep(1)

        engine.process.send_signal(signal.SIGINT)
        code, stderr = engine.finish()
        assert code == 130, stderr[-3000:]
        assert "left running, as it was before: kafka" in stderr
        # Nothing the engine started is left: only the Kafka that ran before it.
        deadline = time.monotonic() + 30
        while {p.pid for p in processes_of(home)} - {kafka_pid} and time.monotonic() < deadline:
            time.sleep(0.5)
        others = [p for p in processes_of(home) if p.pid != kafka_pid]
        assert others == [], [p.cmdline()[:3] for p in others]
        assert stack.processes["kafka"].running().pid == kafka_pid  # type: ignore[union-attr]

        # Each ingestion record says what its run wrote in the ledger (the run's own rows).
        with EventStore.open(config.infrastructure.store_location, read_only=True) as store:
            ledger = {
                run_id: (events, duplicates, rejected)
                for run_id, events, duplicates, rejected in store.connection.execute(
                    "SELECT run_id, sum(events), sum(duplicates), sum(rejected) "
                    "FROM ingested_ranges GROUP BY run_id"
                ).fetchall()
            }
        published = {r["run_id"]: (r["events_ingested"], r["duplicates"], r["rejected"])
                     for r in ingestion}  # fmt: skip
        assert published == ledger
        for record in ingestion:
            assert record["status"] == "success" and record["windows"]
            assert sum(record["rejected_by_reason"].values()) == record["rejected"]
            assert set(record["rejected_by_reason"]) <= KINDS
            assert set(record["consumer_lag"]) == {"0", "1", "2"}
            assert record["duration_s"] > 0 and record["freshness_s"] is not None
        by_reason = Counter()
        for record in ingestion:
            by_reason.update(record["rejected_by_reason"])
        assert sum(by_reason.values()) == malformed
    finally:
        stack.down()


def test_run_for_ends_the_engine_with_nothing_left_running(tmp_path: Path) -> None:
    home = tmp_path / "stack"
    env = private_stack_environment(home)
    try:
        engine = Engine(env, "--run-for", "12", "--progress-interval", "4")
        code, stderr = engine.finish(timeout_s=400)
        assert code == 0, stderr[-3000:]
        out = engine.seen
        assert any(line.startswith("Dagster UI: http://127.0.0.1:") for line in out), out
        # The periodic lines and the last one on the way out; nothing published yet.
        assert len(statuses(out)) >= 2, out
        assert statuses(out)[-1]["events_ingested"] == 0
        assert f"{PREFIX.strip()} (no posteriors published yet)" in out
        for name in ("dagster-webserver", "dagster-daemon", "dynamodb", "kafka"):
            assert f"diana-engine: stopped {name}" in stderr
        assert "left running" not in stderr
        deadline = time.monotonic() + 30
        while processes_of(home) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert processes_of(home) == []
    finally:
        run_command("diana-stack", "down", env=env, timeout=180)


def test_a_dagster_with_other_settings_is_restarted_and_the_engine_says_so(
    tmp_path: Path,
) -> None:
    home = tmp_path / "stack"
    env = private_stack_environment(home)
    other = {**env, "DIANA_OUTPUT_SINK": "csv"}
    stack = LocalStack(StackSettings.from_environment(REPO_ROOT, SHIPPED_CONFIG, other))
    try:
        stack.up(with_dagster=True, with_webserver=False)  # the CSV sink's pipeline
        assert stack.processes["dagster-daemon"].running() is not None
        engine = Engine(env, "--run-for", "4", "--progress-interval", "2", "--no-ui")
        code, stderr = engine.finish(timeout_s=300)
        assert code == 0, stderr[-3000:]
        assert "Dagster runs with other settings" in stderr
        assert "(sink console)" in " ".join(engine.seen)
        assert "left running, as it was before: kafka, dynamodb" in stderr
        assert "restarted and is now stopped: dagster-daemon" in stderr
        assert stack.processes["dagster-daemon"].running() is None
        assert stack.processes["kafka"].running() is not None
    finally:
        stack.down()
