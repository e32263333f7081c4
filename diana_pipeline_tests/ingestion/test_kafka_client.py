"""How the Kafka reads ask for messages (pure: a fake consumer that serves a list of
messages and records what it was asked for; the real broker's reads are in test_runs.py).

consume() waits out its whole timeout for a batch it cannot fill, so a read that asks for
more than is left pays the timeout on every small range (issue 24's freshness profile)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import TIMESTAMP_CREATE_TIME

from diana_pipeline.ingestion import kafka_client
from diana_pipeline.store import OffsetRange


@dataclass
class FakeMessage:
    _partition: int
    _offset: int

    def error(self) -> None:
        return None

    def offset(self) -> int:
        return self._offset

    def partition(self) -> int:
        return self._partition

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, 1_700_000_000_000 + self._offset


@dataclass
class FakeConsumer:
    """Serves the assigned partitions' messages from their start offsets, a message from each
    in turn (as a broker's fetches interleave them); records every consume() request's size."""

    high: dict[int, int]
    asked: list[int] = field(default_factory=list)
    positions: dict[int, int] = field(default_factory=dict)

    def assign(self, partitions: list) -> None:
        self.positions = {tp.partition: tp.offset for tp in partitions}

    def unassign(self) -> None:
        self.positions = {}

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        self.asked.append(num_messages)
        served: list[FakeMessage] = []
        while len(served) < num_messages:
            left = [p for p in sorted(self.positions) if self.positions[p] < self.high[p]]
            if not left:
                break
            for partition in left[: num_messages - len(served)]:
                served.append(FakeMessage(partition, self.positions[partition]))
                self.positions[partition] += 1
        return served


def test_a_range_asks_for_no_more_than_it_holds(monkeypatch) -> None:
    monkeypatch.setattr(kafka_client, "CONSUME_BATCH", 100)
    consumer = FakeConsumer(high={0: 1000})
    batches = list(kafka_client.read_range(consumer, "t", OffsetRange(0, 10, 343), 0))
    assert [m.offset() for b in batches for m in b] == list(range(10, 343))
    assert consumer.asked == [100, 100, 100, 33]


def test_the_produced_span_asks_for_one_message_per_partition_left() -> None:
    consumer = FakeConsumer(high={0: 50, 1: 50, 2: 50})
    ranges = [OffsetRange(p, 5, 40) for p in range(3)]
    first, last = kafka_client.produced_span(consumer, "t", ranges)
    assert first == datetime.fromtimestamp((1_700_000_000_000 + 5) / 1000, UTC)
    assert last == datetime.fromtimestamp((1_700_000_000_000 + 39) / 1000, UTC)
    # One message for each partition: the first offsets, then the last ones.
    assert consumer.asked == [3, 3]
