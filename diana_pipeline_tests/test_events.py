"""Event schema helpers: timestamps."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from diana_pipeline.events import TimestampFormatter, format_timestamp

ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def test_timestamps_are_iso_utc_with_milliseconds() -> None:
    formatter = TimestampFormatter()
    moments = [0, 1_795_295_610_001, 1_795_295_610_999, 1_795_295_611_000, 1_795_295_611_000]
    for epoch_ms in moments:
        text = formatter(epoch_ms)
        assert text == format_timestamp(epoch_ms)
        assert ISO_MS.match(text)
        parsed = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert round(parsed.timestamp() * 1000) == epoch_ms


# ---- validation ------------------------------------------------------------------------------

import orjson  # noqa: E402
import pytest  # noqa: E402

from diana_pipeline import events  # noqa: E402
from diana_pipeline.config import load_config  # noqa: E402
from diana_pipeline.events import EventColumns, EventValidator, ValidEvent, rejection_kind  # noqa: E402
from diana_pipeline.harness.paths import REPO_ROOT  # noqa: E402

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
GOOD = {
    "event_id": "e-1",
    "event_type": "ButtonDisplayed",
    "test_id": "button-color-test",
    "variant": "control",
    "user_id": "alice",
    "timestamp": "2026-11-21T10:15:30.250Z",
}


def validator() -> EventValidator:
    return EventValidator(load_config(REPO_ROOT / "experiments.yaml", env={}), now=NOW)


def test_a_valid_event_gets_its_window() -> None:
    event = validator().validate(orjson.dumps(GOOD))
    assert isinstance(event, ValidEvent)
    assert event.event_time == datetime(2026, 11, 21, 10, 15, 30, 250000)
    assert event.window_start == datetime(2026, 11, 21, 10, 0)
    offset = validator().validate(orjson.dumps({**GOOD, "timestamp": "2026-11-21T11:15:30+01:00"}))
    assert isinstance(offset, ValidEvent) and offset.window_start == datetime(2026, 11, 21, 10, 0)


@pytest.mark.parametrize(
    ("value", "stored"),
    [(12.5, 12.5), (7, 7.0), (0, 0.0), (-3.25, -3.25), (1e12, 1e12), (-1e12, -1e12), (None, None)],
)
def test_a_value_is_optional_and_kept_as_a_number(value: object, stored: float | None) -> None:
    for raw in (orjson.dumps({**GOOD, "value": value}), orjson.dumps(GOOD)):
        event = validator().validate(raw)
        assert isinstance(event, ValidEvent)
        assert event.value == (stored if b"value" in raw else None)
        columns = EventColumns()
        assert validator().validate_into(raw, 0, 0, columns) is None
        assert columns.events()[-1][2] == event


@pytest.mark.parametrize(
    ("properties", "stored"),
    [
        ({"device": "mobile", "country": "DE"}, '{"country":"DE","device":"mobile"}'),
        ({"k" * 64: "v" * 64}, '{"' + "k" * 64 + '":"' + "v" * 64 + '"}'),
        ({f"p{i}": "x" for i in range(16)}, None),  # 16 keys: the most there may be
        ({}, None),
        (None, None),
    ],
)
def test_properties_are_optional_and_kept_with_sorted_keys(
    properties: object, stored: str | None
) -> None:
    raw = orjson.dumps({**GOOD, "properties": properties})
    event = validator().validate(raw)
    assert isinstance(event, ValidEvent)
    if stored is not None or not properties:
        assert event.properties == stored
    else:
        assert orjson.loads(event.properties) == properties  # type: ignore[arg-type]
    columns = EventColumns()
    assert validator().validate_into(raw, 0, 0, columns) is None
    assert columns.events()[-1][2] == event


@pytest.mark.parametrize(
    ("properties", "reason"),
    [
        ([], "field properties must be an object, got list"),
        ("mobile", "field properties must be an object, got str"),
        ({f"p{i}": "x" for i in range(17)}, "field properties has 17 keys, at most 16"),
        ({"Device": "mobile"}, "properties key 'Device' must be 1 to 64 characters of a-z"),
        ({"": "mobile"}, "properties key '' must be 1 to 64 characters"),
        ({"k" * 65: "v"}, "must be 1 to 64 characters of a-z, 0-9 and _"),
        ({"device": 3}, "properties.device must be a string, got int"),
        ({"device": {"os": "ios"}}, "properties.device must be a string, got dict"),
        ({"device": ""}, "properties.device must have 1 to 64 characters, has 0"),
        ({"device": "v" * 65}, "properties.device must have 1 to 64 characters, has 65"),
        ({"device": "a\nb"}, "properties.device contains a control character (U+000A)"),
    ],
)
def test_bad_properties_are_rejected_with_their_reason(properties: object, reason: str) -> None:
    raw = orjson.dumps({**GOOD, "properties": properties})
    outcome = validator().validate(raw)
    assert isinstance(outcome, str) and reason in outcome, outcome
    assert validator().validate_into(raw, 0, 0, EventColumns()) == outcome


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (None, "empty"),
        (b"x" * 20_000, "oversized"),
        (b"not json", "not_json"),
        (b"[1, 2]", "not_an_object"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "user_id"}), "missing_field"),
        (orjson.dumps({**GOOD, "event_id": 17}), "bad_field"),
        (orjson.dumps({**GOOD, "user_id": "a\x00b"}), "bad_field"),
        (orjson.dumps({**GOOD, "variant": "x" * 300}), "bad_field"),
        (orjson.dumps({**GOOD, "value": "12.50"}), "bad_value"),
        (orjson.dumps({**GOOD, "value": 1e13}), "bad_value"),
        (orjson.dumps({**GOOD, "properties": []}), "bad_properties"),
        (orjson.dumps({**GOOD, "properties": {"Device": "x"}}), "bad_properties"),
        (orjson.dumps({**GOOD, "properties": {"device": 3}}), "bad_properties"),
        (orjson.dumps({**GOOD, "test_id": "other-test"}), "unknown_test"),
        (orjson.dumps({**GOOD, "variant": "purple"}), "unknown_variant"),
        (orjson.dumps({**GOOD, "timestamp": "yesterday"}), "bad_timestamp"),
        (orjson.dumps({**GOOD, "timestamp": "2100-01-01T00:00:00.000Z"}), "timestamp_out_of_range"),
    ],
)
def test_each_rejection_has_its_kind_for_monitoring(raw: bytes | None, kind: str) -> None:
    reason = validator().validate(raw)
    assert isinstance(reason, str) and rejection_kind(reason) == kind, reason


def test_a_reason_of_no_known_kind_is_other() -> None:
    assert rejection_kind("rejected by a version that no longer exists") == "other"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty message"),
        (b"x" * 20_000, "oversized: 20,000 bytes > 16,384"),
        (b"not json", "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b'{"event_id": "trunc', "not JSON"),
        (b"[1, 2]", "not a JSON object but a list"),
        (
            orjson.dumps({k: v for k, v in GOOD.items() if k != "user_id"}),
            "missing field(s): user_id",
        ),
        (orjson.dumps({**GOOD, "event_id": 17}), "field event_id must be a string, got int"),
        (orjson.dumps({**GOOD, "user_id": None}), "field user_id must be a string, got NoneType"),
        (orjson.dumps({**GOOD, "user_id": ""}), "field user_id must have 1 to 256 characters"),
        (
            orjson.dumps({**GOOD, "variant": "x" * 300}),
            "field variant must have 1 to 256 characters",
        ),
        (
            orjson.dumps({**GOOD, "user_id": "a\x00b"}),
            "field user_id contains a control character (U+0000)",
        ),
        (
            orjson.dumps({**GOOD, "event_id": "line\nbreak"}),
            "field event_id contains a control character (U+000A)",
        ),
        (orjson.dumps({**GOOD, "test_id": "other-test"}), "unknown test 'other-test'"),
        (
            orjson.dumps({**GOOD, "variant": "purple"}),
            "unknown variant 'purple' of test 'button-color-test'",
        ),
        (orjson.dumps({**GOOD, "value": "12.50"}), "field value must be a number, got str"),
        (orjson.dumps({**GOOD, "value": True}), "field value must be a number, got bool"),
        (orjson.dumps({**GOOD, "value": [1]}), "field value must be a number, got list"),
        (orjson.dumps({**GOOD, "value": 1e13}), "field value out of range: 1e+13"),
        (orjson.dumps({**GOOD, "value": -(10**13)}), "field value out of range"),
        (orjson.dumps(GOOD)[:-1] + b', "value": NaN}', "not JSON"),
        (orjson.dumps(GOOD)[:-1] + b', "value": 1e999}', "not JSON: number is infinity"),
        (orjson.dumps({**GOOD, "timestamp": "yesterday"}), "timestamp is not ISO-8601"),
        (orjson.dumps({**GOOD, "timestamp": "1970-01-01T00:00:00.000Z"}), "timestamp out of range"),
        (orjson.dumps({**GOOD, "timestamp": "2100-01-01T00:00:00.000Z"}), "timestamp out of range"),
    ],
)
def test_each_bad_message_has_its_reason(raw: bytes | None, reason: str) -> None:
    outcome = validator().validate(raw)
    assert isinstance(outcome, str)
    assert outcome.startswith(reason)
    columns = EventColumns()
    assert validator().validate_into(raw, 0, 0, columns) == outcome and not len(columns)


# ---- the fast path agrees with validate() (property-based) ----------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_moments = st.one_of(
    # Mostly inside the accepted range (the first window to NOW + 1 h), some far outside.
    st.datetimes(
        min_value=datetime(2026, 10, 31, 23),
        max_value=datetime(2026, 11, 21, 13, 1),
        timezones=st.just(UTC),
    ),
    st.datetimes(
        min_value=datetime(2026, 11, 21, 10),
        max_value=datetime(2026, 11, 21, 11, 1),
        timezones=st.just(UTC),
    ),
    st.datetimes(
        min_value=datetime(1969, 12, 31), max_value=datetime(2101, 1, 1), timezones=st.just(UTC)
    ),
)


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    """Every spelling a producer might use, right and wrong."""
    moment = draw(
        st.one_of(
            _moments,
            st.sampled_from([NOW, NOW + timedelta(hours=1), datetime(2026, 11, 1, tzinfo=UTC)]),
        )
    )
    spelling = draw(
        st.sampled_from(
            [
                "%Y-%m-%dT%H:%M:%S.{ms}Z",
                "%Y-%m-%dT%H:%M:%S.%fZ",
                "%Y-%m-%dT%H:%M:%SZ",
                "%Y-%m-%dT%H:%M:%S.{ms}+00:00",
                "%Y-%m-%dT%H:%M:%S+01:00",
                "%Y-%m-%d %H:%M:%S.{ms}Z",
                "%Y-%m-%dT%H:%M:%S.{ms}",
                "%Y-%m-%dT%H:%M:%S.{cs}Z",
                "%Y%m%dT%H%M%SZ",
            ]
        )
    )
    text = moment.strftime(spelling.format(ms=f"{moment.microsecond // 1000:03d}", cs="12"))
    if draw(st.integers(0, 19)) == 0:  # damage one character
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + draw(st.sampled_from(["9", "x", "Z", ".", "٣", ""])) + text[at + 1 :]
    return text


_strings = st.one_of(
    st.text(min_size=0, max_size=3),
    st.text(min_size=255, max_size=258),
    st.sampled_from(["control", "treatment", "button-color-test", "other", "ButtonClicked"]),
)
_values = st.one_of(
    _strings,
    st.integers(-(2**63), 2**63 - 1),
    st.none(),
    st.booleans(),
    st.lists(st.integers(0, 9), max_size=2),
)


@st.composite
def payloads(draw: st.DrawFn) -> bytes | None:
    def usually(good: st.SearchStrategy) -> object:
        """Nine times in ten a good value, else anything."""
        return draw(good if draw(st.integers(0, 9)) else _values)

    event = {
        "event_id": usually(st.uuids().map(str)),
        "event_type": usually(st.sampled_from(["ButtonDisplayed", "ButtonClicked"])),
        "test_id": usually(st.just("button-color-test")),
        "variant": usually(st.sampled_from(["control", "treatment"])),
        "user_id": usually(st.text(min_size=1, max_size=20)),
        "timestamp": usually(timestamps()),
    }
    if draw(st.booleans()):
        event["value"] = usually(
            st.one_of(
                st.floats(-2e12, 2e12),
                st.integers(-(10**13), 10**13),
                st.sampled_from([1e12, -1e12, 0.0, -0.0]),
            )
        )
    if draw(st.booleans()):
        good_key = st.text("abcxyz019_", min_size=1, max_size=3)
        good_value = st.text(min_size=1, max_size=4)
        event["properties"] = usually(
            st.one_of(
                st.dictionaries(good_key, good_value, max_size=3),
                st.dictionaries(good_key, good_value, min_size=16, max_size=17),
                st.dictionaries(st.text(max_size=65), st.one_of(_strings, _values), max_size=2),
            )
        )
    if draw(st.integers(0, 9)) == 0:
        del event[draw(st.sampled_from(list(event)))]
    if draw(st.booleans()):
        event[draw(st.text(max_size=5))] = draw(_values)
    raw = orjson.dumps(event)
    damage = draw(st.integers(0, 19))
    if damage == 0:
        return None
    if damage == 1:
        return raw[: draw(st.integers(0, len(raw)))]
    if damage == 2:
        return draw(st.binary(max_size=40))
    if damage == 3:
        return orjson.dumps([event])
    if damage == 4:
        return raw + b" " * 20_000
    return raw


_CHECKER = validator()


def assert_the_fast_path_agrees(raw: bytes | None, position: tuple[int, int]) -> None:
    outcome = _CHECKER.validate(raw)
    columns = EventColumns()
    # Twice: the second call finds the timestamp's second in the cache.
    for _ in range(2):
        reason = _CHECKER.validate_into(raw, *position, columns)
        if isinstance(outcome, str):
            assert reason == outcome and len(columns) == 0
        else:
            assert reason is None and columns.events()[-1] == (*position, outcome)


@settings(max_examples=3000, deadline=None)
@given(raw=payloads(), position=st.tuples(st.integers(0, 2), st.integers(0, 2**40)))
def test_the_fast_path_gives_validates_verdict_and_values(
    raw: bytes | None, position: tuple[int, int]
) -> None:
    assert_the_fast_path_agrees(raw, position)


def test_the_fast_path_reads_the_usual_timestamps_exactly() -> None:
    checker = validator()
    columns = EventColumns()
    for text, expected in [
        ("2026-11-21T10:15:30.250Z", datetime(2026, 11, 21, 10, 15, 30, 250000)),
        ("2026-11-21T10:15:30.999Z", datetime(2026, 11, 21, 10, 15, 30, 999000)),
        ("2026-11-21T10:15:30.000001Z", datetime(2026, 11, 21, 10, 15, 30, 1)),
        ("2026-11-21T10:59:59Z", datetime(2026, 11, 21, 10, 59, 59)),
        ("2026-11-21T11:00:00.000Z", datetime(2026, 11, 21, 11, 0)),
    ]:
        raw = orjson.dumps({**GOOD, "timestamp": text})
        assert checker.validate_into(raw, 0, 0, columns) is None
        (_, _, event) = columns.events()[-1]
        assert event.event_time == expected
        assert event.window_start == expected.replace(minute=0, second=0, microsecond=0)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-21T10:15:30.1٣3Z",  # a non-ASCII digit
        "2026-11-21T10:15:30.12Z",
        "2026-11-21T10:15:30.1234567Z",
        "2026-11-21T10:15:30,123Z",
        "2026-11-21T10:15:30.123z",
        "2026-11-21T10:15:30.123+00:00",
        "2026-11-21T10:15:30.123",
        "2026-02-30T10:15:30.123Z",
        "2026-11-21T24:00:00.000Z",
        "2026-11-21T10:15:30.+12Z",
        "2026-11-21T10:15:30. 12Z",
    ],
)
def test_odd_timestamps_get_validates_verdict(text: str) -> None:
    assert_the_fast_path_agrees(orjson.dumps({**GOOD, "timestamp": text}), (0, 7))


# ---- validate_batch agrees with validate() (property-based) ----------------------------------

import random  # noqa: E402
import string  # noqa: E402

# What a producer other than ours may write: another layout, and the spellings where a JSON
# reader may differ (NaN, trailing commas, huge integers, repeated keys, escapes, comments).
_EDITS = [
    lambda text: text.replace('"value":', '"value": NaN, "x":', 1),
    lambda text: text.replace("}", ",}", 1),
    lambda text: text.replace('"value":', '"value":123456789012345678901234567890,"y":', 1),
    lambda text: text.replace('"variant":', '"variant":"nope","variant":', 1),
    lambda text: text.replace('"variant":', '"variant":"control","variant":', 1),
    lambda text: text.replace('"variant":"control"', '"variant":"\\u0063ontrol"', 1),
    lambda text: text.replace('"user_id":"', '"user_id":"\\n', 1),
    lambda text: text.replace('"user_id":"', '"user_id":"\t', 1),
    lambda text: text.replace(",", ", ").replace('":', '": '),
    lambda text: text.replace("{", "{ /* c */ ", 1),
    lambda text: text.replace('"value":', '"value":Infinity,"z":', 1),
    lambda text: text.replace('"value":', '"value":1e999,"z":', 1),
    lambda text: text.replace('"value":', '"value":-0,"z":', 1),
    lambda text: text.replace('"value":', '"value":true,"z":', 1),
    lambda text: text.replace('"value":', '"value":"12","z":', 1),
    lambda text: text.replace('"timestamp":"', '"timestamp":"\\u0032', 1),
    lambda text: "\t " + text + " \r",
    lambda text: text + "\n",
    lambda text: text + "{}",
    lambda text: "",
    lambda text: text.replace("u", "ü", 1),
]


@st.composite
def plain_payloads(draw: st.DrawFn) -> bytes:
    """Valid events as a producer would write them, mostly; the timestamp now and then in a
    spelling that only validate() reads."""
    moment = draw(
        st.datetimes(min_value=datetime(2026, 11, 1), max_value=datetime(2026, 11, 21, 13))
    )
    event: dict[str, object] = {
        **GOOD,
        "event_id": draw(st.text(string.ascii_letters + "-é", min_size=1, max_size=5)),
        "variant": draw(st.sampled_from(["control", "treatment", "other"])),
        "user_id": draw(st.one_of(st.text(min_size=1, max_size=5), _strings)),
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
                st.floats(-2e12, 2e12),
                st.integers(-(10**13), 10**13),
                st.sampled_from([1e12, -1e12, 1_000_000_000_001, 1000000000000.0002, None, {}]),
            )
        )
    if draw(st.integers(0, 3)) == 0:
        event["properties"] = draw(st.sampled_from([None, {}, {"country": "DE"}, [], "", 0]))
    return orjson.dumps(event)


@st.composite
def messages(draw: st.DrawFn) -> bytes | None:
    raw = draw(st.one_of(payloads(), plain_payloads(), plain_payloads()))
    if raw is None or draw(st.integers(0, 3)):
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


def assert_the_batch_agrees(raws: list[bytes | None], checker: EventValidator) -> None:
    """validate_batch gives, message by message, what validate() gives."""
    offsets = [100 + i + i // 3 for i in range(len(raws))]
    columns = EventColumns()
    rejected = checker.validate_batch(raws, 2, offsets, columns)
    valid, refused = [], []
    for raw, offset in zip(raws, offsets, strict=True):
        outcome = checker.validate(raw)
        if isinstance(outcome, str):
            refused.append((2, offset, raw, outcome))
        else:
            valid.append((2, offset, outcome))
    assert rejected == refused
    assert columns.events() == valid


@settings(max_examples=400, deadline=None)
@given(raws=st.lists(messages(), min_size=1, max_size=60))
def test_a_batch_gets_validates_verdicts_and_values(raws: list[bytes | None]) -> None:
    assert_the_batch_agrees(raws, _CHECKER)


def _with(**fields: object) -> bytes:
    return orjson.dumps({**GOOD, **fields})


@pytest.mark.parametrize(
    "raw",
    [
        _with(timestamp="2026-11-21T24:00:00.000Z"),
        _with(timestamp="2026-11-21T10:15:30.12Z"),
        _with(timestamp="2026-11-21T13:00:00.000000Z"),  # NOW + the allowed skew: the last
        _with(timestamp="2026-11-21T13:00:00.000001Z"),
        _with(timestamp="2026-10-31T23:59:59.999999Z"),  # before the first window
        _with(event_id="x" * 256),
        _with(event_id="x" * 257),
        _with(event_id="é" * 256),
        _with(event_id="é" * 257),
        _with(user_id=""),
        _with(value=1e12),
        _with(value=-1e12),
        _with(value=1_000_000_000_001),
        _with(value=-1000000000000.0002),
        _with(value=123456789.123456789),
        _with(value=True),
        _with(properties={}),
        _with(properties=[]),
        _with(properties={"country": "DE"}),
        _with(test_id="other-test"),
        _with(extra={"nested": [1, 2]}),
        b'{"event_id":"e-1","event_id":"e-2",' + _with()[1:].replace(b'"event_id":"e-1",', b""),
        _with()[:-1] + b',"value":12345678901234567890}',
        _with()[:-1] + b',"value":1E+2}',
        _with()[:-1] + b',"value":NaN}',
        b" " + _with() + b" ",
        b"",
        None,
    ],
)
def test_each_edge_in_a_batch_gets_validates_verdict(raw: bytes | None) -> None:
    # Alone, and among plain events (a batch that msgspec decodes whole but for it).
    assert_the_batch_agrees([raw], _CHECKER)
    assert_the_batch_agrees([_with(event_id="before"), raw, _with(event_id="after")], _CHECKER)


def test_a_plain_batch_is_checked_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the batch: the usual events never reach the per-message validator; those
    it refuses (unknown variant, outside the accepted range) still get validate()'s reason."""
    checker = validator()
    rng = random.Random(5)
    raws = [
        _with(
            event_id=f"e-{i}",
            variant=rng.choice(["control", "treatment", "other"]),
            timestamp=f"2026-11-21T{rng.randrange(14):02d}:{rng.randrange(60):02d}:00.123Z",
            value=rng.choice([None, rng.uniform(-1e12, 1e12), rng.randrange(10**12)]),
        )
        for i in range(3000)
    ]
    seen: list[bytes | None] = []
    one_by_one = checker.validate_into

    def recorded(raw: bytes | None, *args: object) -> str | None:
        seen.append(raw)
        return one_by_one(raw, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(checker, "validate_into", recorded)
    assert_the_batch_agrees(raws, checker)
    refused = [raw for raw in raws if isinstance(checker.validate(raw), str)]
    assert 0 < len(seen) == len(refused) < len(raws) // 2
    # Two messages msgspec refuses: only their parts of the batch go message by message.
    seen.clear()
    odd = [*raws[:1000], _with()[:-1] + b',"value":NaN}', *raws[1000:2000], None, *raws[2000:]]
    assert_the_batch_agrees(odd, checker)
    assert len(seen) <= len(refused) + 2 * events._SUB_BATCH
