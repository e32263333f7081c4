"""Assigning users to variants: deterministic, by a hash of (test, user), in proportion to
weights (the configured allocation, or a bandit's published one).

A user's place in a test is `assignment_point(test_id, user_id)`, a uniform number in
[0, 1) fixed by the pair; the variant is the one whose slice of [0, 1) holds it. With fixed
weights every producer and every run puts the same user in the same variant. When the
weights move (a bandit), the slices move and some users' points fall into another variant:
a client keeps users where they were first put by remembering its assignments
(`StickyAssignments`, which the traffic generator uses) or by storing each user's variant
with the user (a cookie, a profile field) and asking `assign` only for new users.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_right
from collections.abc import Mapping
from itertools import accumulate

from diana_pipeline.config import ExperimentTest

_HASH_SCALE = float(2**64)


def assignment_point(test_id: str, user_id: str) -> float:
    """A uniform number in [0, 1) fixed by (test, user): the user's place in the allocation."""
    digest = hashlib.blake2b(f"{test_id}\x1f{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SCALE


class VariantAssigner:
    """Maps users to the variants of one test in proportion to weights, in the given order
    (by default the test's configured allocation). Weights need not sum to 1."""

    def __init__(self, test: ExperimentTest, weights: Mapping[str, float] | None = None) -> None:
        self.test_id = test.test_id
        self.names = [v.name for v in test.variants]
        chosen = weights if weights is not None else {v.name: v.allocation for v in test.variants}
        self._bounds = _bounds(self.test_id, [chosen.get(name, 0.0) for name in self.names])

    def variant_index(self, user_id: str) -> int:
        point = assignment_point(self.test_id, user_id)
        # Zero-weight variants have empty intervals and are never chosen.
        return min(bisect_right(self._bounds, point), len(self.names) - 1)

    def variant(self, user_id: str) -> str:
        return self.names[self.variant_index(user_id)]


def assign(test_id: str, user_id: str, weights: Mapping[str, float]) -> str:
    """The variant of `weights` (name → weight, in the mapping's order) whose slice holds the
    user's assignment point. Deterministic; not sticky by itself (see the module)."""
    names = list(weights)
    bounds = _bounds(test_id, [weights[name] for name in names])
    return names[min(bisect_right(bounds, assignment_point(test_id, user_id)), len(names) - 1)]


class StickyAssignments:
    """A client's memory of its assignments: a user keeps the variant of their first
    assignment in a test, whatever the weights later say."""

    def __init__(self) -> None:
        self._first: dict[tuple[str, str], str] = {}

    def variant(self, test_id: str, user_id: str, weights: Mapping[str, float]) -> str:
        key = (test_id, user_id)
        if key not in self._first:
            self._first[key] = assign(test_id, user_id, weights)
        return self._first[key]

    def __len__(self) -> int:
        return len(self._first)


def _bounds(test_id: str, weights: list[float]) -> list[float]:
    """Cumulative upper bounds of the weights' slices of [0, 1); the last one forced to 1
    against rounding."""
    if not weights or any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(
            f"{test_id}: weights must be finite, non-negative and not all zero, got {weights}"
        )
    total = sum(weights)
    bounds = [bound / total for bound in accumulate(weights)]
    bounds[-1] = 1.0
    return bounds
