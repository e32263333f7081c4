"""A Kafka producer that accounts for every message: delivered, failed (by reason), or never
delivered by the end of the flush. Shared by traffic generation and `diana-inject`."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Message, Producer

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 60.0
# librdkafka reports transient states (a coordinator still loading, a retried connection) as
# warnings; failures that matter reach Deliveries, so only its errors are logged.
_LIBRDKAFKA_LOG = logging.getLogger("diana.librdkafka")
_LIBRDKAFKA_LOG.setLevel(logging.ERROR)


class ProducerError(RuntimeError):
    """Kafka cannot take the messages (unreachable broker, missing topic)."""


@dataclass
class Deliveries:
    """Outcome of every produced message, filled by delivery callbacks."""

    produced: int = 0
    delivered: int = 0
    failed: Counter[str] = field(default_factory=Counter)

    def on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            self.delivered += 1
        else:
            self.failed[error.name()] += 1

    @property
    def failures(self) -> int:
        return sum(self.failed.values())


def make_producer(bootstrap_servers: str) -> Producer:
    """Idempotent (no duplicates from retries), batched and compressed."""
    return Producer(
        {
            "bootstrap.servers": bootstrap_servers,
            "enable.idempotence": True,
            "compression.type": "lz4",
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "message.timeout.ms": 30_000,
        },
        logger=_LIBRDKAFKA_LOG,
    )


def check_topic(
    producer: Producer, bootstrap_servers: str, topic: str, timeout_s: float = 10.0
) -> None:
    """Fail fast, with one clear line, before anything is sent."""
    try:
        metadata = producer.list_topics(topic=topic, timeout=timeout_s)
    except KafkaException as exc:
        raise ProducerError(
            f"cannot reach Kafka at {bootstrap_servers} ({exc.args[0].str()}); "
            "is the stack up? (diana-stack up)"
        ) from None
    described = metadata.topics.get(topic)
    if described is None or described.error is not None:
        raise ProducerError(
            f"topic {topic!r} does not exist on {bootstrap_servers} "
            "(diana-stack up creates it, or check infrastructure.kafka.topic)"
        )


def produce(
    producer: Producer, deliveries: Deliveries, topic: str, value: bytes, key: bytes | None
) -> None:
    """Queue one message, waiting for room when the local queue is full."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=deliveries.on_delivery)
            break
        except BufferError:
            producer.poll(0.05)
    deliveries.produced += 1


def flush(producer: Producer, deliveries: Deliveries, timeout_s: float = FLUSH_TIMEOUT_S) -> None:
    """Wait for every delivery report; what is still queued afterwards counts as failed."""
    remaining = producer.flush(timeout_s)
    if remaining:
        deliveries.failed["not delivered before the flush timeout"] += remaining
        log.error("%d messages were not delivered within %.0fs", remaining, timeout_s)
