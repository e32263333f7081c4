"""Kafka → DuckDB, exactly once: the engine behind the sensor's runs and the `events` asset.

An ingestion run owns a set of offset ranges. It reads exactly those offsets (assign(),
never a subscription) that the ledger does not cover yet, validates every message and stores
them a chunk at a time: each chunk's events, rejections and its ledger row (the chunk's
offsets) go in one DuckDB transaction. A run killed mid-range leaves whole chunks behind,
and its retry reads only the offsets that no chunk covers. Chunks keep a run's memory flat
however large its range. Only after storing does it commit the consumer group's offsets,
which exist for lag tools only: the sensor's cursor and the ledger are what make ingestion
exactly once.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.events import EventColumns, EventValidator
from diana_pipeline.store import EventStore, OffsetRange, WriteCounts

log = logging.getLogger(__name__)

CONSUME_BATCH = 10_000
CHUNK = 50_000  # messages stored per transaction (with their ledger row)
# DuckDB otherwise caches up to 80% of RAM; a run's writes need a chunk and one window's keys
# (more spills to disk), and a run's memory stays flat however long the table grows.
INGEST_MEMORY_LIMIT = "128MB"
STALL_TIMEOUT_S = 60.0
METADATA_TIMEOUT_S = 10.0


class KafkaUnavailableError(RuntimeError):
    """Kafka cannot be reached, or the topic does not exist; the message says which."""


@dataclass
class IngestResult:
    """What a run stored, for the materialisation metadata."""

    counts: WriteCounts = field(default_factory=WriteCounts)
    ranges: list[OffsetRange] = field(default_factory=list)  # newly ingested
    skipped: list[OffsetRange] = field(default_factory=list)  # already in the ledger
    lost: int = 0
    lag: dict[int, int] = field(default_factory=dict)  # per partition, after the run
    seconds: float = 0.0


def make_consumer(config: ExperimentsConfig, group: str | None = None) -> Consumer:
    kafka = config.infrastructure.kafka
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
            messages = consumer.consume(num_messages=CONSUME_BATCH, timeout=0.1)
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


def ingest(
    config: ExperimentsConfig, ranges: list[OffsetRange], run_id: str | None = None
) -> IngestResult:
    """Store every range not yet in the ledger, each in one transaction with its ledger row."""
    started = time.monotonic()
    topic = config.infrastructure.kafka.topic
    validator = EventValidator(config)
    result = IngestResult()
    consumer = make_consumer(config)
    try:
        marks = watermarks(consumer, topic)
        with EventStore.open(
            config.infrastructure.duckdb.path, memory_limit=INGEST_MEMORY_LIMIT
        ) as store:
            for offset_range in ranges:
                missing = store.uncovered(topic, offset_range)
                if not missing:
                    result.skipped.append(offset_range)
                    continue
                low = marks.get(offset_range.partition, (0, 0))[0]
                for gap in missing:
                    _store_range(store, consumer, topic, gap, low, validator, run_id, result)
                result.ranges.append(offset_range)
            stored_up_to = store.ingested_end(topic)
        _commit_offsets(consumer, topic, ranges)
        for partition, (low, high) in watermarks(consumer, topic).items():
            result.lag[partition] = max(0, high - max(low, stored_up_to.get(partition, 0)))
    finally:
        consumer.close()
    result.seconds = time.monotonic() - started
    return result


def _store_range(
    store: EventStore,
    consumer: Consumer,
    topic: str,
    offset_range: OffsetRange,
    low_watermark: int,
    validator: EventValidator,
    run_id: str | None,
    result: IngestResult,
) -> None:
    """Read, validate and store the range, one transaction per chunk of about CHUNK
    messages; each chunk's ledger row covers its offsets, the last one up to the range's
    end (offsets that Kafka no longer holds are counted as lost).

    A writer thread stores one chunk while this thread reads and validates the next (DuckDB
    works without the GIL); at most one chunk waits, so memory stays at two chunks."""
    partition = offset_range.partition
    validate_into = validator.validate_into
    chunk_start = offset_range.start
    columns = EventColumns()
    rejected: list[tuple[int, int, bytes | None, str]] = []

    def store_chunk(
        chunk: OffsetRange,
        columns: EventColumns,
        rejected: list[tuple[int, int, bytes | None, str]],
    ) -> None:
        counts = WriteCounts()
        lost = chunk.size - len(columns) - len(rejected)
        with store.transaction():
            store.add_events(topic, columns, counts)
            store.add_rejected(topic, rejected, counts)
            store.record_range(topic, chunk, run_id, counts, lost)
        _merge(result.counts, counts)
        result.lost += lost
        if lost:
            log.warning("%s[%s]: %d offsets no longer in Kafka", topic, chunk, lost)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="duckdb-writer") as writer:
        writing: Future[None] | None = None

        def hand_over(chunk_end: int) -> None:
            nonlocal writing
            if writing is not None:
                writing.result()  # the previous chunk is stored (or its error raised here)
            chunk = OffsetRange(partition, chunk_start, chunk_end)
            writing = writer.submit(store_chunk, chunk, columns, rejected)

        for messages in read_range(consumer, topic, offset_range, low_watermark):
            for message in messages:
                value, offset = message.value(), message.offset()
                reason = validate_into(value, partition, offset, columns)
                if reason is not None:
                    rejected.append((partition, offset, value, reason))
            if len(columns) + len(rejected) >= CHUNK:
                chunk_end = messages[-1].offset() + 1
                hand_over(chunk_end)
                chunk_start, columns, rejected = chunk_end, EventColumns(), []
        if chunk_start < offset_range.end:
            hand_over(offset_range.end)
        if writing is not None:
            writing.result()


def _merge(total: WriteCounts, part: WriteCounts) -> None:
    total.events_by_window.update(part.events_by_window)
    total.duplicates += part.duplicates
    total.rejected += part.rejected


def _commit_offsets(consumer: Consumer, topic: str, ranges: list[OffsetRange]) -> None:
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


# ---- planning (the sensor) ---------------------------------------------------------------------


def plan_runs(
    marks: dict[int, tuple[int, int]], cursor: dict[int, int], max_batch: int, max_runs: int
) -> tuple[list[list[OffsetRange]], dict[int, int]]:
    """Split the offsets between the cursor and the end of each partition into runs of at
    most `max_batch` messages. Returns the runs and the cursor after them. A partition the
    cursor has never seen starts at its low watermark (everything Kafka still holds)."""
    position = {p: cursor.get(p, low) for p, (low, _) in marks.items()}
    runs: list[list[OffsetRange]] = []
    current: list[OffsetRange] = []
    room = max_batch
    for partition, (_, high) in sorted(marks.items()):
        while position[partition] < high:
            if len(runs) == max_runs:
                return runs, {**cursor, **position}
            take = min(high - position[partition], room)
            current.append(OffsetRange(partition, position[partition], position[partition] + take))
            position[partition] += take
            room -= take
            if room == 0:
                runs.append(current)
                current, room = [], max_batch
    if current and len(runs) < max_runs:
        runs.append(current)
    return runs, {**cursor, **position}


def run_key(topic: str, ranges: list[OffsetRange]) -> str:
    return f"{topic}/" + ",".join(str(r) for r in ranges)


# ---- rebuilding one window (the events asset) ---------------------------------------------------


@dataclass
class RebuildResult:
    counts: WriteCounts
    scanned: int
    oldest_held: datetime | None  # timestamp of the oldest message Kafka still holds
    complete: bool  # False when Kafka no longer holds the start of the window


def rebuild_window(
    config: ExperimentsConfig, window_start: datetime, window_end: datetime
) -> RebuildResult:
    """Re-read from Kafka the messages that may belong to the window and store any of its
    events that are missing (insert-or-ignore: running it twice changes nothing)."""
    kafka = config.infrastructure.kafka
    validator = EventValidator(config)
    skew, lateness = config.ingestion.max_clock_skew, config.ingestion.max_lateness
    scan_from = _epoch_ms(window_start - skew)
    scan_to = _epoch_ms(window_end + lateness)
    target = window_start.replace(tzinfo=None)
    consumer = make_consumer(config, group=f"diana-rebuild-{uuid.uuid4().hex[:8]}")
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
        with EventStore.open(config.infrastructure.duckdb.path) as store, store.transaction():
            for begin, finish in zip(starts, ends, strict=True):
                low, high = marks[begin.partition]
                first = begin.offset if begin.offset >= 0 else high
                last = finish.offset if finish.offset >= 0 else high
                if low > 0 or first < low:
                    # Retention has removed the start of the partition: is it before the window?
                    oldest_here = _message_time(consumer, kafka.topic, begin.partition, low)
                    if oldest_here is not None:
                        oldest = oldest_here if oldest is None else min(oldest, oldest_here)
                        if oldest_here > window_start - skew:
                            complete = False
                offset_range = OffsetRange(begin.partition, max(first, low), last)
                columns = EventColumns()
                rejected: list[tuple[int, int, bytes | None, str]] = []
                for messages in read_range(consumer, kafka.topic, offset_range, low):
                    scanned += len(messages)
                    for message in messages:
                        value, offset = message.value(), message.offset()
                        reason = validator.validate_into(value, begin.partition, offset, columns)
                        if reason is not None:
                            rejected.append((begin.partition, offset, value, reason))
                store.add_events(kafka.topic, columns, counts, only_window=target)
                store.add_rejected(kafka.topic, rejected, counts)
    finally:
        consumer.close()
    return RebuildResult(counts, scanned, oldest, complete)


def _epoch_ms(moment: datetime) -> int:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return int(aware.timestamp() * 1000)


def _message_time(consumer: Consumer, topic: str, partition: int, offset: int) -> datetime | None:
    return produced_times(consumer, topic, {partition: offset}).get(partition)


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
            for message in consumer.consume(num_messages=100, timeout=0.2):
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
