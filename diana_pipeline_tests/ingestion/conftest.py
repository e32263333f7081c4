"""Shared by the ingestion tests: a configuration on a new 3-partition topic and its own
store, traffic produced onto it, and the offset ranges that cover the whole topic."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest

from diana_pipeline.config import ExperimentsConfig, load_config
from diana_pipeline.harness.kafka import KafkaForTests
from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.ingestion import make_consumer, plan_runs, watermarks
from diana_pipeline.store import EventStore, OffsetRange, StoreLocation
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


@pytest.fixture(params=["duckdb", "ducklake"])
def setup(
    request: pytest.FixtureRequest,
    kafka: KafkaForTests,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[ExperimentsConfig, StoreLocation]:
    """A configuration on a new topic, with a new store of each kind."""
    topic = kafka.new_topic(partitions=3)
    env = {**kafka.env_for(topic), "DIANA_DUCKDB_PATH": str(tmp_path / "events.duckdb")}
    if request.param == "ducklake":
        env.update(request.getfixturevalue("postgres").new_lake(tmp_path))
        # The catalog's password reaches DuckDB from the process environment (lake.py).
        monkeypatch.setenv("DIANA_POSTGRES_PASSWORD", env["DIANA_POSTGRES_PASSWORD"])
    config = load_config(REPO_ROOT / "experiments.yaml", env=env)
    return config, config.infrastructure.store_location


@contextmanager
def reading(location: StoreLocation) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to a store of either kind."""
    with EventStore.open(location, read_only=True) as store:
        yield store.connection
