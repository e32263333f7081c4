"""Anytime-valid p-values and lift confidence sequences: known values against mpmath's
quadrature of the mixture (not the closed form the code uses), the guarantee under many looks
by simulation, and bad input."""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest
from scipy.stats import binomtest, norm

from diana_pipeline import stats

CASES = [
    # control conversions, arm conversions, allocation (control, arm), expected lift
    (100, 130, (0.5, 0.5), 0.05),
    (1000, 1100, (0.5, 0.5), 0.05),
    (50, 20, (0.3, 0.7), 0.10),
    (0, 5, (0.5, 0.5), 0.02),
    (4_000, 4_300, (0.2, 0.8), 0.05),
]


def mixture_e_value(s_control: int, s_arm: int, share: mp.mpf, lift: float, q0: mp.mpf) -> mp.mpf:
    """∫ q^s_arm (1 − q)^s_control dπ(q) / (q0^s_arm (1 − q0)^s_control), π the documented
    mixture (weights 0.8, 0.1, 0.1 on Betas with sd(log r) of 1, 4 and 16 × log(1 + lift),
    none wider than κ = 2), by quadrature in log space on panels around each component's
    peak (the integrand is a sharp one)."""
    mp.mp.dps = 40
    total = mp.mpf(0)
    for width, weight in ((1, mp.mpf("0.8")), (4, mp.mpf("0.1")), (16, mp.mpf("0.1"))):
        spread = width * mp.log(1 + mp.mpf(lift))
        kappa = max(1 / (share * (1 - share) * spread**2) - 1, 2)
        a, b = kappa * share, kappa * (1 - share)
        log_norm = mp.log(mp.beta(a, b)) + s_arm * mp.log(q0) + s_control * mp.log(1 - q0)

        def integrand(q: mp.mpf, a=a, b=b, log_norm=log_norm) -> mp.mpf:
            return mp.exp(
                (a - 1 + s_arm) * mp.log(q) + (b - 1 + s_control) * mp.log(1 - q) - log_norm
            )

        mode = (a - 1 + s_arm) / (a + b - 2 + s_arm + s_control)
        sd = mp.sqrt(mode * (1 - mode) / (a + b + s_arm + s_control))
        inner = {
            min(max(mode + k * sd, mp.mpf(10) ** -30), 1 - mp.mpf(10) ** -30)
            for k in range(-40, 41)
        }
        total += weight * mp.quad(integrand, sorted({mp.mpf(0), mp.mpf(1), *inner}))
    return total


@pytest.mark.parametrize(("s_control", "s_arm", "allocation", "lift"), CASES)
def test_p_values_match_an_independent_quadrature_of_the_mixture(
    s_control: int, s_arm: int, allocation: tuple[float, float], lift: float
) -> None:
    exposures = [10 * s_control + 100, 10 * s_arm + 100]
    found = stats.always_valid_pvalues(exposures, [s_control, s_arm], allocation, lift)
    share = mp.mpf(allocation[1]) / (allocation[0] + allocation[1])
    expected = min(1, 1 / mixture_e_value(s_control, s_arm, share, lift, share))
    assert np.isnan(found[0])
    assert found[1] == pytest.approx(float(expected), rel=1e-8, abs=1e-300)


@pytest.mark.parametrize(("s_control", "s_arm", "allocation", "lift"), CASES[:3] + CASES[4:])
def test_lift_bounds_are_where_the_test_of_that_lift_reaches_its_level(
    s_control: int, s_arm: int, allocation: tuple[float, float], lift: float
) -> None:
    """At each end of the confidence sequence, the e-value against that lift is 1 / (1 −
    level): the sequence is the set of lifts the test does not reject."""
    low, high = stats.lift_confidence_sequence(
        [10**6, 10**6], [s_control, s_arm], allocation, lift, level=0.9
    )
    share = mp.mpf(allocation[1]) / (allocation[0] + allocation[1])
    for bound in (low[1], high[1]):
        ratio = 1 + mp.mpf(bound)
        q = share * ratio / (share * ratio + 1 - share)
        assert float(mixture_e_value(s_control, s_arm, share, lift, q)) == pytest.approx(10, 1e-6)
    assert low[1] < s_arm * (1 - share) / (s_control * share) - 1 < high[1]


def test_the_sequence_excludes_no_lift_exactly_when_the_p_value_is_below_its_level() -> None:
    rng = np.random.default_rng(7)
    control = rng.integers(0, 400, size=300)
    arm = rng.integers(0, 400, size=300)
    counts = np.stack([control, arm], axis=1)
    p = stats.always_valid_pvalues(counts + 1000, counts)[:, 1]
    low, high = stats.lift_confidence_sequence(counts + 1000, counts, level=0.9)
    excludes = (low[:, 1] > 0) | (high[:, 1] < 0)
    assert np.array_equal(excludes, p < 0.1)
    assert 20 < excludes.sum() < 280  # both outcomes occur


def test_unbounded_ends_without_conversions() -> None:
    low, high = stats.lift_confidence_sequence([[100, 100], [100, 100]], [[0, 5], [5, 0]])
    assert low[0, 1] > -1 and high[0, 1] == np.inf
    assert low[1, 1] == -1 and np.isfinite(high[1, 1])
    assert (low[:, 0] == 0).all() and (high[:, 0] == 0).all()


def test_an_arm_without_traffic_by_design_is_never_called_different() -> None:
    p = stats.always_valid_pvalues([100, 100, 0], [10, 30, 0], allocation=[0.5, 0.5, 0.0])
    low, high = stats.lift_confidence_sequence([100, 0], [10, 0], allocation=[1.0, 0.0])
    assert p[1] < 1 and p[2] == 1 and (low[1], high[1]) == (-1, np.inf)


def test_under_equal_rates_few_streams_ever_reject_however_often_one_looks() -> None:
    """A/A streams (p = 0.05, 50 users per arm per look, 2,000 looks): the share of streams
    whose p-value ever reaches 0.05 stays at or under 5%: the 99.9% Clopper-Pearson interval
    of that share must reach down to 0.05. The fixed-horizon z-test, applied at every look to
    the same streams, must fail that check, or the simulation could not see peeking."""
    rng = np.random.default_rng(20261201)
    streams, looks, users, rate = 400, 2_000, 50, 0.05
    conversions = rng.binomial(users, rate, size=(streams, looks, 2)).cumsum(axis=1)
    exposures = users * np.arange(1, looks + 1)[None, :, None] * np.ones((streams, 1, 2))
    p_values = np.stack(
        [stats.always_valid_pvalues(exposures[s], conversions[s])[:, 1] for s in range(streams)]
    )
    anytime = int((p_values.min(axis=1) <= 0.05).sum())
    rates = conversions / exposures
    pooled = conversions.sum(axis=2) / exposures.sum(axis=2)
    with np.errstate(invalid="ignore"):  # 0 / 0 while no one converted: z = 0
        z = (rates[..., 1] - rates[..., 0]) / np.sqrt(pooled * (1 - pooled) * 2 / exposures[..., 0])
    naive = int((2 * norm.sf(np.abs(np.nan_to_num(z))) <= 0.05).any(axis=1).sum())
    assert binomtest(anytime, streams).proportion_ci(0.999).low <= 0.05, anytime / streams
    assert binomtest(naive, streams).proportion_ci(0.999).low > 0.05, naive / streams


def test_a_lift_far_beyond_the_expected_one_is_caught_early() -> None:
    """A broken variant (half the control's rate) with a test tuned for 5%: rejected within a
    few hundred conversions, thanks to the mixture's wide components."""
    p = stats.always_valid_pvalues([2000, 2000], [200, 100], expected_lift=0.05)
    assert p[1] < 1e-3


def test_a_real_lift_is_found() -> None:
    rng = np.random.default_rng(3)
    conversions = rng.binomial(2_000, [0.10, 0.12], size=(50, 2)).cumsum(axis=0)
    exposures = 2_000 * np.arange(1, 51)[:, None] * np.ones((1, 2))
    p = stats.always_valid_pvalues(exposures, conversions, expected_lift=0.2)
    assert p[-1, 1] < 1e-6


@pytest.mark.parametrize(
    ("exposures", "successes", "kwargs", "message"),
    [
        ([10, 10], [-1, 2], {}, "≥ 0"),
        ([10, 10], [11, 2], {}, "exceed"),
        ([10, np.nan], [1, 2], {}, "finite"),
        ([10, 10, 10], [1, 2], {}, "one shape"),
        ([10], [1], {}, "at least 2 arms"),
        (np.zeros((0, 2)), np.zeros((0, 2)), {}, "no looks"),
        ([10, 10], [1, 2], {"allocation": [1.0]}, "allocation"),
        ([10, 10], [1, 2], {"allocation": [0.0, 0.0]}, "allocation"),
        ([10, 10], [1, 2], {"allocation": [1.0, -0.5]}, "allocation"),
        ([10, 10], [1, 2], {"expected_lift": 0.0}, "expected_lift"),
        ([10, 10], [1, 2], {"control": 2}, "control"),
    ],
)
def test_bad_input_is_a_value_error(exposures, successes, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        stats.always_valid_pvalues(exposures, successes, **kwargs)
