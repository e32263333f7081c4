"""The metrics sensor against a real broker: a record per ended run of the pipeline's jobs
(none for other jobs), and with Kafka unreachable the tick fails and keeps its cursor, so the
same runs go out once Kafka answers. (The records' figures against the ledger are checked in
cli/test_engine.py.)"""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Consumer, TopicPartition
from dagster import DagsterInstance, SkipReason, build_sensor_context

from diana_pipeline.config import load_config
from diana_pipeline.harness.kafka import KafkaForTests
from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.harness.stack import free_port
from diana_pipeline.jobs import INGEST_JOB, traffic_job
from diana_pipeline.resources import pipeline_resources
from diana_pipeline.run_metrics import run_kind
from diana_pipeline.sensors import build_metrics_sensor
from diana_pipeline_tests.conftest import pipeline_definitions

pytestmark = pytest.mark.servers


def tick(env: dict[str, str], instance: DagsterInstance, cursor: str | None):
    """One evaluation of the metrics sensor; returns its result and its cursor after."""
    config = load_config(REPO_ROOT / "experiments.yaml", env=env)
    [sensor] = build_metrics_sensor(config)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        resources = pipeline_resources(config, REPO_ROOT / "experiments.yaml")
        with build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
            result = sensor(context)
            return result, context.cursor


def read_topic(bootstrap_servers: str, topic: str) -> list[dict]:
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": "metrics-test"})
    try:
        _, end = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, 0)])
        records = []
        while len(records) < end:
            message = consumer.poll(10)
            assert message is not None and not message.error()
            records.append(json.loads(message.value()))
        return records
    finally:
        consumer.close()


def test_ended_runs_are_published_once_and_kept_while_kafka_is_down(kafka: KafkaForTests) -> None:
    topic = f"metrics-{free_port()}"
    env = {**kafka.env, "DIANA_METRICS_TOPIC": topic}
    down = {**env, "DIANA_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    assert build_metrics_sensor(load_config(REPO_ROOT / "experiments.yaml", env=kafka.env)) == []
    config = load_config(REPO_ROOT / "experiments.yaml", env=env)
    job = pipeline_definitions(config).resolve_job_def(INGEST_JOB)
    ranges = {"ops": {"events": {"config": {"ranges": [{"partition": 0, "start": 0, "end": 4}]}}}}
    with DagsterInstance.ephemeral() as instance:
        failed = instance.create_run_for_job(job, run_config=ranges)
        refresh = instance.create_run_for_job(job)  # no offsets: a refresh
        traffic = instance.create_run_for_job(traffic_job)
        assert (run_kind(failed), run_kind(refresh), run_kind(traffic)) == (
            "ingestion", "refresh", None,
        )  # fmt: skip
        for run in (failed, traffic):
            instance.report_run_failed(run)
        instance.report_run_canceled(refresh)

        # Kafka unreachable: the tick fails, and its cursor stays where it was.
        with pytest.raises(RuntimeError, match=f"metrics not published to {topic}"):
            tick(down, instance, None)
        result, cursor = tick(env, instance, None)
        assert isinstance(result, SkipReason) and "published 2 record(s)" in result.skip_message
        records = {r["run_id"]: r for r in read_topic(kafka.bootstrap_servers, topic)}
        assert set(records) == {failed.run_id, refresh.run_id}
        assert (records[failed.run_id]["kind"], records[failed.run_id]["status"]) == (
            "ingestion", "failure",
        )  # fmt: skip
        assert records[refresh.run_id]["status"] == "canceled"
        assert records[failed.run_id]["events_ingested"] == 0  # it stored nothing

        # Nothing ended since: nothing is published again.
        again, same = tick(env, instance, cursor)
        assert isinstance(again, SkipReason) and again.skip_message.startswith("no run ended")
        assert same == cursor
        assert len(read_topic(kafka.bootstrap_servers, topic)) == 2
