"""Assignment: deterministic, in proportion to the weights, sticky when a client remembers."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from diana_pipeline.assignment import StickyAssignments, VariantAssigner, assign
from diana_pipeline.config import ExperimentTest, Variant


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


def test_assign_follows_any_weights_and_agrees_with_the_configured_assigner() -> None:
    test = make_test({"control": 0.5, "treatment": 0.5})
    users = [f"u{i}" for i in range(2000)]
    configured = VariantAssigner(test)
    assert [assign("t", u, {"control": 0.5, "treatment": 0.5}) for u in users] == [
        configured.variant(u) for u in users
    ]
    # Weights that need not sum to 1, as a bandit publishes them: shares within 4 SE.
    weights = {"a": 2.0, "b": 1.0, "c": 1.0}
    count = 100_000
    counts = Counter(assign("bandit", f"u{i}", weights) for i in range(count))
    for name, weight in weights.items():
        share = weight / 4.0
        assert abs(counts[name] / count - share) <= 4 * np.sqrt(share * (1 - share) / count)


def test_remembered_assignments_keep_users_where_they_were_first_put() -> None:
    sticky = StickyAssignments()
    users = [f"u{i}" for i in range(5000)]
    before = {u: sticky.variant("t", u, {"control": 0.5, "treatment": 0.5}) for u in users}
    moved = {"control": 0.1, "treatment": 0.9}
    # Without memory two fifths of the users (points in [0.1, 0.5)) would change variant...
    changed = sum(assign("t", u, moved) != before[u] for u in users)
    assert changed > 0.3 * len(users)
    # ...with it, nobody does, and new users follow the new weights.
    assert all(sticky.variant("t", u, moved) == before[u] for u in users)
    newcomers = Counter(sticky.variant("t", f"new{i}", moved) for i in range(5000))
    assert newcomers["treatment"] > 0.85 * 5000
    assert len(sticky) == 10_000


@pytest.mark.parametrize(
    "weights", [{"a": -0.1, "b": 1.0}, {"a": 0.0, "b": 0.0}, {"a": float("nan"), "b": 1.0}, {}]
)
def test_bad_weights_are_named(weights) -> None:
    with pytest.raises(ValueError, match="t: weights must be finite, non-negative"):
        assign("t", "u1", weights)
