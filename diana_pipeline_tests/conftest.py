"""Shared test helpers: the repository root, free loopback ports, and a real Kafka broker
for the whole session."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from diana_pipeline.local_stack import LocalStack, StackSettings
from diana_pipeline_tests.kafka_helpers import KafkaForTests, private_stack_environment

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaForTests]:
    """A real Kafka broker started by the project's stack code, shared by the session."""
    env = private_stack_environment(tmp_path_factory.mktemp("kafka-stack"), free_port)
    settings = StackSettings.from_environment(REPO_ROOT, REPO_ROOT / "experiments.yaml", env)
    stack = LocalStack(settings)
    try:
        stack.up(with_dynamodb=False)
        yield KafkaForTests(settings.bootstrap_servers, env)
    finally:
        stack.down()
