"""Web events: the schema every producer writes and the ingestion reads.

An event is one JSON object per Kafka message, keyed by `user_id`:

    {"event_id": "r1f3c-42", "event_type": "ButtonDisplayed", "test_id": "button-color-test",
     "variant": "control", "user_id": "u7-1234", "timestamp": "2026-11-21T21:50:00.123Z"}

A user's variant in a test is a pure function of (test_id, user_id) and the allocation, so
every producer, and every run, puts the same user in the same variant.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from datetime import UTC, datetime
from itertools import accumulate

from diana_pipeline.config import ExperimentTest

EVENT_FIELDS = ("event_id", "event_type", "test_id", "variant", "user_id", "timestamp")

_HASH_SCALE = float(2**64)


def assignment_point(test_id: str, user_id: str) -> float:
    """A uniform number in [0, 1) fixed by (test, user): the user's place in the allocation."""
    digest = hashlib.blake2b(f"{test_id}\x1f{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SCALE


class VariantAssigner:
    """Maps users to the variants of one test, in proportion to the configured allocation."""

    def __init__(self, test: ExperimentTest) -> None:
        self.test_id = test.test_id
        self.names = [v.name for v in test.variants]
        # Cumulative upper bounds; the last one is forced to 1 against rounding.
        bounds = list(accumulate(v.allocation for v in test.variants))
        bounds[-1] = 1.0
        self._bounds = bounds

    def variant_index(self, user_id: str) -> int:
        point = assignment_point(self.test_id, user_id)
        # Zero-allocation variants have empty intervals and are never chosen.
        return min(bisect_right(self._bounds, point), len(self.names) - 1)

    def variant(self, user_id: str) -> str:
        return self.names[self.variant_index(user_id)]


def format_timestamp(epoch_ms: int) -> str:
    """UTC ISO-8601 with milliseconds and a Z, e.g. 2026-11-21T21:50:00.123Z."""
    seconds, millis = divmod(epoch_ms, 1000)
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"


class TimestampFormatter:
    """format_timestamp with the per-second prefix cached: events come many per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""
        self._last_ms = -1
        self._last = ""

    def __call__(self, epoch_ms: int) -> str:
        if epoch_ms == self._last_ms:
            return self._last
        self._last_ms = epoch_ms
        seconds, millis = divmod(epoch_ms, 1000)
        if seconds != self._second:
            self._second = seconds
            self._prefix = f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}"
        self._last = f"{self._prefix}.{millis:03d}Z"
        return self._last
