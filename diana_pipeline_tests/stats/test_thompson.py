"""diana_pipeline.stats.thompson: the bandit's traffic weights keep their floor and follow
P(best), checked against mpmath's P(best)."""

from __future__ import annotations

import numpy as np
import pytest

from diana_pipeline import stats
from diana_pipeline.harness.stats_references import mpmath_prob_best


def test_thompson_allocation_keeps_the_floor_and_follows_p_best() -> None:
    alphas, betas = [10, 200, 190], [990, 800, 810]
    weights = stats.thompson_allocation(alphas, betas, floor=0.05)
    assert weights.min() >= 0.05 - 1e-15
    # w = floor + (1 − K · floor) · P(best), with P(best) from an independent reference.
    np.testing.assert_allclose(
        weights, 0.05 + (1 - 3 * 0.05) * mpmath_prob_best(alphas, betas), rtol=0, atol=1e-9
    )
    np.testing.assert_allclose(
        stats.thompson_allocation(alphas, betas, floor=0.0), stats.prob_best(alphas, betas)
    )
    assert weights[1] > weights[2] > weights[0]
    many = stats.thompson_allocation(np.ones((3, 4)), np.ones((3, 4)))
    np.testing.assert_allclose(many, 0.25)


def test_thompson_allocation_bad_floor() -> None:
    with pytest.raises(ValueError, match="floor must be between 0 and 1/K"):
        stats.thompson_allocation([1, 1, 1], [1, 1, 1], floor=0.4)
