"""Rebuilding one window of the `events` asset from what Kafka still holds (a backfill, or
materialising a window from the UI): re-read the messages that may belong to the window and
store the ones missing, insert-or-ignore."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import TopicPartition

from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.counting import CountingRules
from diana_pipeline.events import EventColumns, EventValidator
from diana_pipeline.ingestion.kafka_client import (
    METADATA_TIMEOUT_S,
    KafkaEndpoint,
    make_consumer,
    produced_time,
    read_range,
    watermarks,
)
from diana_pipeline.ingestion.runs import OpenStore, settings_store
from diana_pipeline.store import OffsetRange, WriteCounts
from diana_pipeline.windows import aware_utc, naive_utc


@dataclass
class RebuildResult:
    counts: WriteCounts
    scanned: int
    oldest_held: datetime | None  # timestamp of the oldest message Kafka still holds
    complete: bool  # False when Kafka no longer holds the start of the window


def rebuild_window(
    config: ExperimentsConfig,
    window_start: datetime,
    window_end: datetime,
    *,
    kafka: KafkaEndpoint | None = None,
    open_store: OpenStore | None = None,
) -> RebuildResult:
    """Re-read from Kafka the messages that may belong to the window and store any of its
    events that are missing (insert-or-ignore: running it twice changes nothing). `kafka` and
    `open_store` as for ingest()."""
    kafka = kafka if kafka is not None else config.infrastructure.kafka
    open_store = open_store if open_store is not None else settings_store(config)
    validator = EventValidator(config)
    rules = CountingRules.of(config)
    skew, lateness = config.ingestion.max_clock_skew, config.ingestion.max_lateness
    scan_from = _epoch_ms(window_start - skew)
    scan_to = _epoch_ms(window_end + lateness)
    target = naive_utc(window_start)
    consumer = make_consumer(kafka, group=f"diana-rebuild-{uuid.uuid4().hex[:8]}")
    counts = WriteCounts()
    scanned = 0
    oldest: datetime | None = None
    complete = True
    try:
        marks = watermarks(consumer, kafka.topic)
        starts = consumer.offsets_for_times(
            [TopicPartition(kafka.topic, p, scan_from) for p in marks], timeout=METADATA_TIMEOUT_S
        )
        ends = consumer.offsets_for_times(
            [TopicPartition(kafka.topic, p, scan_to) for p in marks], timeout=METADATA_TIMEOUT_S
        )
        with (
            open_store() as store,
            store.partitions_held(kafka.topic, list(marks)),  # no parallel run meanwhile
            store.transaction(),
        ):
            for begin, finish in zip(starts, ends, strict=True):
                low, high = marks[begin.partition]
                first = begin.offset if begin.offset >= 0 else high
                last = finish.offset if finish.offset >= 0 else high
                if low > 0 or first < low:
                    # Retention has removed the start of the partition: is it before the window?
                    oldest_here = produced_time(consumer, kafka.topic, begin.partition, low)
                    if oldest_here is not None:
                        oldest = oldest_here if oldest is None else min(oldest, oldest_here)
                        if oldest_here > window_start - skew:
                            complete = False
                offset_range = OffsetRange(begin.partition, max(first, low), last)
                columns = EventColumns()
                rejected: list[tuple[int, int, bytes | None, str]] = []
                for messages in read_range(consumer, kafka.topic, offset_range, low):
                    scanned += len(messages)
                    values = [message.value() for message in messages]
                    offsets = [message.offset() for message in messages]
                    rejected.extend(
                        validator.validate_batch(values, begin.partition, offsets, columns)
                    )
                store.add_events(kafka.topic, columns, counts, only_window=target, rules=rules)
                store.add_rejected(kafka.topic, rejected, counts)
    finally:
        consumer.close()
    return RebuildResult(counts, scanned, oldest, complete)


def _epoch_ms(moment: datetime) -> int:
    return int(aware_utc(moment).timestamp() * 1000)
