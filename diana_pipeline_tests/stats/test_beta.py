"""diana_pipeline.stats.beta against high-precision references
(diana_pipeline/harness/stats_references.py: mpmath, the exact finite sum for integer alpha,
adaptive quad over Boost's incomplete beta at 1e4-1e8 trials, itself checked against mpmath
where both run) and against a seeded Monte Carlo within 4 standard errors."""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest
from scipy import integrate, special
from scipy import stats as scipy_stats

from diana_pipeline import stats
from diana_pipeline.harness.stats_references import (
    exact_sum_b_beats_a,
    logit_expected_loss,
    logit_prob_superiority,
    mpmath_expected_loss,
    mpmath_lift_cdf,
    mpmath_prob_best,
    quad_expected_loss,
    quad_prob_best,
)

TOLERANCE = 1e-6  # the contract; measured errors are ~1e-11 and below


# ---- prob_best and expected_loss against the references ----------------------------------

SMALL_AND_JEFFREYS = [
    ([3, 5, 4], [10, 9, 12]),
    ([0.5, 0.5], [0.5, 0.5]),
    ([0.5, 1.5], [0.5, 0.5]),
    ([0.5, 0.7, 2.5], [0.9, 0.5, 1.5]),
    ([0.5, 0.5, 0.5], [0.5, 2, 8]),
    ([0.5, 200], [0.5, 800]),  # a Jeffreys prior against real data: the hardest layout case
    ([0.8, 20], [0.5, 30]),
    ([0.5, 1, 2, 4, 8, 16], [16, 8, 4, 2, 1, 0.5]),
]

HUGE = [
    ([1200, 1260, 1190, 1230], [8800, 8740, 8810, 8770]),
    ([3.5e6, 3.5012e6], [6.5e6, 6.4988e6]),
    ([3.5e7, 3.50012e7, 3.49995e7], [6.5e7, 6.49988e7, 6.50005e7]),
    ([1e8, 1e8], [1e8, 1.0001e8]),
    ([5e7, 40], [5e7, 60]),  # 1e8 trials against 100
    ([30, 1e6], [70, 2.3e6]),
]


@pytest.mark.parametrize(("alphas", "betas"), SMALL_AND_JEFFREYS)
def test_prob_best_matches_mpmath(alphas: list[float], betas: list[float]) -> None:
    result = stats.prob_best(alphas, betas)
    np.testing.assert_allclose(result, mpmath_prob_best(alphas, betas), rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize(("alphas", "betas"), SMALL_AND_JEFFREYS[:5])
def test_expected_loss_matches_mpmath(alphas: list[float], betas: list[float]) -> None:
    np.testing.assert_allclose(
        stats.expected_loss(alphas, betas), mpmath_expected_loss(alphas, betas), rtol=0, atol=1e-9
    )


@pytest.mark.parametrize(
    ("alpha_a", "beta_a", "alpha_b", "beta_b"),
    [(1, 1, 1, 1), (11, 91, 15, 87), (120, 880, 140, 860), (1801, 8201, 1901, 8101)],
)
def test_prob_superiority_matches_the_exact_finite_sum(
    alpha_a: int, beta_a: int, alpha_b: int, beta_b: int
) -> None:
    expected = exact_sum_b_beats_a(alpha_a, beta_a, alpha_b, beta_b)
    assert stats.prob_superiority(alpha_b, beta_b, alpha_a, beta_a) == pytest.approx(
        expected, abs=TOLERANCE
    )


def test_the_huge_count_reference_agrees_with_mpmath_where_both_run() -> None:
    alphas, betas = [40, 46, 43], [160, 154, 158]
    np.testing.assert_allclose(
        quad_prob_best(alphas, betas), mpmath_prob_best(alphas, betas), rtol=0, atol=1e-12
    )


@pytest.mark.parametrize(("alphas", "betas"), HUGE)
def test_prob_best_at_huge_counts(alphas: list[float], betas: list[float]) -> None:
    result = stats.prob_best(alphas, betas)
    np.testing.assert_allclose(result, quad_prob_best(alphas, betas), rtol=0, atol=TOLERANCE)
    assert np.all(np.isfinite(result))


@pytest.mark.parametrize(("alphas", "betas"), HUGE)
def test_expected_loss_at_huge_counts(alphas: list[float], betas: list[float]) -> None:
    result = stats.expected_loss(alphas, betas)
    reference = quad_expected_loss(alphas, betas)
    np.testing.assert_allclose(result, reference, rtol=1e-6, atol=1e-12)
    assert np.all(result >= 0)


def test_agreement_with_a_seeded_monte_carlo() -> None:
    alphas = np.array([121.0, 135.0, 128.0, 110.0])
    betas = np.array([880.0, 866.0, 873.0, 891.0])
    draws = 400_000
    rng = np.random.default_rng(20261121)
    samples = rng.beta(alphas, betas, size=(draws, 4))
    winners = np.bincount(samples.argmax(axis=1), minlength=4) / draws
    standard_error = np.sqrt(winners * (1 - winners) / draws)
    assert np.all(np.abs(stats.prob_best(alphas, betas) - winners) < 4 * standard_error)
    losses = samples.max(axis=1)[:, None] - samples
    loss_error = losses.std(axis=0) / np.sqrt(draws)
    assert np.all(np.abs(stats.expected_loss(alphas, betas) - losses.mean(axis=0)) < 4 * loss_error)


# ---- shapes, symmetry, edge cases --------------------------------------------------------


def test_many_tests_at_once_keep_their_shape_and_match_one_by_one() -> None:
    rng = np.random.default_rng(7)
    trials = rng.integers(10, 10**6, size=(300, 1)).astype(float)
    rates = rng.uniform(0.01, 0.6, size=(300, 1)) * rng.uniform(0.95, 1.05, size=(300, 4))
    alphas = 1 + np.round(trials * rates)
    betas = 1 + trials - np.round(trials * rates)
    best, loss = stats.prob_best_and_expected_loss(alphas, betas)
    assert best.shape == loss.shape == (300, 4)
    for row in (11, 222):  # against the adaptive-quadrature reference, not the rows' sum
        np.testing.assert_allclose(
            best[row], quad_prob_best(alphas[row], betas[row]), rtol=0, atol=TOLERANCE
        )
    for row in (0, 137, 299):
        np.testing.assert_allclose(best[row], stats.prob_best(alphas[row], betas[row]), atol=1e-14)
        np.testing.assert_allclose(
            loss[row], stats.expected_loss(alphas[row], betas[row]), atol=1e-15
        )


@pytest.mark.parametrize("arms", [2, 3, 5, 8])
def test_symmetric_arms_get_equal_shares(arms: int) -> None:
    for alpha, beta in [(0.5, 0.5), (1, 1), (37, 963), (4e7, 6e7)]:
        result = stats.prob_best([alpha] * arms, [beta] * arms)
        np.testing.assert_allclose(result, 1 / arms, atol=1e-12)
        losses = stats.expected_loss([alpha] * arms, [beta] * arms)
        assert np.ptp(losses) < 1e-15 + 1e-9 * losses.max()


def test_prior_only_gives_no_preference() -> None:
    np.testing.assert_allclose(stats.prob_best([1, 1], [1, 1]), [0.5, 0.5], atol=1e-15)
    # E[max(U1, U2)] − E[U] = 2/3 − 1/2 for two uniform priors.
    np.testing.assert_allclose(stats.expected_loss([1, 1], [1, 1]), [1 / 6, 1 / 6], atol=1e-12)


def test_one_dominant_arm() -> None:
    best, loss = stats.prob_best_and_expected_loss([900, 100, 120], [100, 900, 880])
    assert best[0] == pytest.approx(1.0, abs=1e-15)
    assert loss[0] == pytest.approx(0.0, abs=1e-15)
    np.testing.assert_allclose(loss[1:], [0.8, 0.78], atol=1e-6)  # the difference of means


def test_a_uniform_arm_against_data_has_a_closed_form() -> None:
    # P(U > p) = E[1 − p] for U ~ Beta(1, 1) and p ~ Beta(300, 700).
    assert stats.prob_superiority(1, 1, 300, 700) == pytest.approx(0.7, abs=1e-12)


def test_extremes_stay_finite_and_deterministic() -> None:
    alphas = np.array([[0.5, 1e8], [1e8, 1e8], [0.5, 0.5], [1e8, 0.5]])
    betas = np.array([[1e8, 0.5], [1e8, 1e8], [1e8, 1e8], [0.5, 1e8]])
    first = stats.prob_best_and_expected_loss(alphas, betas)
    second = stats.prob_best_and_expected_loss(alphas, betas)
    for a, b in zip(first, second, strict=True):
        assert np.all(np.isfinite(a))
        assert np.array_equal(a, b)
    assert first[0][0, 1] == pytest.approx(1.0)  # Beta(1e8, 0.5) beats Beta(0.5, 1e8)


def test_prob_superiority_broadcasts() -> None:
    result = stats.prob_superiority([401, 10, 50], [601, 10, 50], 351, [651, 10, 50])
    assert result.shape == (3,)
    for i, (aa, ba, bb) in enumerate([(401, 601, 651), (10, 10, 10), (50, 50, 50)]):
        assert result[i] == stats.prob_superiority(aa, ba, 351, bb)
    assert result[0] == pytest.approx(1 - stats.prob_superiority(351, 651, 401, 601), abs=1e-12)
    assert isinstance(stats.prob_superiority(2, 3, 3, 2), float)


# ---- intervals ---------------------------------------------------------------------------


@pytest.mark.parametrize(("alpha", "beta"), [(0.5, 0.5), (3, 9), (351, 651), (3.5e7, 6.5e7)])
def test_credible_interval_is_equal_tailed(alpha: float, beta: float) -> None:
    low, high = stats.credible_interval(alpha, beta, level=0.95)
    assert 0 <= low < high <= 1
    if alpha + beta < 1e4:
        with mp.workdps(25):
            assert float(mp.betainc(alpha, beta, 0, low, regularized=True)) == pytest.approx(
                0.025, abs=1e-12
            )
            assert float(mp.betainc(alpha, beta, 0, high, regularized=True)) == pytest.approx(
                0.975, abs=1e-12
            )
    else:
        assert special.betainc(alpha, beta, [low, high]) == pytest.approx([0.025, 0.975], abs=1e-10)


def test_credible_interval_vectorises() -> None:
    low, high = stats.credible_interval(np.array([1.0, 500.0]), np.array([1.0, 500.0]), level=0.9)
    np.testing.assert_allclose(low[0], 0.05, atol=1e-14)
    np.testing.assert_allclose(high[0], 0.95, atol=1e-14)
    assert low[1] < 0.5 < high[1]


def quad_lift_cdf(ac: float, bc: float, av: float, bv: float, lift: float) -> float:
    """P(p_v / p_c − 1 ≤ lift) = ∫ f_c(x) F_v((1 + lift) x) dx, by adaptive quad."""
    points = special.betaincinv(ac, bc, [1e-8, 0.01, 0.5, 0.99, 1 - 1e-8])
    value, _ = integrate.quad(
        lambda x: (
            scipy_stats.beta.pdf(x, ac, bc) * special.betainc(av, bv, min((1 + lift) * x, 1.0))
        ),
        0,
        1,
        points=points,
        limit=500,
        epsabs=1e-13,
    )
    return value


@pytest.mark.parametrize(
    ("ac", "bc", "av", "bv"),
    [(351, 651, 401, 601), (35, 65, 55, 45), (3.5, 7.5, 5.5, 5.5), (3.5e6, 6.5e6, 3.52e6, 6.48e6)],
)
def test_uplift_interval_holds_its_probability(ac: float, bc: float, av: float, bv: float) -> None:
    low, high = stats.uplift_interval(ac, bc, av, bv)
    assert low < high
    assert quad_lift_cdf(ac, bc, av, bv, low) == pytest.approx(0.025, abs=1e-7)
    assert quad_lift_cdf(ac, bc, av, bv, high) == pytest.approx(0.975, abs=1e-7)


def test_uplift_interval_against_a_uniform_control_is_exact_for_many_cases_at_once() -> None:
    # With p_c ~ U(0, 1): P(p_v / p_c ≤ 1 + r) = 1 − E[p_v] / (1 + r) whenever p_v ≤ 1 + r
    # surely, so the 97.5% quantile of the lift is E[p_v] / 0.025 − 1, exactly.
    av = np.array([3.0, 150.0, 2e4, 3.5e6])
    bv = np.array([7.0, 850.0, 3e4, 6.5e6])
    low, high = stats.uplift_interval(np.ones(4), np.ones(4), av, bv)
    np.testing.assert_allclose(high, av / (av + bv) / 0.025 - 1, rtol=1e-8)
    # One call for many cases (a backfill's windows) gives what a call per case gives.
    for k in range(4):
        np.testing.assert_allclose(
            (low[k], high[k]), stats.uplift_interval(1, 1, av[k], bv[k]), rtol=1e-12
        )


def test_uplift_interval_agrees_with_monte_carlo() -> None:
    rng = np.random.default_rng(11)
    control = rng.beta(120, 880, size=1_000_000)
    variant = rng.beta(150, 850, size=1_000_000)
    expected = np.quantile(variant / control - 1, [0.025, 0.975])
    np.testing.assert_allclose(stats.uplift_interval(120, 880, 150, 850), expected, rtol=0.01)


# ---- bad input ---------------------------------------------------------------------------

BAD_ARMS = [
    (([1, 0], [1, 1]), r"every alpha must be ≥ 0\.01"),
    (([1, -2], [1, 1]), r"every alpha must be ≥ 0\.01"),
    (([1, 1], [1, 0]), r"every beta must be ≥ 0\.01"),
    (([1, 1e-200], [1, 1]), r"every alpha must be ≥ 0\.01"),
    (([1, 1], [1, 0.009]), r"every beta must be ≥ 0\.01"),
    ((np.ones((0, 2)), np.ones((0, 2))), "no cases"),
    (([1, np.nan], [1, 1]), "every alpha must be finite"),
    (([1, 1], [1, np.inf]), "every beta must be finite"),
    (([1, 1, 1], [1, 1]), r"alphas has shape \(3,\) but betas has shape \(2,\)"),
    (([1], [1]), "need at least 2 arms, got 1"),
    ((np.ones((2, 2, 2)), np.ones((2, 2, 2))), r"expected shape \(K,\) or \(T, K\)"),
]


@pytest.mark.parametrize(("arms", "message"), BAD_ARMS)
def test_bad_arms_raise_value_error(arms: tuple, message: str) -> None:
    for function in (stats.prob_best, stats.expected_loss, stats.thompson_allocation):
        with pytest.raises(ValueError, match=message):
            function(*arms)


def test_bad_interval_and_superiority_inputs() -> None:
    with pytest.raises(ValueError, match=r"every alpha must be ≥ 0\.01"):
        stats.credible_interval(0, 1)
    with pytest.raises(ValueError, match="level must be between 0 and 1"):
        stats.credible_interval(1, 1, level=1.5)
    with pytest.raises(ValueError, match="every beta must be finite"):
        stats.prob_superiority(1, np.nan, 1, 1)
    with pytest.raises(ValueError, match=r"every alpha must be ≥ 0\.01"):
        stats.uplift_interval(1, 1, -1, 1)


# ---- small priors, against mpmath references --------------------------------------------------

SMALL_PRIORS = [
    # (α0, β0, α1, β1): the audit's cases, and priors down to the smallest accepted
    (0.01, 0.01, 0.01, 0.01),
    (0.1, 0.3, 0.2, 0.1),
    (0.01, 100.01, 3.01, 97.01),
    (0.01, 5.0, 0.3, 0.02),
    (0.05, 0.05, 1.0, 1.0),
    (20.0, 2000.0, 0.05, 0.05),
]


@pytest.mark.parametrize("arms", SMALL_PRIORS)
def test_small_priors_are_exact_to_1e_6(arms: tuple[float, float, float, float]) -> None:
    """With α or β below about 0.4 the quadrature used to miss the mass near x = 0 and 1:
    Beta(0.01, 0.01) against itself gave a loss of 0.192 instead of 0.2499."""
    a0, b0, a1, b1 = arms
    best = stats.prob_best([a0, a1], [b0, b1])
    loss = stats.expected_loss([a0, a1], [b0, b1])
    want_best = float(logit_prob_superiority(a1, b1, a0, b0))
    want_loss = [float(v) for v in logit_expected_loss(a0, b0, a1, b1)]
    assert abs(best[1] - want_best) < 1e-6 and abs(best[0] - (1 - want_best)) < 1e-6
    np.testing.assert_allclose(loss, want_loss, rtol=0, atol=1e-6)
    superiority = stats.prob_superiority(a1, b1, a0, b0)
    assert abs(superiority - want_best) < 1e-6


def test_the_lift_of_two_uniform_priors_is_exact() -> None:
    """p_v / p_c for two uniforms has CDF z / 2 below 1 and 1 − 1 / (2z) above: its 2.5% and
    97.5% points are 0.05 and 20, a lift of −0.95 and +19. The kink of the ratio's CDF used
    to put the upper end at 18.907."""
    low, high = stats.uplift_interval(1, 1, 1, 1)
    assert low == pytest.approx(-0.95, abs=1e-7) and high == pytest.approx(19.0, rel=1e-7)


@pytest.mark.parametrize(
    "arms",
    [
        (0.5, 0.5, 0.5, 0.5),
        (1, 1, 5, 3),
        (5, 3, 1, 1),
        (0.01, 100.01, 3.01, 97.01),
        (2, 30, 0.5, 9),
    ],
)
def test_lift_interval_ends_hold_their_tail_mass(arms: tuple[float, ...]) -> None:
    """At each end of the interval, mpmath's CDF of the lift (split at its kink) gives the
    tail it should: 2.5% and 97.5%."""
    low, high = stats.uplift_interval(*arms)
    assert float(mpmath_lift_cdf(*arms, low)) == pytest.approx(0.025, abs=1e-6)
    assert float(mpmath_lift_cdf(*arms, high)) == pytest.approx(0.975, abs=1e-6)
