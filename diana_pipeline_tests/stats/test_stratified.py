"""diana_pipeline.stats.stratified: period-weighted rates against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from diana_pipeline import stats


def test_period_weighting_undoes_a_simpson_reversal() -> None:
    # Arm A got most traffic in the period with the low rates, B in the one with the high
    # rates (as a bandit that moved traffic would). Pooled, both convert 100 of 400 (25%).
    exposures = [[100, 300], [300, 100]]
    successes = [[10, 60], [90, 40]]
    rates, errors, periods = stats.period_weighted_rates(exposures, successes)
    # Both periods hold 400 of 800 users: w = 1/2 each.
    # A: (10/100 + 90/300) / 2 = 0.2; B: (60/300 + 40/100) / 2 = 0.3.
    np.testing.assert_allclose(rates, [0.2, 0.3], rtol=1e-12)
    # SE² = Σ w² r(1 − r)/n: A: .25·(.1·.9/100 + .3·.7/300) = .0004; B: .25·(.2·.8/300 + .4·.6/100).
    np.testing.assert_allclose(errors, np.sqrt([0.0004, 0.25 * (0.16 / 300 + 0.24 / 100)]))
    assert periods == 2


def test_periods_where_an_arm_has_no_users_are_left_out_for_every_arm() -> None:
    rates, _, periods = stats.period_weighted_rates(
        [[10, 0], [100, 300], [300, 100]], [[9, 0], [10, 60], [90, 40]]
    )
    np.testing.assert_allclose(rates, [0.2, 0.3])
    assert periods == 2
    rates, errors, periods = stats.period_weighted_rates([[0, 5]], [[0, 1]])
    assert periods == 0 and np.isnan(rates).all() and np.isnan(errors).all()
    # Several cases at once give what each gives alone.
    many = stats.period_weighted_rates(
        [[[100, 300], [300, 100]], [[0, 5], [5, 5]]], [[[10, 60], [90, 40]], [[0, 1], [1, 2]]]
    )
    np.testing.assert_allclose(many[0], [[0.2, 0.3], [0.2, 0.4]])
    assert list(many[2]) == [2, 1]


@pytest.mark.parametrize(
    ("exposures", "successes", "message"),
    [
        ([[10, 10]], [[11, 0]], "successes ≤ exposures"),
        ([[10, -1]], [[0, 0]], "successes ≤ exposures"),
        ([10, 10], [1, 1], "shape \\(periods, arms\\)"),
    ],
)
def test_bad_input_is_named(exposures, successes, message) -> None:
    with pytest.raises(ValueError, match=message):
        stats.period_weighted_rates(exposures, successes)
