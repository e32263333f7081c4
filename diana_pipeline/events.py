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
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate

import orjson

from diana_pipeline.config import ExperimentsConfig, ExperimentTest

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


# ---- validation (ingestion) ------------------------------------------------------------------

MAX_FIELD_LENGTH = 256


@dataclass(frozen=True)
class ValidEvent:
    event_id: str
    event_type: str
    test_id: str
    variant: str
    user_id: str
    event_time: datetime  # UTC, naive
    window_start: datetime  # UTC, naive


class EventValidator:
    """Turns raw Kafka message values into events, or into a reason for rejecting them.

    Checks, in order: size, UTF-8 JSON object, every field present and a non-empty string of
    at most 256 characters, known test and variant, a UTC timestamp from the first window up
    to now + the allowed clock skew."""

    def __init__(self, config: ExperimentsConfig, now: datetime | None = None) -> None:
        self._variants = {t.test_id: set(t.variant_names) for t in config.tests}
        self._partitions = config.partitions
        self._max_bytes = config.ingestion.max_event_bytes
        moment = now or datetime.now(UTC)
        self._earliest = config.partitions.start
        self._latest = moment + config.ingestion.max_clock_skew

    def validate(self, raw: bytes | None) -> ValidEvent | str:
        """The event, or the reason it is rejected."""
        if raw is None:
            return "empty message (no value)"
        if len(raw) > self._max_bytes:
            return f"oversized: {len(raw):,} bytes > {self._max_bytes:,}"
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return f"not JSON: {exc}"
        if not isinstance(event, dict):
            return f"not a JSON object but a {type(event).__name__}"
        missing = [name for name in EVENT_FIELDS if name not in event]
        if missing:
            return f"missing field(s): {', '.join(missing)}"
        for name in EVENT_FIELDS:
            value = event[name]
            if not isinstance(value, str):
                return f"field {name} must be a string, got {type(value).__name__}"
            if not value or len(value) > MAX_FIELD_LENGTH:
                return (
                    f"field {name} must have 1 to {MAX_FIELD_LENGTH} characters, has {len(value)}"
                )
        test_id, variant = event["test_id"], event["variant"]
        variants = self._variants.get(test_id)
        if variants is None:
            return f"unknown test {test_id!r}"
        if variant not in variants:
            return f"unknown variant {variant!r} of test {test_id!r}"
        try:
            moment = datetime.fromisoformat(event["timestamp"])
        except ValueError:
            return f"timestamp is not ISO-8601: {event['timestamp']!r}"
        moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
        if not self._earliest <= moment <= self._latest:
            return (
                f"timestamp out of range: {event['timestamp']} (accepted from "
                f"{self._earliest:%Y-%m-%dT%H:%M:%SZ} to {self._latest:%Y-%m-%dT%H:%M:%SZ})"
            )
        return ValidEvent(
            event["event_id"],
            event["event_type"],
            test_id,
            variant,
            event["user_id"],
            moment.replace(tzinfo=None),
            self._partitions.window_start(moment).replace(tzinfo=None),
        )
