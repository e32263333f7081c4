"""Publish posterior records to a Kafka topic (`output_topic` in experiments.yaml), as the
original design's `posteriors_out`.

The topic is created when missing, log-compacted, and keyed by test/variant#window_start:
re-materialising a window publishes the same keys again, so after compaction a consumer that
reads the topic from the start sees one record per test, variant and window, the latest."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from diana_pipeline.io_managers.records import Record, record_key, to_json
from diana_pipeline.producer import (
    Deliveries,
    ProducerError,
    check_topic,
    flush,
    make_producer,
    produce,
)

log = logging.getLogger(__name__)

TOPIC_PARTITIONS = 1  # few records, and one partition keeps them in the order written
TOPIC_TIMEOUT_S = 30.0


def ensure_output_topic(bootstrap_servers: str, topic: str) -> None:
    admin = AdminClient(
        {"bootstrap.servers": bootstrap_servers}, logger=logging.getLogger("diana.librdkafka")
    )
    try:
        metadata = admin.list_topics(timeout=10)
    except KafkaException as exc:
        raise ProducerError(
            f"cannot reach Kafka at {bootstrap_servers} ({exc.args[0].str()}); is the stack up?"
        ) from None
    if topic in metadata.topics:
        return
    future = admin.create_topics(
        [NewTopic(topic, TOPIC_PARTITIONS, 1, config={"cleanup.policy": "compact"})]
    )[topic]
    try:
        future.result(timeout=TOPIC_TIMEOUT_S)
        log.info("created the compacted topic %s", topic)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise ProducerError(f"cannot create topic {topic!r}: {exc.args[0].str()}") from None


def publish_posteriors(bootstrap_servers: str, topic: str, records: list[Record]) -> int:
    """Send every record (JSON, key test/variant#window_start) and wait for each delivery;
    any failure raises ProducerError. Returns how many were delivered."""
    ensure_output_topic(bootstrap_servers, topic)
    producer = make_producer(bootstrap_servers)
    check_topic(producer, bootstrap_servers, topic)
    deliveries = Deliveries()
    for record in records:
        produce(producer, deliveries, topic, to_json(record).encode(), record_key(record).encode())
    flush(producer, deliveries)
    if deliveries.failures:
        reasons = ", ".join(f"{n} {reason}" for reason, n in deliveries.failed.items())
        raise ProducerError(
            f"{deliveries.failures} posterior records not delivered to {topic}: {reasons}"
        )
    return deliveries.delivered
