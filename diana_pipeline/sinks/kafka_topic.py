"""Kafka sinks, topics created when missing (compacted, but for the metrics):

- `PosteriorTopic`: posterior records (`output_topic` in experiments.yaml), as the original
  design's `posteriors_out`, next to whichever sink `output_sink` names. Keyed by
  test/variant#window_start: re-materialising a window publishes the same keys again, so after
  compaction a consumer that reads the topic from the start sees one record per test, variant
  and window, the latest.
- `AllocationTopic`: a bandit's published allocations (`allocation_topic`), keyed by test_id,
  so the topic keeps each test's latest version (allocation_follower.py reads it).
- `MetricsTopic`: one record per ingestion run and statistics refresh (`metrics_topic`,
  run_metrics.py), keyed by run id; a stream kept for Kafka's retention, not compacted."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from diana_pipeline.allocations import AllocationError, AllocationVersion
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


class OutputTopic:
    """A topic on one Kafka cluster, written key by key; compacted unless a subclass says
    otherwise."""

    cleanup_policy = "compact"

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.name = topic

    def ensure_topic(self) -> None:
        """Create the topic (with its cleanup policy) when it is missing."""
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
            [
                NewTopic(
                    self.name, TOPIC_PARTITIONS, 1, config={"cleanup.policy": self.cleanup_policy}
                )
            ]
        )[self.name]
        try:
            future.result(timeout=TOPIC_TIMEOUT_S)
            log.info("created the topic %s (%s)", self.name, self.cleanup_policy)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise ProducerError(
                    f"cannot create topic {self.name!r}: {exc.args[0].str()}"
                ) from None
        # Created is not yet visible everywhere: wait until its partition has a leader, or a
        # producer asking right away is told that the topic does not exist.
        deadline = time.monotonic() + TOPIC_TIMEOUT_S
        while time.monotonic() < deadline:
            described = admin.list_topics(self.name, timeout=10).topics.get(self.name)
            if (
                described is not None
                and described.error is None
                and all(p.leader >= 0 for p in described.partitions.values())
            ):
                return
            time.sleep(0.05)
        raise ProducerError(f"topic {self.name!r} was created but never became visible")

    def send(self, messages: Iterable[tuple[str, str]], what: str) -> int:
        """Send (key, value) messages to the topic, created when missing, and wait for each
        delivery; any failure raises ProducerError naming `what` was sent. Returns how many
        were delivered."""
        self.ensure_topic()
        producer = make_producer(self.bootstrap_servers)
        check_topic(producer, self.bootstrap_servers, self.name)
        deliveries = Deliveries()
        for key, value in messages:
            produce(producer, deliveries, self.name, value.encode(), key.encode())
        flush(producer, deliveries)
        if deliveries.failures:
            reasons = ", ".join(f"{n} {reason}" for reason, n in deliveries.failed.items())
            raise ProducerError(
                f"{deliveries.failures} {what} not delivered to {self.name}: {reasons}"
            )
        return deliveries.delivered


class PosteriorTopic(OutputTopic):
    """The compacted posterior topic."""

    def write(self, records: list[Record], span: WindowSpan = EVERY_WINDOW) -> int:
        """Send every record (JSON, key test/variant#window_start). Messages are keyed by
        window, so `span` needs nothing more."""
        messages = ((record_key(record), to_json(record)) for record in records)
        return self.send(messages, "posterior records")


class AllocationTopic(OutputTopic):
    """The compacted topic of published allocations."""

    def write(self, versions: list[AllocationVersion]) -> int:
        return self.send(((v.test_id, v.to_json()) for v in versions), "allocations")


class MetricsTopic(OutputTopic):
    """The pipeline's metrics: one JSON record per run, keyed by its run id."""

    cleanup_policy = "delete"

    def write(self, records: list[dict[str, object]]) -> int:
        messages = ((str(r["run_id"]), json.dumps(r, sort_keys=True)) for r in records)
        return self.send(messages, "metrics records")


def allocation_consumer(bootstrap_servers: str) -> Consumer:
    """A consumer that reads an allocation topic from its start, in no consumer group's
    name (it commits nothing)."""
    return Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": "diana-allocation-readers",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        },
        logger=logging.getLogger("diana.librdkafka"),
    )


def keep_latest(latest: dict[str, AllocationVersion], value: bytes | None) -> None:
    """Fold one message of an allocation topic into `latest` (test → highest version);
    a message that is not an allocation is logged and skipped."""
    if value is None:
        return
    try:
        version = AllocationVersion.from_json(value)
    except AllocationError as exc:
        log.warning("skipping a message on the allocation topic: %s", exc)
        return
    known = latest.get(version.test_id)
    if known is None or version.version > known.version:
        latest[version.test_id] = version
