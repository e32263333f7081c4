"""Event schema helpers: stable, allocation-true variant assignment and timestamps."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime

import numpy as np

from diana_pipeline.config import ExperimentTest, Variant
from diana_pipeline.events import TimestampFormatter, VariantAssigner, format_timestamp

ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def make_test(allocations: dict[str, float], test_id: str = "t") -> ExperimentTest:
    return ExperimentTest(
        test_id=test_id, variants=[Variant(name=n, allocation=a) for n, a in allocations.items()]
    )


def test_assignment_is_a_pure_function_of_test_and_user() -> None:
    first = VariantAssigner(make_test({"control": 0.5, "treatment": 0.5}))
    again = VariantAssigner(make_test({"control": 0.5, "treatment": 0.5}))
    users = [f"user-{i}" for i in range(1000)]
    assert [first.variant(u) for u in users] == [again.variant(u) for u in users]
    other_test = VariantAssigner(make_test({"control": 0.5, "treatment": 0.5}, test_id="other"))
    # Independent across tests: about half the users land differently.
    differ = sum(first.variant(u) != other_test.variant(u) for u in users)
    assert 400 < differ < 600


def test_assignment_follows_the_allocation() -> None:
    allocations = {"a": 0.2, "b": 0.3, "c": 0.5, "never": 0.0}
    assigner = VariantAssigner(make_test(allocations))
    users = 200_000
    counts = Counter(assigner.variant(f"u{i}") for i in range(users))
    assert counts["never"] == 0
    for name, share in allocations.items():
        standard_error = np.sqrt(share * (1 - share) / users)
        assert abs(counts[name] / users - share) <= 4 * standard_error + 1e-12


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

from diana_pipeline.config import load_config  # noqa: E402
from diana_pipeline.events import EventValidator, ValidEvent  # noqa: E402
from diana_pipeline_tests.conftest import REPO_ROOT  # noqa: E402

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
        (orjson.dumps({**GOOD, "test_id": "other-test"}), "unknown test 'other-test'"),
        (
            orjson.dumps({**GOOD, "variant": "purple"}),
            "unknown variant 'purple' of test 'button-color-test'",
        ),
        (orjson.dumps({**GOOD, "timestamp": "yesterday"}), "timestamp is not ISO-8601"),
        (orjson.dumps({**GOOD, "timestamp": "1970-01-01T00:00:00.000Z"}), "timestamp out of range"),
        (orjson.dumps({**GOOD, "timestamp": "2100-01-01T00:00:00.000Z"}), "timestamp out of range"),
    ],
)
def test_each_bad_message_has_its_reason(raw: bytes | None, reason: str) -> None:
    outcome = validator().validate(raw)
    assert isinstance(outcome, str)
    assert outcome.startswith(reason)
