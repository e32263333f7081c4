"""traffic_job through `dagster job execute`, in a subprocess, and ingest_job from a sensor
request, in process, against a real broker."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from dagster import (
    DagsterInstance,
    build_sensor_context,
    evaluate_automation_conditions,
)

from diana_pipeline.assets.ingestion import EVENTS
from diana_pipeline.assets.statistics import INCREMENTS
from diana_pipeline.config import load_config
from diana_pipeline.harness.kafka import KafkaForTests
from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.jobs import INGEST_JOB
from diana_pipeline.partitions import partition_key
from diana_pipeline.producer import make_producer
from diana_pipeline.sensors import build_kafka_sensor
from diana_pipeline.sinks.csv_files import PosteriorCsvFiles
from diana_pipeline.traffic import TrafficRun, build_spec
from diana_pipeline_tests.conftest import pipeline_definitions, run_command

pytestmark = pytest.mark.servers


def execute(
    kafka: KafkaForTests, topic: str, tmp_path: Path, config: dict
) -> subprocess.CompletedProcess[str]:
    run_config = tmp_path / "run_config.yaml"
    run_config.write_text(yaml.safe_dump(config))
    (tmp_path / "dagster_home").mkdir(exist_ok=True)
    env = {**kafka.env_for(topic), "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    return run_command(
        "dagster",
        "job",
        "execute",
        "-m",
        "diana_pipeline.definitions",
        "-j",
        "traffic_job",
        "-c",
        str(run_config),
        env=env,
    )


def example_config(**changes: object) -> dict:
    config = yaml.safe_load((REPO_ROOT / "examples" / "traffic_job.yaml").read_text())
    config["ops"]["send_traffic"]["config"].update(changes)
    return config


def test_traffic_job_runs_through_dagster_job_execute(kafka: KafkaForTests, tmp_path: Path) -> None:
    topic = kafka.new_topic()
    result = execute(kafka, topic, tmp_path, example_config(events_per_second=None, count=1500))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "RUN_SUCCESS" in output
    assert "done: 1,500 messages" in output
    assert kafka.count(topic) == 1500


def test_traffic_job_fails_clearly_on_bad_config(kafka: KafkaForTests, tmp_path: Path) -> None:
    topic = kafka.new_topic()
    bad = example_config(count=10, success_probabilities={"control": 0.3, "purple": 0.5})
    result = execute(kafka, topic, tmp_path, bad)
    assert result.returncode != 0
    assert "unknown variant 'purple'" in result.stdout + result.stderr
    assert kafka.count(topic) == 0


# ---- ingest_job: what the Kafka sensor launches ------------------------------------------------


def test_one_ingestion_run_stores_a_batch_and_refreshes_its_windows(
    kafka: KafkaForTests, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sensor's request covers the window the messages were produced in; its run stores
    them and leaves that window's posteriors in the sink, so the automation has nothing left
    to do there. A late event's window is reported, and the automation refreshes it and every
    window after it up to the run's (their totals changed too)."""
    topic = kafka.new_topic()
    env = {
        **kafka.env_for(topic),
        "DIANA_DUCKDB_PATH": str(tmp_path / "events.duckdb"),
        "DIANA_OUTPUT_SINK": "csv",
        "DIANA_CSV_DIR": str(tmp_path / "output"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = load_config(REPO_ROOT / "experiments.yaml")
    windows_before = config.partitions.window_start(datetime.now(UTC))
    spec = build_spec(config, {"control": 0.35, "treatment": 0.55}, eps=None, count=600, seed=4)
    sent = TrafficRun(config, spec).run()
    late_window = windows_before - 3 * config.partitions.window
    producer = make_producer(config.infrastructure.kafka.bootstrap_servers)
    late = {
        "event_id": "late-1",
        "event_type": "ButtonDisplayed",
        "test_id": "button-color-test",
        "variant": "control",
        "user_id": "late-user",
        "timestamp": f"{late_window + timedelta(minutes=5):%Y-%m-%dT%H:%M:%S}.000Z",
    }
    producer.produce(topic, json.dumps(late).encode())
    producer.flush(10)

    definitions = pipeline_definitions(config)
    with DagsterInstance.ephemeral() as instance:
        before = evaluate_automation_conditions(definitions, instance)
        sensor = build_kafka_sensor(config, INGEST_JOB)
        resources = {key: definitions.resources[key] for key in ("experiments", "kafka")}
        with build_sensor_context(instance=instance, resources=resources) as context:
            result = sensor(context)
        [request] = result.run_requests
        first, last = (
            request.tags["dagster/asset_partition_range_start"],
            request.tags["dagster/asset_partition_range_end"],
        )
        windows_after = config.partitions.window_start(datetime.now(UTC))
        assert partition_key(windows_before) <= first <= last <= partition_key(windows_after)
        run = definitions.resolve_job_def(INGEST_JOB).execute_in_process(
            run_config=request.run_config, tags=request.tags, instance=instance
        )
        assert run.success

        reported = {
            event.materialization.partition
            for event in run.get_asset_materialization_events()
            if event.asset_key == EVENTS
        }
        assert reported == {first, last, partition_key(late_window)}
        records = PosteriorCsvFiles(config.infrastructure.csv.directory).read()
        newest = {r["variant"]: r for r in sorted(records, key=lambda r: r["window_start"])}
        exposed = {v: n for (_, v), n in sent.exposed_users.items()}
        exposed["control"] += 1  # the late user, counted in every later window
        assert {v: r["exposures_total"] for v, r in newest.items()} == exposed
        converted = {v: n for (_, v), n in sent.converted_users.items()}
        assert {v: r["successes_total"] for v, r in newest.items()} == converted

        after = evaluate_automation_conditions(definitions, instance, cursor=before.cursor)
        changed = {
            partition_key(late_window + k * config.partitions.window)
            for k in range(3)
            if partition_key(late_window + k * config.partitions.window) < first
        }
        assert after.get_requested_partitions(INCREMENTS) == changed
        assert partition_key(late_window) in changed
