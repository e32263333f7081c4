"""diana_pipeline.stats.srm: the sample ratio mismatch test against scipy's chi-square, its
zero-weight and no-data cases, and its bad inputs; the anytime-valid e-process for moving
weights by hand (mpmath), its false-error rate and its power by simulation."""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest
from scipy import stats as scipy_stats

from diana_pipeline import stats


def test_srm_pvalue_matches_scipy_chisquare() -> None:
    counts, weights = [5000, 5300], [0.5, 0.5]
    assert stats.srm_pvalue(counts, weights) == pytest.approx(
        scipy_stats.chisquare(counts, [5150, 5150]).pvalue, rel=1e-12
    )
    counts3, weights3 = [2000, 3100, 4900], [0.2, 0.3, 0.5]
    assert stats.srm_pvalue(counts3, weights3) == pytest.approx(
        scipy_stats.chisquare(counts3, [2000, 3000, 5000]).pvalue, rel=1e-12
    )


def test_srm_pvalue_zero_weights_and_no_data() -> None:
    # A zero-weight arm without exposures is left out (1 degree of freedom, not 2).
    assert stats.srm_pvalue([5000, 0, 5300], [0.5, 0.0, 0.5]) == pytest.approx(
        stats.srm_pvalue([5000, 5300], [0.5, 0.5]), rel=1e-12
    )
    # Any exposure on an arm that should get none contradicts the allocation.
    assert stats.srm_pvalue([5000, 1, 5000], [0.5, 0.0, 0.5]) == 0.0
    assert stats.srm_pvalue([0, 0], [0.5, 0.5]) == 1.0
    many = stats.srm_pvalue([[5000, 5000], [5000, 6000]], [0.5, 0.5])
    assert many.shape == (2,) and many[0] == 1.0 and many[1] < 1e-10


def test_srm_pvalue_bad_inputs() -> None:
    with pytest.raises(ValueError, match="counts has shape"):
        stats.srm_pvalue([1, 2, 3], [0.5, 0.5])
    with pytest.raises(ValueError, match="counts must be finite and ≥ 0"):
        stats.srm_pvalue([1, -2], [0.5, 0.5])
    with pytest.raises(ValueError, match="need at least 2 arms with a positive weight"):
        stats.srm_pvalue([1, 2], [1.0, 0.0])


def test_srm_e_values_by_hand() -> None:
    """Two periods worked out with mpmath: the first has no past, so q = w and e = 1; the
    second tilts its weights by the first's observed/expected ratios (6/5, 4/5), each shrunk
    by 20 pseudo-users."""
    counts = [[6, 4], [3, 7]]
    weights = [[0.5, 0.5], [0.2, 0.8]]
    mp.mp.dps = 30
    ratio = [(mp.mpf(6) + 20) / (mp.mpf(5) + 20), (mp.mpf(4) + 20) / (mp.mpf(5) + 20)]
    w = [mp.mpf("0.2"), mp.mpf("0.8")]
    total = w[0] * ratio[0] + w[1] * ratio[1]
    q = [w[0] * ratio[0] / total, w[1] * ratio[1] / total]
    second = (q[0] / w[0]) ** 3 * (q[1] / w[1]) ** 7
    assert stats.srm_e_values(counts, weights) == pytest.approx([1.0, float(second)], rel=1e-12)
    assert stats.srm_anytime_pvalue(counts, weights) == pytest.approx(min(1.0, 1 / float(second)))


def test_srm_e_values_zero_weight_and_bad_inputs() -> None:
    # Users in an arm whose weight was 0: a mismatch beyond doubt, from then on.
    e = stats.srm_e_values([[5, 5], [3, 1], [5, 5]], [[0.5, 0.5], [1.0, 0.0], [0.5, 0.5]])
    assert e[0] == 1.0 and np.isinf(e[1]) and np.isinf(e[2])
    assert stats.srm_anytime_pvalue([[5, 5], [3, 1]], [[0.5, 0.5], [1.0, 0.0]]) == 0.0
    with pytest.raises(ValueError, match="shape"):
        stats.srm_e_values([1, 2], [0.5, 0.5])
    with pytest.raises(ValueError, match="all be zero"):
        stats.srm_e_values([[1, 2]], [[0.0, 0.0]])


def simulate_periods(rng: np.random.Generator, tilt: float, periods: int = 200, users: int = 60):
    """Periods of a bandit whose weights move (Dirichlet draws, three arms): users assigned by
    the weights, except that arm 0's share is multiplied by `tilt` (1: no mismatch)."""
    weights = rng.dirichlet([4.0, 4.0, 4.0], size=periods)
    actual = weights * np.array([tilt, 1.0, 1.0])
    actual /= actual.sum(axis=1, keepdims=True)
    counts = np.array([rng.multinomial(users, p) for p in actual])
    return counts, weights


def test_srm_e_process_is_anytime_valid_with_moving_weights() -> None:
    """Under no mismatch, the share of 2,000 simulated bandits whose e-process ever reaches
    1/α, looked at after each of 200 periods, stays below α = 0.05 (Ville's bound)."""
    rng = np.random.default_rng(20261202)
    reps, alpha = 2000, 0.05
    rejected = sum(
        stats.srm_anytime_pvalue(*simulate_periods(rng, tilt=1.0)) <= alpha for _ in range(reps)
    )
    rate = rejected / reps
    assert rate <= alpha, f"false SRM errors in {rate:.1%} of runs"


def test_srm_e_process_finds_a_real_mismatch() -> None:
    """Arm 0 gets 15% fewer users than its weights say: found at p < 0.001 in nearly every
    run of 12,000 users (at least 95% of 200)."""
    rng = np.random.default_rng(7)
    found = sum(
        stats.srm_anytime_pvalue(*simulate_periods(rng, tilt=0.85)) < 0.001 for _ in range(200)
    )
    assert found >= 190, f"found in {found} of 200 runs"
