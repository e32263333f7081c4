"""Shared test helpers: running a console script, the pipeline's definitions for a
configuration, and a real Kafka broker and DynamoDB Local for the whole session (what the
benchmarks and the reliability suite share with the tests is in diana_pipeline.harness)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import Definitions

from diana_pipeline.assets.ingestion import build_events
from diana_pipeline.assets.statistics import build_statistics
from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.harness.kafka import KafkaForTests
from diana_pipeline.harness.paths import REPO_ROOT, SHIPPED_CONFIG
from diana_pipeline.harness.postgres import PostgresForTests, postgres_for_tests
from diana_pipeline.harness.stack import private_stack
from diana_pipeline.jobs import ingest_job
from diana_pipeline.resources import pipeline_resources


def run_command(
    command: str, *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run one of this environment's console scripts (diana-*, dagster) from the repo root,
    as a user would, capturing its output."""
    return subprocess.run(
        [str(Path(sys.executable).with_name(command)), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def pipeline_definitions(config: ExperimentsConfig, config_file: Path | None = None) -> Definitions:
    """The events and statistics assets and ingest_job over `config` (which the runs load
    again from `config_file`, with the same environment), without the sensors and schedule."""
    assets, *_ = build_statistics(config)
    return Definitions(
        assets=[build_events(config), *assets],
        jobs=[ingest_job],
        resources=pipeline_resources(config, config_file or SHIPPED_CONFIG),
    )


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaForTests]:
    """A real Kafka broker started by the project's stack code, shared by the session."""
    with private_stack(tmp_path_factory.mktemp("kafka-stack"), with_dynamodb=False) as own:
        yield KafkaForTests(own.settings.bootstrap_servers, own.env)


@pytest.fixture(scope="session")
def dynamodb_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real DynamoDB Local started by the project's stack (DynamoDB only), shared by the
    session; tests use a table each."""
    with private_stack(tmp_path_factory.mktemp("dynamodb-stack"), with_kafka=False) as own:
        yield own.settings.dynamodb_endpoint


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresForTests]:
    """A real PostgreSQL started by the project's stack (scale profile), shared by the
    session; each DuckLake store gets a database of its own (PostgresForTests.new_lake)."""
    with postgres_for_tests() as server:
        yield server
