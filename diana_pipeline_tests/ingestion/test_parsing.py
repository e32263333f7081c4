"""A chunk parsed in DuckDB gives what EventValidator.validate gives message by message: the
same events, values and windows, the same rejections with the same reasons.

Pure unit tests on an in-memory DuckDB; the messages are stand-ins for confluent-kafka's
(value() and offset() only)."""

from __future__ import annotations

import math
import random
import string
from datetime import datetime

import duckdb
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diana_pipeline.events import EventColumns, EventValidator, ValidEvent
from diana_pipeline.ingestion.parsing import BatchParser, MessageBatch
from diana_pipeline_tests.test_events import GOOD, payloads, timestamps, validator

PARTITION = 3


class FakeMessage:
    """A stand-in for confluent_kafka.Message."""

    def __init__(self, offset: int, value: bytes | None) -> None:
        self._offset, self._value = offset, value

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value


def parse(
    raws: list[bytes | None], checker: EventValidator, consumed: int = 500
) -> tuple[list[tuple], list[tuple[int, int, bytes | None, str]]]:
    """The rows BatchParser stores for these messages (by offset), and its rejections."""
    batch = MessageBatch(PARTITION, checker.max_bytes)
    messages = [FakeMessage(100 + i, raw) for i, raw in enumerate(raws)]
    for start in range(0, len(messages), consumed):  # as consume() hands them over
        batch.add(messages[start : start + consumed])
    connection = duckdb.connect()
    rejected = BatchParser(checker).parse_into(connection, batch, "parsed")
    rows = connection.execute("SELECT * FROM parsed ORDER BY kafka_offset").fetchall()
    return rows, sorted(rejected)


def expected(
    raws: list[bytes | None], checker: EventValidator
) -> tuple[list[tuple], list[tuple[int, int, bytes | None, str]]]:
    """validate(), message by message: the reference."""
    columns, rejected = EventColumns(), []
    for i, raw in enumerate(raws):
        outcome = checker.validate(raw)
        if isinstance(outcome, ValidEvent):
            columns.append(PARTITION, 100 + i, outcome)
        else:
            rejected.append((PARTITION, 100 + i, raw, outcome))
    rows = list(
        zip(
            columns.kafka_partition, columns.kafka_offset, columns.event_id, columns.event_type,
            columns.test_id, columns.variant, columns.user_id, columns.event_us,
            columns.window_us, columns.value, columns.properties, strict=True,
        )
    )  # fmt: skip
    return rows, rejected


def assert_same(actual: list[tuple], reference: list[tuple]) -> None:
    assert len(actual) == len(reference)
    for got, want in zip(actual, reference, strict=True):
        *fields, value, properties = got
        *want_fields, want_value, want_properties = want
        assert fields == want_fields
        assert properties == want_properties
        assert (value is None and math.isnan(want_value)) or value == want_value  # NULL: none


# What a producer other than ours may write: another layout, and the spellings where DuckDB's
# JSON reader and orjson disagree (NaN, trailing commas, huge integers, repeated keys), or
# that only an escape-aware reader reads right.
_EDITS = [
    lambda text: text.replace('"value":', '"value": NaN, "x":', 1),
    lambda text: text.replace("}", ",}", 1),
    lambda text: text.replace('"value":', '"value":123456789012345678901234567890,"y":', 1),
    lambda text: text.replace('"variant":', '"variant":"nope","variant":', 1),
    lambda text: text.replace('"variant":', '"variant":"control","variant":', 1),
    lambda text: text.replace('"variant":"control"', '"variant":"\\u0063ontrol"', 1),
    lambda text: text.replace('"user_id":"', '"user_id":"\\n', 1),
    lambda text: text.replace(",", ", ").replace('":', '": '),
    lambda text: text.replace("{", "{ /* c */ ", 1),
    lambda text: text.replace('"value":', '"value":Infinity,"z":', 1),
    lambda text: text.replace('"value":', '"value":1e999,"z":', 1),
    lambda text: text.replace('"value":', '"value":-0,"z":', 1),
    lambda text: text.replace('"value":', '"value":true,"z":', 1),
    lambda text: text.replace('"timestamp":"', '"timestamp":"\\u0032', 1),
    lambda text: "\t " + text + " \r",
    lambda text: text + "\n",
    lambda text: text.replace("u", "ü", 1),
]


@st.composite
def plain_payloads(draw: st.DrawFn) -> bytes:
    """Valid events as a producer would write them, mostly; the timestamp now and then in
    a spelling the SQL leaves to the validator."""
    moment = draw(
        st.datetimes(min_value=datetime(2026, 11, 1), max_value=datetime(2026, 11, 21, 13))
    )
    event = {
        **GOOD,
        "event_id": draw(
            st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=5)
        ),
        "variant": draw(st.sampled_from(["control", "treatment", "other"])),
        "user_id": draw(st.text(string.printable, min_size=1, max_size=5)),
        "timestamp": draw(
            st.one_of(
                st.just(f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"),
                st.just(f"{moment:%Y-%m-%dT%H:%M:%S.%f}Z"),
                st.just(f"{moment:%Y-%m-%dT%H:%M:%S}Z"),
                timestamps(),
            )
        ),
    }
    if draw(st.booleans()):
        event["value"] = draw(
            st.one_of(
                st.floats(-2e12, 2e12), st.integers(-(10**13), 10**13), st.none(), st.just({})
            )
        )
    if draw(st.integers(0, 3)) == 0:
        event["properties"] = draw(st.sampled_from([None, {}, {"country": "DE"}]))
    return orjson.dumps(event)


@st.composite
def messages(draw: st.DrawFn) -> bytes | None:
    raw = draw(st.one_of(payloads(), plain_payloads()))
    if raw is None or not draw(st.booleans()):
        return raw
    text = raw.decode("utf-8", "replace")
    if draw(st.booleans()):  # another producer's key order
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            event = None
        if isinstance(event, dict):
            keys = draw(st.permutations(list(event)))
            text = orjson.dumps({key: event[key] for key in keys}).decode()
    return draw(st.sampled_from(_EDITS))(text).encode()


@settings(max_examples=200, deadline=None)
@given(raws=st.lists(messages(), min_size=20, max_size=100), consumed=st.integers(1, 100))
def test_a_parsed_chunk_equals_validate_message_by_message(
    raws: list[bytes | None], consumed: int
) -> None:
    checker = validator()
    rows, rejected = parse(raws, checker, consumed)
    want_rows, want_rejected = expected(raws, checker)
    assert_same(rows, want_rows)
    assert rejected == want_rejected


def plain_events(count: int, seed: int) -> list[bytes]:
    """Events as our traffic engine writes them, with and without a value."""
    rng = random.Random(seed)
    events = []
    for i in range(count):
        event = {
            **GOOD,
            "event_id": f"e-{i}",
            "variant": rng.choice(["control", "treatment"]),
            "user_id": f"u-{rng.randrange(1000)}",
            "timestamp": f"2026-11-21T{rng.randrange(24):02d}:{rng.randrange(60):02d}:"
            f"{rng.randrange(60):02d}.{rng.randrange(1000):03d}Z",
        }
        if rng.random() < 0.3:
            event["value"] = rng.choice([rng.uniform(-1e12, 1e12), rng.randrange(10**12)])
        events.append(orjson.dumps(event))
    return events


def test_plain_events_never_reach_the_python_validator(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the batch: the usual event is parsed in DuckDB alone. (Events after NOW
    + the allowed skew are rejected, by the validator, with their reason.)"""
    checker = validator()
    validated: list[bytes | None] = []
    original = checker.validate_into

    def counting(raw: bytes | None, *args: object) -> str | None:
        validated.append(raw)
        return original(raw, *args)

    monkeypatch.setattr(checker, "validate_into", counting)
    raws = plain_events(5_000, seed=1)
    rows, rejected = parse(raws, checker)
    want_rows, want_rejected = expected(raws, checker)
    assert_same(rows, want_rows)
    assert rejected == want_rejected
    assert len(validated) == len(want_rejected) < len(raws) // 2


def test_messages_that_only_the_validator_reads_still_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Escapes, non-ASCII, tombstones and oversized messages mixed into a plain chunk."""
    checker = validator()
    plain = plain_events(200, seed=2)
    odd = [
        orjson.dumps({**GOOD, "event_id": "é-1"}),
        orjson.dumps({**GOOD, "event_id": 'quote"d'}),
        None,
        orjson.dumps({**GOOD, "event_id": "big", "pad": "x" * 20_000}),
        orjson.dumps({**GOOD, "event_id": "props", "properties": {"country": "DE"}}),
        b'{"event_id": "spaced", ' + orjson.dumps(GOOD)[1:].replace(b'"event_id":"e-1",', b""),
    ]
    raws = plain[:100] + odd + plain[100:]
    rows, rejected = parse(raws, checker, consumed=64)
    want_rows, want_rejected = expected(raws, checker)
    assert_same(rows, want_rows)
    assert rejected == want_rejected
    ids = {row[2] for row in rows}
    assert {"é-1", 'quote"d', "props", "spaced"} <= ids


def _with(**fields: object) -> bytes:
    return orjson.dumps({**GOOD, **fields})


@pytest.mark.parametrize(
    "raw",
    [
        _with(timestamp="2026-11-21T24:00:00.000Z"),
        _with(timestamp="2026-11-21T10:15:60.000Z"),
        _with(timestamp="2026-02-30T10:15:30.000Z"),
        _with(timestamp="2026-11-21T10:15:30.12Z"),
        _with(timestamp="2026-11-21T10:15:30.1234567Z"),
        _with(timestamp="2026-11-21T13:00:00.000000Z"),  # NOW + the allowed skew: the last
        _with(timestamp="2026-11-21T13:00:00.000001Z"),
        _with(timestamp="2026-10-31T23:59:59.999999Z"),  # before the first window
        _with(timestamp="2026-11-01T00:00:00Z"),
        _with(event_id="x" * 256),
        _with(event_id="x" * 257),
        _with(user_id=""),
        _with(value=1e12),
        _with(value=-1e12),
        _with(value=1_000_000_000_000),
        _with(value=1_000_000_000_001),
        _with(value=1000000000000.0002),
        _with(value=-1000000000000.0002),
        _with(value=0.1),
        _with(value=123456789.123456789),
        _with(value=None),
        _with(value="12"),
        _with(properties={}),
        _with(properties=None),
        _with(properties={"country": "DE"}),
        _with(test_id="other-test"),
        b'{"event_id":"e-1","event_id":"e-2",' + _with()[1:].replace(b'"event_id":"e-1",', b""),
        _with()[:-1] + b',"value":1.5e3}',
        _with()[:-1] + b',"value":12345678901234567890}',
        _with()[:-1] + b',"value":-0}',
        _with()[:-1] + b',"value":1E+2}',
    ],
)
def test_each_edge_gets_validates_verdict(raw: bytes) -> None:
    checker = validator()
    rows, rejected = parse([raw], checker)
    want_rows, want_rejected = expected([raw], checker)
    assert_same(rows, want_rows)
    assert rejected == want_rejected
