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


def _top_two_by_simulation(alphas, betas, draws: int, seed: int) -> np.ndarray:
    """Top-two Thompson sampling played `draws` times (an independent reference): the
    posterior's best draw with probability 1/2, else the best of redraws until one differs
    from it; returns each arm's share of the plays."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(alphas, float), np.asarray(betas, float)
    leader = np.argmax(rng.beta(a, b, size=(draws, a.size)), axis=1)
    played = leader.copy()
    redraw = np.flatnonzero(rng.random(draws) >= 0.5)
    while redraw.size:
        challenger = np.argmax(rng.beta(a, b, size=(redraw.size, a.size)), axis=1)
        differs = challenger != leader[redraw]
        played[redraw[differs]] = challenger[differs]
        redraw = redraw[~differs]
    return np.bincount(played, minlength=a.size) / draws


def test_top_two_allocation_matches_a_simulation_of_top_two_sampling() -> None:
    alphas, betas = [30, 36, 40, 33], [270, 264, 260, 267]
    draws = 400_000
    simulated = _top_two_by_simulation(alphas, betas, draws, seed=7)
    weights = stats.thompson_allocation(alphas, betas, floor=0.0, top_two=True)
    # Within 5 standard errors of the simulated shares (binomial), fixed before running.
    tolerance = 5 * np.sqrt(weights * (1 - weights) / draws)
    assert np.all(np.abs(weights - simulated) <= tolerance), (weights, simulated)
    # The runner-up keeps more traffic than under plain Thompson sampling, the leader less.
    plain = stats.thompson_allocation(alphas, betas, floor=0.0)
    assert weights[2] < plain[2] and weights[1] > plain[1]
    np.testing.assert_allclose(weights.sum(), 1.0)


def test_top_two_hand_cases() -> None:
    # A certain leader: half its traffic, the other half split evenly among the rest.
    np.testing.assert_allclose(stats.top_two_weights([1.0, 0.0, 0.0]), [0.5, 0.25, 0.25])
    # Two arms: the challenger is always the other arm, so the split stays even.
    np.testing.assert_allclose(stats.top_two_weights([0.9, 0.1]), [0.5, 0.5])
    # The floor on top, per case of a (T, K) input.
    weights = stats.thompson_allocation(np.ones((2, 3)), np.ones((2, 3)), 0.1, top_two=True)
    np.testing.assert_allclose(weights, 1 / 3)
