"""diana_pipeline.stats.normal against independent references (diana_pipeline/harness/
stats_references.py): for two arms the closed forms at 30 digits, for more mpmath's quadrature
over its normal CDF at 20."""

from __future__ import annotations

import numpy as np
import pytest

from diana_pipeline import stats
from diana_pipeline.harness.stats_references import (
    mpmath_normal_expected_loss,
    mpmath_normal_prob_best,
    normal_two_arms,
)

TOLERANCE = 1e-6  # the contract

PAIRS = [
    (0.0, 1.0, 0.1, 1.0),
    (10.0, 0.2, 10.5, 0.3),
    (1e6, 0.5, 1e6 + 1, 2.0),  # a mean far from 0 with a small spread
    (0.0, 1e-6, 0.0, 1.0),  # one arm a million times narrower
    (-3.0, 0.1, 2.0, 5.0),
    (4.0, 1.0, -4.0, 1.0),  # a clear loser
]

MANY = [
    ([1.0, 1.1, 0.9], [0.1, 0.2, 0.05]),
    ([0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]),
    ([5.0, 5.01, 4.99, 5.02], [0.01, 0.01, 0.02, 0.005]),
]


@pytest.mark.parametrize(("m1", "s1", "m2", "s2"), PAIRS)
def test_two_arms_match_the_closed_forms(m1: float, s1: float, m2: float, s2: float) -> None:
    best, loss = stats.prob_best_and_expected_loss_normal([m1, m2], [s1, s2])
    second_best, loss_of_first = normal_two_arms(m1, s1, m2, s2)
    assert best[1] == pytest.approx(second_best, abs=TOLERANCE)
    scale = max(s1, s2)
    assert loss[0] == pytest.approx(loss_of_first, abs=TOLERANCE * scale)
    # Choosing arm 2 gives up E[(X1 − X2)⁺] = E[(X2 − X1)⁺] − (μ2 − μ1).
    assert loss[1] == pytest.approx(loss_of_first - (m2 - m1), abs=TOLERANCE * scale)


@pytest.mark.parametrize(("means", "sds"), MANY)
def test_many_arms_match_mpmath(means: list[float], sds: list[float]) -> None:
    best, loss = stats.prob_best_and_expected_loss_normal(means, sds)
    np.testing.assert_allclose(best, mpmath_normal_prob_best(means, sds), rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(
        loss, mpmath_normal_expected_loss(means, sds), rtol=0, atol=TOLERANCE * max(sds)
    )


def test_many_tests_at_once_equal_each_alone() -> None:
    means = np.array([[m1, m2] for m1, _, m2, _ in PAIRS])
    sds = np.array([[s1, s2] for _, s1, _, s2 in PAIRS])
    best = stats.prob_best_normal(means, sds)
    loss = stats.expected_loss_normal(means, sds)
    for row in range(len(means)):
        np.testing.assert_allclose(best[row], stats.prob_best_normal(means[row], sds[row]))
        np.testing.assert_allclose(loss[row], stats.expected_loss_normal(means[row], sds[row]))


@pytest.mark.parametrize(
    ("means", "sds", "message"),
    [
        ([0, 1], [1, 0], "sd must be > 0"),
        ([0, np.inf], [1, 1], "mean must be finite"),
        ([0, 1], [1, np.nan], "sd must be finite"),
        ([[0, 1]], [[1, 1], [1, 1]], "means has shape"),
    ],
)
def test_bad_parameters_are_refused(means, sds, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stats.prob_best_normal(means, sds)
