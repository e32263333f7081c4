"""Web events: the schema every producer writes and the ingestion reads.

An event is one JSON object per Kafka message, keyed by `user_id`:

    {"event_id": "r1f3c-42", "event_type": "ButtonDisplayed", "test_id": "button-color-test",
     "variant": "control", "user_id": "u7-1234", "timestamp": "2026-11-21T21:50:00.123Z"}

and optionally a `value`, a finite number with |value| ≤ 1e12 (revenue, in the event's
currency units), which value metrics sum; `"value": null` is the same as no value; and
optionally `properties`, a flat object of at most 16 string values, keys `[a-z0-9_]+` and
values of 1 to 64 characters (a user's segments come from their first exposure's);
`"properties": null` or `{}` is the same as none.

Which variant a user is in is assignment.py's concern.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import orjson

from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.windows import aware_utc, from_microseconds, naive_utc, to_microseconds

EVENT_FIELDS = ("event_id", "event_type", "test_id", "variant", "user_id", "timestamp")


MAX_ABS_VALUE = 1e12  # an event's `value`
NO_VALUE = math.nan  # in EventColumns.value: the event has none (a NaN value is refused)
MAX_PROPERTIES = 16  # an event's `properties`: keys at most
MAX_PROPERTY_LENGTH = 64  # characters of a property's key or value
_PROPERTY_KEY = re.compile(r"[a-z0-9_]+")


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

# The part of a UTC timestamp that names its second: 2026-11-21T10:15:30
_SECOND = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", re.ASCII)
# NUL, newlines and the other C0 controls have no business in ids and would corrupt the CSV
# sink and logs. JSON must escape them, so only values with a backslash need the search.
_CONTROL = re.compile("[\x00-\x1f]")
_SECOND_CACHE_LIMIT = 100_000

_Text = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_FIELD_LENGTH)]


class _PlainEvent(msgspec.Struct):
    """The usual event's shape, which msgspec decodes and checks a batch at a time, in C
    (EventValidator.validate_batch). Other keys are ignored, as validate() ignores them."""

    event_id: _Text
    event_type: _Text
    test_id: _Text
    variant: _Text
    user_id: _Text
    timestamp: Annotated[str, msgspec.Meta(max_length=MAX_FIELD_LENGTH)]
    value: Annotated[float, msgspec.Meta(ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)] | None = None
    properties: Any = None


_PLAIN_BATCH = msgspec.json.Decoder(_PlainEvent)
_SUB_BATCH = 256  # messages: a batch msgspec refuses is tried again in parts this large


@dataclass(frozen=True)
class ValidEvent:
    event_id: str
    event_type: str
    test_id: str
    variant: str
    user_id: str
    event_time: datetime  # UTC, naive
    window_start: datetime  # UTC, naive
    value: float | None = None
    properties: str | None = None  # canonical JSON (sorted keys), None when none


@dataclass
class EventColumns:
    """Valid events with their Kafka positions, as columns: the shape that costs least to
    build per event and that DuckDB inserts in one statement. Times are UTC microseconds."""

    kafka_partition: list[int] = field(default_factory=list)
    kafka_offset: list[int] = field(default_factory=list)
    event_id: list[str] = field(default_factory=list)
    event_type: list[str] = field(default_factory=list)
    test_id: list[str] = field(default_factory=list)
    variant: list[str] = field(default_factory=list)
    user_id: list[str] = field(default_factory=list)
    event_us: list[int] = field(default_factory=list)
    window_us: list[int] = field(default_factory=list)
    value: list[float] = field(default_factory=list)  # NO_VALUE where the event has none
    properties: list[str | None] = field(default_factory=list)  # canonical JSON, or None

    @classmethod
    def of(cls, rows: Iterable[tuple[int, int, ValidEvent]]) -> EventColumns:
        """From (partition, offset, event) rows."""
        columns = cls()
        for partition, offset, event in rows:
            columns.append(partition, offset, event)
        return columns

    def __len__(self) -> int:
        return len(self.kafka_offset)

    def append(self, partition: int, offset: int, event: ValidEvent) -> None:
        self.kafka_partition.append(partition)
        self.kafka_offset.append(offset)
        self.event_id.append(event.event_id)
        self.event_type.append(event.event_type)
        self.test_id.append(event.test_id)
        self.variant.append(event.variant)
        self.user_id.append(event.user_id)
        self.event_us.append(to_microseconds(event.event_time))
        self.window_us.append(to_microseconds(event.window_start))
        self.value.append(NO_VALUE if event.value is None else event.value)
        self.properties.append(event.properties)

    def events(self) -> list[tuple[int, int, ValidEvent]]:
        """(partition, offset, event) per row, for tests and messages."""
        return [
            (
                p,
                o,
                ValidEvent(
                    i,
                    k,
                    t,
                    v,
                    u,
                    from_microseconds(us),
                    from_microseconds(w),
                    None if math.isnan(x) else x,
                    q,
                ),
            )
            for p, o, i, k, t, v, u, us, w, x, q in zip(
                self.kafka_partition,
                self.kafka_offset,
                self.event_id,
                self.event_type,
                self.test_id,
                self.variant,
                self.user_id,
                self.event_us,
                self.window_us,
                self.value,
                self.properties,
                strict=True,
            )
        ]


class EventValidator:
    """Turns raw Kafka message values into events, or into a reason for rejecting them.

    Checks, in order: size, UTF-8 JSON object, every field present and a non-empty string of
    at most 256 characters without control characters, a `value` (if any) a finite number
    within ±1e12, known test and variant, a UTC timestamp from the first window up to now +
    the allowed clock skew."""

    def __init__(self, config: ExperimentsConfig, now: datetime | None = None) -> None:
        self._variants = {t.test_id: set(t.variant_names) for t in config.tests}
        self._grid = config.partitions.grid
        self._max_bytes = config.ingestion.max_event_bytes
        self._earliest = config.partitions.start
        self._latest = aware_utc(now or datetime.now(UTC)) + config.ingestion.max_clock_skew
        # The same checks on plain integers, for validate_into's fast path.
        self._pairs = {(t.test_id, v) for t in config.tests for v in t.variant_names}
        self._earliest_us = self._grid.origin_us
        self._latest_us = to_microseconds(naive_utc(self._latest))
        self._second_us: dict[str, int] = {}

    def validate_batch(
        self, values: list[bytes | None], partition: int, offsets: list[int], columns: EventColumns
    ) -> list[tuple[int, int, bytes | None, str]]:
        """validate_into for a consumed batch of messages: the valid events appended to
        `columns`, the rejected messages returned as (partition, offset, raw, reason).

        The usual batch (no message without a value, oversized, with an escape or a line
        break) is decoded and its fields checked by msgspec in one call; a batch it refuses
        is tried again in parts of _SUB_BATCH, and a part it refuses goes message by
        message. Decoded events whose test and variant, timestamp or
        properties need more than the plain checks also go through validate_into, so the
        verdict and the values are always validate()'s."""
        events = self._decode_plain(values)
        if events is None and len(values) > _SUB_BATCH:
            # One odd message sends its whole batch message by message: sub-batches keep
            # that to the odd message's neighbours.
            rejected = []
            for start in range(0, len(values), _SUB_BATCH):
                end = start + _SUB_BATCH
                rejected += self.validate_batch(
                    values[start:end], partition, offsets[start:end], columns
                )
            return rejected
        if events is None:  # message by message
            plain = [False] * len(values)
        else:
            pairs, earliest, latest = self._pairs, self._earliest_us, self._latest_us
            moments = [self._utc_microseconds(event.timestamp) for event in events]
            plain = [
                moment is not None  # None: a timestamp spelled another way
                and earliest <= moment <= latest
                and (event.test_id, event.variant) in pairs
                and (event.properties is None or event.properties == {})
                for event, moment in zip(events, moments, strict=True)
            ]
            if all(plain):  # the usual batch: its columns extended at once
                self._extend(columns, partition, offsets, events, moments)
                return []
        rejected = []
        for i, (raw, offset) in enumerate(zip(values, offsets, strict=True)):
            if plain[i]:  # decoded and checked above
                self._extend(columns, partition, [offset], [events[i]], [moments[i]])
                continue
            reason = self.validate_into(raw, partition, offset, columns)
            if reason is not None:
                rejected.append((partition, offset, raw, reason))
        return rejected

    def _extend(
        self,
        columns: EventColumns,
        partition: int,
        offsets: list[int],
        events: list[_PlainEvent],
        moments: list[int],
    ) -> None:
        """Append plain events that passed every check (validate_batch)."""
        window_start = self._grid.window_start_us
        columns.kafka_partition.extend([partition] * len(events))
        columns.kafka_offset.extend(offsets)
        columns.event_id.extend([event.event_id for event in events])
        columns.event_type.extend([event.event_type for event in events])
        columns.test_id.extend([event.test_id for event in events])
        columns.variant.extend([event.variant for event in events])
        columns.user_id.extend([event.user_id for event in events])
        columns.event_us.extend(moments)
        columns.window_us.extend([window_start(moment) for moment in moments])
        columns.value.extend([NO_VALUE if event.value is None else event.value for event in events])
        columns.properties.extend([None] * len(events))

    def _decode_plain(self, values: list[bytes | None]) -> list[_PlainEvent] | None:
        """The batch decoded as plain events, or None when msgspec cannot vouch for all of
        it: escapes (a control character may hide behind one), a message without a value,
        oversized, spread over lines, or not an object of the plain shape."""
        try:
            if max(map(len, values)) > self._max_bytes:  # None raises TypeError
                return None
            joined = b"\n".join(values)
            if b"\\" in joined or joined.count(b"\n") != len(values) - 1:
                return None
            events = _PLAIN_BATCH.decode_lines(joined)
        except (TypeError, ValueError, msgspec.DecodeError):  # ValidationError is one
            return None
        return events if len(events) == len(values) else None

    def validate_into(
        self, raw: bytes | None, partition: int, offset: int, columns: EventColumns
    ) -> str | None:
        """Append the event to `columns`, or return the reason it is rejected.

        The verdict and the values are validate()'s; this is its fast path for the usual
        event (six short string fields, a known test and variant, a timestamp such as
        2026-11-21T10:15:30.250Z): one parse, no objects, the timestamp's second looked up
        in a cache. Anything unusual goes through validate() itself."""
        try:
            if len(raw) > self._max_bytes or b"\\" in raw:  # type: ignore[arg-type,operator]
                # Oversized, or escapes (a control character may hide behind one); None
                # raises TypeError. The full validator decides.
                return self._append_validated(raw, partition, offset, columns)
            event = orjson.loads(raw)  # type: ignore[arg-type]
            event_id = event["event_id"]
            event_type = event["event_type"]
            test_id = event["test_id"]
            variant = event["variant"]
            user_id = event["user_id"]
            timestamp = event["timestamp"]
            value = event.get("value")
            if event.get("properties") not in (None, {}):  # checked, made canonical: validate()
                return self._append_validated(raw, partition, offset, columns)
        except (TypeError, KeyError, AttributeError, orjson.JSONDecodeError):
            return self._append_validated(raw, partition, offset, columns)
        if (
            value is None
            or (type(value) in (int, float) and -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE)
        ) and (
            type(event_id) is str
            and type(event_type) is str
            and type(test_id) is str
            and type(variant) is str
            and type(user_id) is str
            and type(timestamp) is str
            and (test_id, variant) in self._pairs
            and 0 < len(event_id) <= MAX_FIELD_LENGTH
            and 0 < len(event_type) <= MAX_FIELD_LENGTH
            and 0 < len(test_id) <= MAX_FIELD_LENGTH
            and 0 < len(variant) <= MAX_FIELD_LENGTH
            and 0 < len(user_id) <= MAX_FIELD_LENGTH
            and len(timestamp) <= MAX_FIELD_LENGTH
        ):
            microseconds = self._utc_microseconds(timestamp)
            if microseconds is not None and self._earliest_us <= microseconds <= self._latest_us:
                columns.kafka_partition.append(partition)
                columns.kafka_offset.append(offset)
                columns.event_id.append(event_id)
                columns.event_type.append(event_type)
                columns.test_id.append(test_id)
                columns.variant.append(variant)
                columns.user_id.append(user_id)
                columns.event_us.append(microseconds)
                columns.window_us.append(self._grid.window_start_us(microseconds))
                columns.value.append(NO_VALUE if value is None else float(value))
                columns.properties.append(None)
                return None
        return self._append_validated(raw, partition, offset, columns)

    def _append_validated(
        self, raw: bytes | None, partition: int, offset: int, columns: EventColumns
    ) -> str | None:
        outcome = self.validate(raw)
        if isinstance(outcome, str):
            return outcome
        columns.append(partition, offset, outcome)
        return None

    def _utc_microseconds(self, timestamp: str) -> int | None:
        """Microseconds of YYYY-MM-DDTHH:MM:SS[.fff|.ffffff]Z; None for any other spelling
        (validate() then parses it)."""
        second = self._second_us.get(timestamp[:19])
        if second is None:
            if not _SECOND.fullmatch(timestamp[:19]):
                return None
            if len(self._second_us) >= _SECOND_CACHE_LIMIT:
                self._second_us.clear()
            try:
                second = to_microseconds(datetime.fromisoformat(timestamp[:19]))
            except ValueError:  # 2026-13-45T99:00:00
                return None
            self._second_us[timestamp[:19]] = second
        if timestamp[-1] != "Z" or not timestamp.isascii():
            return None
        size = len(timestamp)
        if size == 20:
            return second
        digits = timestamp[20:-1]
        if timestamp[19] != "." or not digits.isdigit():
            return None
        if size == 24:
            return second + int(digits) * 1000
        if size == 27:
            return second + int(digits)
        return None

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
            control = _CONTROL.search(value)
            if control:
                return f"field {name} contains a control character (U+{ord(control[0]):04X})"
        value = event.get("value")
        problem = _value_problem(value) or _properties_problem(event.get("properties"))
        if problem:
            return problem
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
        moment = aware_utc(moment)
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
            naive_utc(moment),
            self._grid.window_start(moment),
            None if value is None else float(value),
            _canonical(event.get("properties")),
        )


def _canonical(properties: dict[str, str] | None) -> str | None:
    """Properties as stored: JSON with sorted keys, so that equal objects read the same."""
    return orjson.dumps(properties, option=orjson.OPT_SORT_KEYS).decode() if properties else None


def _properties_problem(properties: object) -> str | None:
    """Why an event's `properties` are refused, if they are (None: none, which is fine)."""
    if properties is None:
        return None
    if not isinstance(properties, dict):
        return f"field properties must be an object, got {type(properties).__name__}"
    if len(properties) > MAX_PROPERTIES:
        return f"field properties has {len(properties)} keys, at most {MAX_PROPERTIES}"
    for key, value in properties.items():
        if not (len(key) <= MAX_PROPERTY_LENGTH and _PROPERTY_KEY.fullmatch(key)):
            return (
                f"properties key {key[:MAX_PROPERTY_LENGTH]!r} must be 1 to "
                f"{MAX_PROPERTY_LENGTH} characters of a-z, 0-9 and _"
            )
        if not isinstance(value, str):
            return f"properties.{key} must be a string, got {type(value).__name__}"
        if not value or len(value) > MAX_PROPERTY_LENGTH:
            return (
                f"properties.{key} must have 1 to {MAX_PROPERTY_LENGTH} characters, "
                f"has {len(value)}"
            )
        control = _CONTROL.search(value)
        if control:
            return f"properties.{key} contains a control character (U+{ord(control[0]):04X})"
    return None


def _value_problem(value: object) -> str | None:
    """Why an event's `value` is refused, if it is (None: no value, which is fine)."""
    if value is None:
        return None
    # bool is an int in Python; true is not an amount.
    if type(value) not in (int, float):
        return f"field value must be a number, got {type(value).__name__}"
    if not math.isfinite(value):
        return f"field value must be finite, got {value}"
    if abs(value) > MAX_ABS_VALUE:
        return f"field value out of range: {value:g} (at most {MAX_ABS_VALUE:g} either side of 0)"
    return None


# The kind of each reason validate() gives, by how the reason begins: the short name that
# monitoring counts rejections by (the metrics topic). More specific beginnings come first.
_REJECTION_KINDS = (
    ("empty message", "empty"),
    ("oversized", "oversized"),
    ("not JSON", "not_json"),
    ("not a JSON object", "not_an_object"),
    ("missing field", "missing_field"),
    ("field value", "bad_value"),
    ("field properties", "bad_properties"),
    ("properties", "bad_properties"),
    ("field ", "bad_field"),
    ("unknown test", "unknown_test"),
    ("unknown variant", "unknown_variant"),
    ("timestamp is not", "bad_timestamp"),
    ("timestamp out of range", "timestamp_out_of_range"),
)


def rejection_kind(reason: str) -> str:
    """The kind of a rejection reason (`not_json`, `unknown_test`, ...); `other` for a reason
    this version does not give (rows stored by an older one)."""
    for beginning, kind in _REJECTION_KINDS:
        if reason.startswith(beginning):
            return kind
    return "other"
