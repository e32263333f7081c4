"""Shared by the ingestion tests: a configuration on a new 3-partition topic and its own
store, traffic produced onto it, and the offset ranges that cover the whole topic."""

from __future__ import annotations

from pathlib import Path

import pytest

from diana_pipeline.config import ExperimentsConfig, load_config
from diana_pipeline.harness.kafka import KafkaForTests
from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.ingestion import make_consumer, plan_runs, watermarks
from diana_pipeline.store import OffsetRange
from diana_pipeline.traffic import NoiseRates, TrafficRun, build_spec


def produce(config: ExperimentsConfig, count: int, seed: int, noise: NoiseRates | None = None):
    spec = build_spec(
        config, {"control": 0.35, "treatment": 0.55}, eps=None, count=count, seed=seed, noise=noise
    )
    return TrafficRun(config, spec).run()


def all_ranges(config: ExperimentsConfig, max_batch: int = 10**9) -> list[list[OffsetRange]]:
    consumer = make_consumer(config.infrastructure.kafka)
    try:
        marks = watermarks(consumer, config.infrastructure.kafka.topic)
    finally:
        consumer.close()
    return plan_runs(marks, {}, max_batch, 1000)[0]


@pytest.fixture
def setup(kafka: KafkaForTests, tmp_path: Path) -> tuple[ExperimentsConfig, Path]:
    topic = kafka.new_topic(partitions=3)
    env = {**kafka.env_for(topic), "DIANA_DUCKDB_PATH": str(tmp_path / "events.duckdb")}
    return load_config(REPO_ROOT / "experiments.yaml", env=env), tmp_path / "events.duckdb"
