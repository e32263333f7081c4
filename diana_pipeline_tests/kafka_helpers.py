"""A real Kafka broker for the tests (started by the project's own local stack, Kafka only,
in a private folder on free ports), with helpers to make topics and read them back."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from diana_pipeline.config import ExperimentsConfig, load_config
from diana_pipeline.local_stack import LocalStack, StackSettings

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class KafkaForTests:
    bootstrap_servers: str
    env: dict[str, str] = field(repr=False)  # DIANA_* settings pointing at this broker

    def new_topic(self, partitions: int = 3) -> str:
        topic = f"test-{uuid.uuid4().hex[:12]}"
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=30)
        # Created is not yet visible: wait until the broker's metadata shows every partition
        # with a leader, or a producer asking right away is told the topic does not exist.
        deadline = time.monotonic() + 30
        while True:
            described = admin.list_topics(topic, timeout=10).topics.get(topic)
            ready = (
                described is not None
                and described.error is None
                and len(described.partitions) == partitions
                and all(p.leader >= 0 for p in described.partitions.values())
            )
            if ready:
                return topic
            assert time.monotonic() < deadline, f"topic {topic} never became visible"
            time.sleep(0.1)

    def env_for(self, topic: str) -> dict[str, str]:
        """Environment for a subprocess (or load_config) that should use `topic`."""
        return {**self.env, "DIANA_KAFKA_TOPIC": topic}

    def config_for(self, topic: str) -> ExperimentsConfig:
        return load_config(REPO_ROOT / "experiments.yaml", env=self.env_for(topic))

    def read_all(self, topic: str) -> list[tuple[bytes | None, bytes]]:
        """Every message on the topic as (key, value), partition by partition."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "group.id": f"reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
            }
        )
        try:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            ends = {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions
            }
            consumer.assign([TopicPartition(topic, p, 0) for p in partitions if ends[p] > 0])
            messages: list[tuple[bytes | None, bytes]] = []
            remaining = {p: end for p, end in ends.items() if end > 0}
            idle = 0
            while remaining and idle < 60:
                batch = consumer.consume(num_messages=10_000, timeout=0.5)
                idle = 0 if batch else idle + 1
                for message in batch:
                    assert message.error() is None, message.error()
                    messages.append((message.key(), message.value()))
                    if message.offset() + 1 >= remaining.get(message.partition(), 0):
                        remaining.pop(message.partition(), None)
            assert not remaining, f"could not read partitions {remaining} of {topic}"
            return messages
        finally:
            consumer.close()

    def count(self, topic: str) -> int:
        consumer = Consumer({"bootstrap.servers": self.bootstrap_servers, "group.id": "counter"})
        try:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            return sum(
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions
            )
        finally:
            consumer.close()


def private_stack_environment(home: Path, free_port: object) -> dict[str, str]:
    """DIANA_* variables for a stack of its own: folder, ports and data paths."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIANA_", "DAGSTER_"))}
    env.update(
        DIANA_HOME=str(home),
        DIANA_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",  # type: ignore[operator]
        DIANA_KAFKA_CONTROLLER_PORT=str(free_port()),  # type: ignore[operator]
        DIANA_DYNAMODB_ENDPOINT=f"http://127.0.0.1:{free_port()}",  # type: ignore[operator]
        DIANA_DAGSTER_PORT=str(free_port()),  # type: ignore[operator]
        DIANA_DUCKDB_PATH=str(home / "events.duckdb"),
        DIANA_CSV_DIR=str(home / "output"),
    )
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivateStack(NamedTuple):
    env: dict[str, str]  # DIANA_* settings pointing at it
    settings: StackSettings
    stack: LocalStack


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def private_stack(
    home: Path, extra_env: Mapping[str, str] | None = None, **services: bool
) -> Iterator[PrivateStack]:
    """A stack of its own under `home` on free ports: its environment, settings and servers,
    started with `services` (LocalStack.up's with_* flags) and brought down on leaving, also
    when starting fails half-way and on SIGTERM (which would otherwise end the process
    without running `finally`, and leave the servers up)."""
    env = {**private_stack_environment(home, free_port), **(extra_env or {})}
    settings = StackSettings.from_environment(REPO_ROOT, REPO_ROOT / "experiments.yaml", env)
    stack = LocalStack(settings)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        stack.up(**services)
        yield PrivateStack(env, settings, stack)
    finally:
        try:
            stack.down()
        finally:
            signal.signal(signal.SIGTERM, previous)
