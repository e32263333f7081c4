"""diana_pipeline.stats.gamma against independent references (diana_pipeline/harness/
stats_references.py): mpmath's quadrature over its regularized incomplete gamma at 20 digits
in log λ; at large shapes, where that does not converge, the closed form of two arms through
the Beta distribution and scipy's adaptive quad over Boost's incomplete gamma."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from diana_pipeline import stats
from diana_pipeline.harness.stats_references import (
    gamma_first_beats_second,
    mpmath_gamma_expected_loss,
    mpmath_gamma_prob_best,
    quad_gamma_expected_loss,
)

TOLERANCE = 1e-6  # the contract

CASES = [
    ([1, 2], [1, 1]),
    ([0.5, 3.5], [0.1, 0.9]),
    ([0.01, 1], [0.01, 1]),  # the smallest prior shape against one event
    ([0.01, 0.02], [0.01, 5]),  # two prior-like arms
    ([0.01, 3], [100, 1e-3]),  # rates far apart
    ([2, 5, 3], [1, 2, 1.5]),
    ([0.05, 0.5, 5], [0.2, 1, 3]),
    ([121, 141, 131], [1001, 1001, 991]),  # 0.12-0.14 events per user
]

LARGE = [
    ([3, 30001], [11, 100001]),  # 10 users against 100,000
    ([4001, 4100, 3950, 4020], [2001, 2001, 2001, 2001]),
    ([1e6, 1.001e6, 0.999e6], [1e6, 1e6, 1e6]),
]

HUGE_PAIRS = [
    (1e6, 1e6, 1.001e6, 1e6),
    (5e7, 1e8, 5.0005e7, 1e8),
    (2e8, 1e8, 3.0, 1.0),  # 1e8 users against one
]


@pytest.mark.parametrize(("shapes", "rates"), CASES)
def test_prob_best_matches_mpmath(shapes: list[float], rates: list[float]) -> None:
    np.testing.assert_allclose(
        stats.prob_best_gamma(shapes, rates),
        mpmath_gamma_prob_best(shapes, rates),
        rtol=0,
        atol=TOLERANCE,
    )


@pytest.mark.parametrize(("shapes", "rates"), CASES)
def test_expected_loss_matches_mpmath(shapes: list[float], rates: list[float]) -> None:
    expected = mpmath_gamma_expected_loss(shapes, rates)
    # Absolute, on the scale of the rates themselves.
    scale = max(s / r for s, r in zip(shapes, rates, strict=True))
    np.testing.assert_allclose(
        stats.expected_loss_gamma(shapes, rates), expected, rtol=0, atol=TOLERANCE * scale
    )


@pytest.mark.parametrize(("shapes", "rates"), LARGE)
def test_expected_loss_at_large_shapes_matches_quad(
    shapes: list[float], rates: list[float]
) -> None:
    scale = max(s / r for s, r in zip(shapes, rates, strict=True))
    np.testing.assert_allclose(
        stats.expected_loss_gamma(shapes, rates),
        quad_gamma_expected_loss(shapes, rates),
        rtol=0,
        atol=TOLERANCE * scale,
    )


@pytest.mark.parametrize(("a1", "b1", "a2", "b2"), HUGE_PAIRS)
def test_two_arms_match_the_closed_form_at_huge_counts(
    a1: float, b1: float, a2: float, b2: float
) -> None:
    best = stats.prob_best_gamma([a1, a2], [b1, b2])
    assert best[0] == pytest.approx(gamma_first_beats_second(a1, b1, a2, b2), abs=TOLERANCE)


# Two arms across every scale at once: shapes from the smallest prior to 3·10⁶ events, rates
# (users) from 0.01 to 10⁴, in every combination.
SHAPES = [0.01, 0.1, 0.5, 1, 3, 30, 300, 3e4, 3e6]
RATES = [0.01, 1, 100, 1e4]


def test_prob_best_matches_the_closed_form_across_scales() -> None:
    pairs = [
        (a1, b1, a2, b2)
        for a1, a2 in itertools.combinations_with_replacement(SHAPES, 2)
        for b1, b2 in itertools.product(RATES, RATES)
    ]
    cases = np.array(pairs)
    best = stats.prob_best_gamma(cases[:, [0, 2]], cases[:, [1, 3]])
    expected = np.array([gamma_first_beats_second(*pair) for pair in pairs])
    np.testing.assert_allclose(best[:, 0], expected, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize(
    ("a1", "a2"), list(itertools.combinations_with_replacement([0.01, 0.5, 3, 300, 3e4], 2))
)
def test_expected_loss_matches_quad_across_scales(a1: float, a2: float) -> None:
    for b1, b2 in itertools.product([0.01, 100], [0.01, 100]):
        scale = max(a1 / b1, a2 / b2)
        np.testing.assert_allclose(
            stats.expected_loss_gamma([a1, a2], [b1, b2]),
            quad_gamma_expected_loss([a1, a2], [b1, b2]),
            rtol=0,
            atol=TOLERANCE * scale,
            err_msg=f"Gamma({a1}, {b1}) against Gamma({a2}, {b2})",
        )


def test_many_tests_at_once_equal_each_alone() -> None:
    shapes = np.array([c[0][:2] for c in CASES], dtype=float)
    rates = np.array([c[1][:2] for c in CASES], dtype=float)
    best, loss = stats.prob_best_and_expected_loss_gamma(shapes, rates)
    assert best.shape == loss.shape == shapes.shape
    for row in range(len(shapes)):
        np.testing.assert_allclose(best[row], stats.prob_best_gamma(shapes[row], rates[row]))
        np.testing.assert_allclose(loss[row], stats.expected_loss_gamma(shapes[row], rates[row]))


@pytest.mark.parametrize(
    ("shapes", "rates", "message"),
    [
        ([1, 0.001], [1, 1], "shape must be ≥ 0.01"),
        ([1, 2], [1, 0], "rate must be > 0"),
        ([1, np.nan], [1, 1], "shape must be finite"),
        ([1, 2, 3], [1, 2], r"shapes has shape \(3,\) but rates has shape \(2,\)"),
        ([1], [1], "at least 2 arms"),
    ],
)
def test_bad_parameters_are_refused(shapes, rates, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stats.prob_best_gamma(shapes, rates)
