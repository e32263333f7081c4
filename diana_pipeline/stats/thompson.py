"""The bandit's traffic allocation for the next window, from P(best): Thompson sampling, or
top-two Thompson sampling, in expectation (so deterministic), with a floor per arm."""

from __future__ import annotations

import numpy as np

from diana_pipeline.stats._types import ArrayLike, FloatArray
from diana_pipeline.stats.beta import prob_best
from diana_pipeline.stats.quadrature import _as_arms

# Top-two Thompson sampling plays the posterior's best draw with this probability, else the
# best of a redraw that differs from it (Russo 2016's β; 1/2 is its robust default).
TOP_TWO_LEADER = 0.5


def thompson_allocation(
    alphas: ArrayLike, betas: ArrayLike, floor: float = 0.01, top_two: bool = False
) -> FloatArray:
    """Traffic weights for the next window: each arm's chance to be played, mixed with the
    uniform split so that every arm keeps at least `floor` (w_k = floor + (1 − K·floor) ·
    play_k). Thompson sampling plays arm k with P(k best); top-two Thompson sampling
    (`top_two`) with β·P(k best) + (1 − β)·Σ_{j≠k} P(j best)·P(k best)/(1 − P(j best)): the
    leader half the time, else the best of the others, so that the runner-up keeps
    traffic while the leader's lead is still uncertain."""
    a, _ = _as_arms(alphas, betas)
    arms = a.shape[-1]
    if not 0 <= floor <= 1.0 / arms:
        raise ValueError(f"floor must be between 0 and 1/K = {1.0 / arms:.4g}, got {floor}")
    best = prob_best(alphas, betas)
    played = top_two_weights(best) if top_two else best
    return floor + (1.0 - arms * floor) * played


def top_two_weights(best: ArrayLike) -> FloatArray:
    """Each arm's chance to be played by top-two Thompson sampling, from P(best) (shape (K,)
    or (T, K)). The challenger of leader j is arm k with P(k best) / Σ_{i≠j} P(i best), or
    uniform over the others when they have no chance left."""
    p = np.asarray(best, dtype=np.float64)
    arms = p.shape[-1]
    others = p.sum(axis=-1, keepdims=True) - p  # Σ_{i≠j} P(i best), per leader j
    # challenger[..., j, k]: the chance that k challenges leader j.
    share = np.divide(
        p[..., None, :],
        others[..., :, None],
        out=np.full((*p.shape[:-1], arms, arms), 1.0 / (arms - 1)),
        where=others[..., :, None] > 0,
    )
    challenger = share * (1.0 - np.eye(arms))
    challenger /= challenger.sum(axis=-1, keepdims=True)
    return TOP_TWO_LEADER * p + (1.0 - TOP_TWO_LEADER) * np.einsum(
        "...j,...jk->...k", p, challenger
    )
