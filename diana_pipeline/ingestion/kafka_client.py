"""The ingestion's Kafka client: a consumer that commits nothing by itself, the watermarks the
sensor plans with, reading an offset range, when messages were produced, and moving the
consumer group forward once the data is stored."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Protocol

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from diana_pipeline.store import OffsetRange

log = logging.getLogger(__name__)

CONSUME_BATCH = 10_000
STALL_TIMEOUT_S = 60.0
METADATA_TIMEOUT_S = 10.0


class KafkaUnavailableError(RuntimeError):
    """Kafka cannot be reached, or the topic does not exist; the message says which."""


class KafkaEndpoint(Protocol):
    """The brokers, events topic and consumer group: the `kafka` resource in Dagster, or
    experiments.yaml's `infrastructure.kafka` outside it (benchmarks, scenarios, tests)."""

    bootstrap_servers: str
    topic: str
    consumer_group: str


def make_consumer(kafka: KafkaEndpoint, group: str | None = None) -> Consumer:
    """A consumer of the endpoint's group (or `group`) that stores and commits no offsets by
    itself: runs assign() their ranges and commit after storing."""
    return Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": group or kafka.consumer_group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # A run reads one partition at a time: a few MB in flight keep it fed, and keep
            # its memory flat (librdkafka's defaults prefetch up to 64 MB per partition).
            "fetch.max.bytes": 8 * 1024 * 1024,
            "max.partition.fetch.bytes": 2 * 1024 * 1024,
            "queued.max.messages.kbytes": 8 * 1024,
            # With so small a queue it is often full, and librdkafka then postpones the next
            # fetch by fetch.queue.backoff.ms (1 s by default): the reader starved, at half
            # the rate. 10 ms keeps the queue fed at the same memory.
            "fetch.queue.backoff.ms": 10,
            # A range ends at a known offset, where the fetcher asks for more; the broker
            # holds that request up to fetch.wait.max.ms (500 ms by default), and the next
            # range's partition waits behind it: half a second per range in every run.
            "fetch.wait.max.ms": 10,
            "socket.connection.setup.timeout.ms": 5000,
        },
        logger=logging.getLogger("diana.librdkafka"),
    )


def watermarks(consumer: Consumer, topic: str) -> dict[int, tuple[int, int]]:
    """Low and high watermark of every partition of the topic (the only broker reads the
    sensor makes)."""
    try:
        metadata = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S)
    except KafkaException as exc:
        raise KafkaUnavailableError(f"Kafka is unreachable: {exc.args[0].str()}") from None
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        raise KafkaUnavailableError(
            f"topic {topic!r} does not exist (diana-stack up creates it; "
            "check infrastructure.kafka.topic)"
        )
    result = {}
    for partition in sorted(described.partitions):
        try:
            result[partition] = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=METADATA_TIMEOUT_S
            )
        except KafkaException as exc:
            raise KafkaUnavailableError(f"Kafka is unreachable: {exc.args[0].str()}") from None
    return result


def consumer_lag(consumer: Consumer, topic: str) -> dict[int, int]:
    """Per partition, the messages past the consumer group's committed offset (ingestion
    commits once the data is stored; a partition it never committed lags by all it holds)."""
    marks = watermarks(consumer, topic)
    try:
        committed = consumer.committed(
            [TopicPartition(topic, p) for p in marks], timeout=METADATA_TIMEOUT_S
        )
    except KafkaException as exc:
        raise KafkaUnavailableError(f"Kafka is unreachable: {exc.args[0].str()}") from None
    lag = {}
    for position in committed:
        low, high = marks[position.partition]
        lag[position.partition] = high - max(low, position.offset)
    return lag


def read_range(
    consumer: Consumer, topic: str, offset_range: OffsetRange, low_watermark: int
) -> Iterator[list[Message]]:
    """Every message in the range that Kafka still holds, in order, a consumed batch at a
    time."""
    start = max(offset_range.start, low_watermark)
    if start >= offset_range.end:
        return
    consumer.assign([TopicPartition(topic, offset_range.partition, start)])
    next_offset = start
    last_progress = time.monotonic()
    try:
        while next_offset < offset_range.end:
            # consume() waits out its timeout for a batch it cannot fill: ask for no more
            # than the range still holds.
            wanted = min(CONSUME_BATCH, offset_range.end - next_offset)
            messages = consumer.consume(num_messages=wanted, timeout=0.1)
            if not messages:
                if time.monotonic() - last_progress > STALL_TIMEOUT_S:
                    raise KafkaUnavailableError(
                        f"no messages from {topic}[{offset_range}] for {STALL_TIMEOUT_S:.0f}s "
                        f"(stuck at offset {next_offset})"
                    )
                continue
            last_progress = time.monotonic()
            batch = []
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaUnavailableError(f"reading {topic}[{offset_range}]: {error.str()}")
                offset = message.offset()
                if offset >= offset_range.end:
                    next_offset = offset_range.end
                    break
                next_offset = offset + 1
                batch.append(message)
            if batch:
                yield batch
    finally:
        consumer.unassign()


def commit_offsets(consumer: Consumer, topic: str, ranges: list[OffsetRange]) -> None:
    """Move the consumer group forward (for lag tools) after the data is stored; never back."""
    ends: dict[int, int] = {}
    for offset_range in ranges:
        ends[offset_range.partition] = max(ends.get(offset_range.partition, 0), offset_range.end)
    if not ends:
        return
    # Best effort: the data is already stored and the ledger is the truth; a coordinator
    # that is still loading must not fail the run.
    try:
        committed = consumer.committed(
            [TopicPartition(topic, p) for p in ends], timeout=METADATA_TIMEOUT_S
        )
        forward = [
            TopicPartition(topic, tp.partition, ends[tp.partition])
            for tp in committed
            if ends[tp.partition] > tp.offset
        ]
        if forward:
            consumer.commit(offsets=forward, asynchronous=False)
    except KafkaException as exc:
        log.warning("could not commit consumer offsets (lag tools only): %s", exc.args[0].str())


def produced_times(
    consumer: Consumer, topic: str, positions: dict[int, int], timeout_s: float = METADATA_TIMEOUT_S
) -> dict[int, datetime]:
    """Per partition, when the message at the offset (or the first one Kafka holds after
    it) was produced: its Kafka timestamp. Partitions without one in time are left out."""
    found: dict[int, datetime] = {}
    done: set[int] = set()
    consumer.assign([TopicPartition(topic, p, o) for p, o in positions.items()])
    deadline = time.monotonic() + timeout_s
    try:
        while len(done) < len(positions) and time.monotonic() < deadline:
            # One message per partition will do; consume() waits out its timeout for more.
            wanted = len(positions) - len(done)
            for message in consumer.consume(num_messages=wanted, timeout=0.2):
                partition = message.partition()
                if message.error() is not None or partition in done:
                    continue
                if message.offset() >= positions[partition]:
                    done.add(partition)
                    kind, epoch_ms = message.timestamp()
                    if kind != TIMESTAMP_NOT_AVAILABLE:
                        found[partition] = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    finally:
        consumer.unassign()
    return found


def produced_span(
    consumer: Consumer, topic: str, ranges: list[OffsetRange]
) -> tuple[datetime, datetime] | None:
    """When the first and the last messages of the ranges (one per partition) were produced."""
    firsts = produced_times(consumer, topic, {r.partition: r.start for r in ranges})
    lasts = produced_times(consumer, topic, {r.partition: r.end - 1 for r in ranges})
    times = [*firsts.values(), *lasts.values()]
    return (min(times), max(times)) if times else None


def produced_time(consumer: Consumer, topic: str, partition: int, offset: int) -> datetime | None:
    """When the message at the offset (or the first one after it) was produced, if known."""
    return produced_times(consumer, topic, {partition: offset}).get(partition)
