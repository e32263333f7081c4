"""A real Kafka broker (a private stack's, see stack.py) with what tests, benchmarks and the
reliability suite do with it: make topics, point a configuration at one, read it back."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from diana_pipeline.config import ExperimentsConfig, load_config
from diana_pipeline.harness.paths import SHIPPED_CONFIG


@dataclass
class KafkaForTests:
    """A broker to make topics on and read them back (its name: the tests had it first)."""

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
        return load_config(SHIPPED_CONFIG, env=self.env_for(topic))

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
