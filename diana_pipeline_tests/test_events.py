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
