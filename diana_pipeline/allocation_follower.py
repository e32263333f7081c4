"""Following a bandit's published allocations from the compacted Kafka topic, as an
assignment client would (the traffic generator's `--follow-allocation`): a background thread
reads every version as it is published, and `in_force(test, moment)` says which version
assigns a new user arriving at that moment (docs/bandit.md)."""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from diana_pipeline.allocations import AllocationVersion, in_force
from diana_pipeline.sinks.kafka_topic import allocation_consumer, keep_latest

log = logging.getLogger(__name__)

POLL_S = 1.0  # how long one read of the topic waits for news


class AllocationFollower:
    """Every version of the topic seen so far, per test; start() reads what is there first."""

    def __init__(self, bootstrap_servers: str, topic: str, poll_s: float = POLL_S) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.poll_s = poll_s
        self._versions: dict[str, list[AllocationVersion]] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._caught_up = threading.Event()
        self._thread = threading.Thread(
            target=self._follow, name="allocation-follower", daemon=True
        )

    def start(self, timeout_s: float = 30.0) -> None:
        """Start following, and wait until what the topic already holds has been read."""
        self._thread.start()
        if not self._caught_up.wait(timeout_s):
            log.warning("allocation topic %s not read to its end within %.0fs; following anyway",
                        self.topic, timeout_s)  # fmt: skip

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=10)

    def in_force(self, test_id: str, moment: datetime) -> AllocationVersion | None:
        """The test's version in force at `moment` (naive UTC), of those seen; None: none
        yet, so the configured split."""
        with self._lock:
            return in_force(self._versions.get(test_id, ()), moment)

    def latest(self) -> dict[str, AllocationVersion]:
        """Each test's highest version seen."""
        with self._lock:
            return {t: max(vs, key=lambda v: v.version) for t, vs in self._versions.items() if vs}

    def _add(self, value: bytes | None) -> None:
        latest: dict[str, AllocationVersion] = {}
        keep_latest(latest, value)
        with self._lock:
            for test_id, version in latest.items():
                known = self._versions.setdefault(test_id, [])
                if all(v.version != version.version for v in known):
                    known.append(version)

    def _follow(self) -> None:
        consumer = allocation_consumer(self.bootstrap_servers)
        try:
            ends = self._assign(consumer)
            while not self._stopped.is_set():
                if ends is None:  # the topic does not exist yet
                    self._caught_up.set()
                    self._stopped.wait(self.poll_s)
                    ends = self._assign(consumer)
                    continue
                message = consumer.poll(self.poll_s)
                if message is None:
                    self._caught_up.set()
                    continue
                if message.error():
                    continue
                self._add(message.value())
                if message.offset() + 1 >= ends.get(message.partition(), 0):
                    ends.pop(message.partition(), None)
                if not ends:
                    self._caught_up.set()
        except KafkaException as exc:
            log.error("stopped following %s: %s", self.topic, exc)
        finally:
            self._caught_up.set()
            consumer.close()

    def _assign(self, consumer: Consumer) -> dict[int, int] | None:
        """Read every partition of the topic from its start; their end offsets now (None
        when the topic does not exist)."""
        described = consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
        if described is None or described.error is not None or not described.partitions:
            return None
        partitions = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in described.partitions]
        ends = {}
        for partition in partitions:
            end = consumer.get_watermark_offsets(partition, timeout=10)[1]
            if end > 0:
                ends[partition.partition] = end
        consumer.assign(partitions)
        if not ends:
            self._caught_up.set()
        return ends


def read_published(bootstrap_servers: str, topic: str) -> dict[str, AllocationVersion]:
    """Each test's latest version on the topic now (nothing when there is no topic)."""
    follower = AllocationFollower(bootstrap_servers, topic)
    follower.start()
    try:
        return follower.latest()
    finally:
        follower.stop()
