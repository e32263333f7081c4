"""The normal mSPRT on the relative lift against references computed another way: the mixture
likelihood ratio integrated numerically, and coverage measured by simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as scipy_stats

from diana_pipeline import stats


def mixture_ratio_by_quadrature(lift: float, variance: float, tau: float) -> float:
    """∫ N(L; θ, V) / N(L; 0, V) · N(θ; 0, τ²) dθ, numerically."""

    def integrand(theta: float) -> float:
        ratio = np.exp((2 * theta * lift - theta**2) / (2 * variance))
        return ratio * scipy_stats.norm.pdf(theta, 0, tau)

    value, _ = integrate.quad(integrand, -20 * tau, 20 * tau, points=[lift], limit=200)
    return value


@pytest.mark.parametrize(
    ("means", "sds"),
    [([10.0, 10.4], [0.1, 0.12]), ([2.0, 1.9], [0.05, 0.05]), ([5.0, 5.0], [0.3, 0.2])],
)
def test_pvalue_is_the_inverse_of_the_mixture_ratio(means: list, sds: list) -> None:
    tau = 0.05
    lift, variance = stats.relative_lift(np.array(means), np.array(sds), 0)
    expected = min(1.0, 1.0 / mixture_ratio_by_quadrature(lift[1], variance[1], tau))
    p = stats.always_valid_pvalues_normal(means, sds, expected_lift=tau)
    assert np.isnan(p[0])
    assert p[1] == pytest.approx(expected, rel=1e-8)


def test_confidence_sequence_ends_are_where_the_test_rejects_at_its_level() -> None:
    """Shifting the lift estimate so that a bound becomes 0 gives a p-value of 1 − level."""
    means, sds, tau, level = np.array([10.0, 10.4]), np.array([0.1, 0.12]), 0.05, 0.95
    low, high = stats.lift_confidence_sequence_normal(means, sds, tau, level=level)
    lift, variance = stats.relative_lift(means, sds, 0)
    for bound in (low[1], high[1]):
        ratio = mixture_ratio_by_quadrature(lift[1] - bound, variance[1], tau)
        assert 1.0 / ratio == pytest.approx(1 - level, rel=1e-6)


def test_false_rejections_stay_below_alpha_over_continuous_looks() -> None:
    """No lift, 40 looks of growing samples per run: the share of runs ever rejected at
    α = 0.05 is not above α (the lower end of its 99% Clopper-Pearson interval is below)."""
    rng = np.random.default_rng(20261201)
    runs, looks, per_look, alpha = 2000, 40, 50, 0.05
    draws = rng.normal(10.0, 3.0, size=(runs, 2, looks * per_look))
    n = np.arange(1, looks + 1) * per_look
    sums = np.cumsum(draws, axis=2)[:, :, n - 1]
    squares = np.cumsum(draws**2, axis=2)[:, :, n - 1]
    means = sums / n
    sds = np.sqrt((squares - sums * means) / (n - 1) / n)
    p = stats.always_valid_pvalues_normal(
        means.transpose(0, 2, 1).reshape(-1, 2), sds.transpose(0, 2, 1).reshape(-1, 2), 0.05
    )[:, 1].reshape(runs, looks)
    rejected = (p <= alpha).any(axis=1).sum()
    lower = scipy_stats.beta.ppf(0.005, rejected, runs - rejected + 1) if rejected else 0.0
    assert lower < alpha, rejected / runs


def test_prob_lift_below_matches_simulated_arms() -> None:
    rng = np.random.default_rng(7)
    means, sds = np.array([20.0, 19.7]), np.array([0.2, 0.25])
    draws = rng.normal(means, sds, size=(400_000, 2))
    simulated = np.mean(draws[:, 1] / draws[:, 0] - 1 < -0.01)
    assert stats.prob_lift_below(means, sds, -0.01)[1] == pytest.approx(simulated, abs=0.01)
