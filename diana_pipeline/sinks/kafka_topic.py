"""Kafka sink: posterior records published to a topic (`output_topic` in experiments.yaml), as
the original design's `posteriors_out`, next to whichever sink `output_sink` names.

The topic is created when missing, log-compacted, and keyed by test/variant#window_start:
re-materialising a window publishes the same keys again, so after compaction a consumer that
reads the topic from the start sees one record per test, variant and window, the latest."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from diana_pipeline.producer import (
    Deliveries,
    ProducerError,
    check_topic,
    flush,
    make_producer,
    produce,
)
from diana_pipeline.sinks.records import Record, record_key, to_json
from diana_pipeline.windows import EVERY_WINDOW, WindowSpan

log = logging.getLogger(__name__)

TOPIC_PARTITIONS = 1  # few records, and one partition keeps them in the order written
TOPIC_TIMEOUT_S = 30.0


class PosteriorTopic:
    """The compacted posterior topic on one Kafka cluster."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.name = topic

    def ensure_topic(self) -> None:
        """Create the topic (compacted) when it is missing."""
        admin = AdminClient(
            {"bootstrap.servers": self.bootstrap_servers},
            logger=logging.getLogger("diana.librdkafka"),
        )
        try:
            metadata = admin.list_topics(timeout=10)
        except KafkaException as exc:
            raise ProducerError(
                f"cannot reach Kafka at {self.bootstrap_servers} ({exc.args[0].str()}); "
                "is the stack up?"
            ) from None
        if self.name in metadata.topics:
            return
        future = admin.create_topics(
            [NewTopic(self.name, TOPIC_PARTITIONS, 1, config={"cleanup.policy": "compact"})]
        )[self.name]
        try:
            future.result(timeout=TOPIC_TIMEOUT_S)
            log.info("created the compacted topic %s", self.name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise ProducerError(
                    f"cannot create topic {self.name!r}: {exc.args[0].str()}"
                ) from None

    def write(self, records: list[Record], span: WindowSpan = EVERY_WINDOW) -> int:
        """Send every record (JSON, key test/variant#window_start) to the topic, created when
        missing, and wait for each delivery; any failure raises ProducerError. Returns how many
        were delivered. Messages are keyed by window, so `span` needs nothing more."""
        self.ensure_topic()
        producer = make_producer(self.bootstrap_servers)
        check_topic(producer, self.bootstrap_servers, self.name)
        deliveries = Deliveries()
        for record in records:
            value, key = to_json(record).encode(), record_key(record).encode()
            produce(producer, deliveries, self.name, value, key)
        flush(producer, deliveries)
        if deliveries.failures:
            reasons = ", ".join(f"{n} {reason}" for reason, n in deliveries.failed.items())
            raise ProducerError(
                f"{deliveries.failures} posterior records not delivered to {self.name}: {reasons}"
            )
        return deliveries.delivered
