"""traffic_job through `dagster job execute`, in a subprocess, against a real broker."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from diana_pipeline_tests.conftest import run_command
from diana_pipeline_tests.kafka_helpers import REPO_ROOT, KafkaForTests

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
