"""Kafka → DuckDB, exactly once: the ingestion run that the Kafka sensor requests, which the
`events` asset performs.

An ingestion run owns a set of offset ranges. It reads exactly those offsets (assign(),
never a subscription) that the ledger does not cover yet, validates every message and stores
them a chunk at a time: each chunk's events, rejections and its ledger row (the chunk's
offsets) go in one DuckDB transaction. The chunks' events are merged into the counting state
(counting/state.py) by the fold (counting/fold.py), every few chunks and at the run's end, each
fold in one transaction with its record of the ranges it counted; parallel runs leave the
fold to the store's writer. A run killed mid-range leaves whole chunks behind,
and its retry reads only the offsets that no chunk covers. Chunks keep a run's memory flat
however large its range. Only after storing does it commit the consumer group's offsets,
which exist for lag tools only: the sensor's cursor and the ledger are what make ingestion
exactly once.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Protocol

import duckdb
from confluent_kafka import Consumer

from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.counting import CountingRules
from diana_pipeline.counting import state as counting_state
from diana_pipeline.events import EventColumns, EventValidator
from diana_pipeline.ingestion.kafka_client import (
    KafkaEndpoint,
    commit_offsets,
    make_consumer,
    read_range,
    watermarks,
)
from diana_pipeline.store import EventStore, OffsetRange, WriteCounts

log = logging.getLogger(__name__)

CHUNK = 50_000  # messages stored per transaction (with their ledger row)
# Chunks a run stores between two folds of the counting state. A fold finds its returning
# users by a scan of every stored user's key, whatever the size of the batch, so one fold per
# few chunks pays that scan once for all of them; a fold beside the writer holds memory
# under the run's limit too, so not too many (docs/benchmarks.md, "Ingest with the counting
# state").
FOLD_EVERY = 4
# DuckDB otherwise caches up to 80% of RAM; a run's writes need a chunk and one window's keys
# (more spills to disk), and a run's memory stays flat however long the table grows. With a
# fold beside the writer the run filled 128 MB and its peak RSS passed 500 MB (the ingest
# benchmark's bound); at 112 MB it stays below.
INGEST_MEMORY_LIMIT = "112MB"
# Larger than a run's write-ahead log grows between two folds (26-41 MB at 8M events).
_NO_AUTOMATIC_CHECKPOINT = "1GB"
# Python's cycle collector makes a pass every 700 new container objects by default. A
# consumed batch is 10,000 Message objects: some fifteen passes per batch, each moving the
# batch still in hand to the older generations, whose passes cost more. At 50,000 a run makes
# a few per chunk: 1M events into DuckLake, 115k → 152k events/s, in alternation
# (docs/scale.md, "Python's cycle collector"). The loop makes few reference cycles; they are
# still collected.
COLLECT_EVERY = 50_000


class OpenStore(Protocol):
    """Opens the event store for writing, at `memory_limit` or the opener's own default:
    EventStoreResource.open in Dagster, settings_store(config) outside it."""

    def __call__(
        self, memory_limit: str | None = None, appends_only: bool = False
    ) -> AbstractContextManager[EventStore]: ...


def settings_store(config: ExperimentsConfig) -> OpenStore:
    """The store of experiments.yaml's `infrastructure.duckdb.path`, for callers outside
    Dagster (benchmarks, scenarios, tests)."""

    def open_store(
        memory_limit: str | None = None, appends_only: bool = False
    ) -> AbstractContextManager[EventStore]:
        return EventStore.open(
            config.infrastructure.store_location, memory_limit=memory_limit,
            hold_writer_lock=not appends_only,
        )  # fmt: skip

    return open_store


@dataclass
class IngestResult:
    """What a run stored, for the materialisation metadata."""

    counts: WriteCounts = field(default_factory=WriteCounts)
    ranges: list[OffsetRange] = field(default_factory=list)  # newly ingested
    skipped: list[OffsetRange] = field(default_factory=list)  # already in the ledger
    lost: int = 0
    lag: dict[int, int] = field(default_factory=dict)  # per partition, after the run
    seconds: float = 0.0
    newest_event_us: int | None = None  # the latest event time among the valid events read


class _Fold:
    """A single-writer run's folds of the chunks it stored into the counting state: every
    FOLD_EVERY chunks and at its end. On the DuckDB file a fold runs on a thread of its own,
    in a transaction of its own beside the next chunks' (they write other tables), so that
    storing and counting share the cores; the writer starts a fold once the previous one is
    done and it checkpointed the file. On DuckLake the writer folds between chunks."""

    def __init__(self, store: EventStore, rules: CountingRules) -> None:
        self.store = store
        self.rules = rules
        self.chunks = 0
        self.connection = store.beside()
        self.thread = None
        if self.connection is not None:
            self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="counting-fold")
            # DuckDB checkpoints its write-ahead log at a commit past 16 MiB of it, and a
            # checkpoint that runs out of memory invalidates the database: with a fold beside
            # it under the run's memory limit, it did. The writer checkpoints between folds
            # instead, with nothing beside it (docs/benchmarks.md, "Ingest with the counting
            # state").
            store.connection.execute(f"SET checkpoint_threshold = '{_NO_AUTOMATIC_CHECKPOINT}'")
        self.running: Future[None] | None = None

    def stored(self) -> None:
        """Called by the writer after each chunk it stored."""
        self.chunks += 1
        if self.chunks < FOLD_EVERY:
            return
        if self.thread is None:
            counting_state.fold_if_current(self.store.connection, self.rules)
        else:
            self.wait()
            self.store.connection.execute("CHECKPOINT")
            self.running = self.thread.submit(self._fold_beside)
        self.chunks = 0

    def _fold_beside(self) -> None:
        try:
            counting_state.fold_if_current(self.connection, self.rules, one_thread=False)
        except duckdb.FatalException:  # the database is invalidated: the run's error
            raise
        except duckdb.Error:  # rolled back: its chunks await the next fold
            log.warning("counting fold left to the next one", exc_info=True)

    def wait(self) -> bool:
        """Waits for the fold running beside the writer, if any; whether there was one."""
        running, self.running = self.running, None
        if running is None:
            return False
        running.result()
        return True

    def close(self) -> None:
        """Once any fold beside the writer is over (its error, if any, raised by `wait`)."""
        if self.running is not None:
            futures_wait([self.running])
        if self.thread is not None:
            self.thread.shutdown()
            self.connection.close()
            with suppress(duckdb.Error):  # the connection's error is the one raised already
                self.store.connection.execute("RESET checkpoint_threshold")


@contextmanager
def _folding(store: EventStore, rules: CountingRules, parallel: bool) -> Iterator[_Fold | None]:
    """The run's folds, the last one of all its chunks still waiting once it stored them
    all; parallel runs leave the fold to the store's writer (counting/fold.py)."""
    if parallel:
        yield None
        return
    folds = _Fold(store, rules)
    try:
        yield folds
        folds.wait()
        counting_state.fold_if_current(store.connection, rules)
    finally:
        folds.close()


@contextmanager
def _collector_paced() -> Iterator[None]:
    """Python's cycle collector paced at COLLECT_EVERY, at its own pace again after."""
    thresholds = gc.get_threshold()
    gc.set_threshold(COLLECT_EVERY, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


def ingest(
    config: ExperimentsConfig,
    ranges: list[OffsetRange],
    run_id: str | None = None,
    *,
    kafka: KafkaEndpoint | None = None,
    open_store: OpenStore | None = None,
) -> IngestResult:
    """Store every range not yet in the ledger, each in one transaction with its ledger row.
    Reads from `kafka` into `open_store`'s store (the run's resources); without them, from
    and into what experiments.yaml's `infrastructure` says."""
    started = time.monotonic()
    kafka = kafka if kafka is not None else config.infrastructure.kafka
    open_store = open_store if open_store is not None else settings_store(config)
    topic = kafka.topic
    validator = EventValidator(config)
    rules = CountingRules.of(config)
    result = IngestResult()
    # Parallel runs append side by side and leave the counting to the fold (counting/fold.py).
    parallel = config.ingestion.parallel_runs > 1
    consumer = make_consumer(kafka)
    try:
        marks = watermarks(consumer, topic)
        with (
            _collector_paced(),
            open_store(memory_limit=INGEST_MEMORY_LIMIT, appends_only=parallel) as store,
            store.partitions_held(topic, [r.partition for r in ranges]),
        ):
            with _folding(store, rules, parallel) as folding:
                for offset_range in ranges:
                    missing = store.uncovered(topic, offset_range)
                    if not missing:
                        result.skipped.append(offset_range)
                        continue
                    low = marks.get(offset_range.partition, (0, 0))[0]
                    for gap in missing:
                        _store_range(
                            store, consumer, topic, gap, low, validator, folding, run_id, result
                        )
                    result.ranges.append(offset_range)
            stored_up_to = store.ingested_end(topic)
        commit_offsets(consumer, topic, ranges)
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
    folding: _Fold | None,
    run_id: str | None,
    result: IngestResult,
) -> None:
    """Read, validate and store the range, one transaction per chunk of about CHUNK
    messages; each chunk's ledger row covers its offsets, the last one up to the range's
    end (offsets that Kafka no longer holds are counted as lost). Each chunk's events are
    left for the counting fold, which `folding` runs every few chunks (none: another
    writer's).

    A writer thread stores one chunk while this thread reads and validates the next (DuckDB
    works without the GIL); at most one chunk waits, so memory stays at two chunks."""
    partition = offset_range.partition
    validate_batch = validator.validate_batch
    chunk_start = offset_range.start
    columns = EventColumns()
    rejected: list[tuple[int, int, bytes | None, str]] = []

    def store_chunk(
        chunk: OffsetRange,
        columns: EventColumns,
        rejected: list[tuple[int, int, bytes | None, str]],
    ) -> None:
        lost = chunk.size - len(columns) - len(rejected)

        def store_together() -> WriteCounts:
            counts = WriteCounts()
            store.add_events(topic, columns, counts, range_start=chunk.start)
            store.add_rejected(topic, rejected, counts)
            store.record_range(topic, chunk, run_id, counts, lost, counted=False)
            return counts

        try:
            counts = store.retried(store_together)
        except duckdb.FatalException:
            raise
        except duckdb.Error:
            # A fold beside it may have held the memory it needed: once more without one.
            if folding is None or not folding.wait():
                raise
            counts = store.retried(store_together)
        if folding is not None:
            folding.stored()
        _merge(result.counts, counts)
        result.lost += lost
        if lost:
            log.warning("%s[%s]: %d offsets no longer in Kafka", topic, chunk, lost)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="duckdb-writer") as writer:
        writing: Future[None] | None = None

        def hand_over(chunk_end: int) -> None:
            nonlocal writing
            if len(columns):
                newest = max(columns.event_us)
                if result.newest_event_us is None or newest > result.newest_event_us:
                    result.newest_event_us = newest
            if writing is not None:
                writing.result()  # the previous chunk is stored (or its error raised here)
            chunk = OffsetRange(partition, chunk_start, chunk_end)
            writing = writer.submit(store_chunk, chunk, columns, rejected)

        for messages in read_range(consumer, topic, offset_range, low_watermark):
            values = [message.value() for message in messages]
            offsets = [message.offset() for message in messages]
            rejected.extend(validate_batch(values, partition, offsets, columns))
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
    total.rejected_by_kind.update(part.rejected_by_kind)
