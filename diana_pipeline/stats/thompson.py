"""The bandit's traffic allocation for the next window, from P(best) (Thompson sampling in
expectation, so deterministic)."""

from __future__ import annotations

from diana_pipeline.stats._types import ArrayLike, FloatArray
from diana_pipeline.stats.beta import prob_best
from diana_pipeline.stats.quadrature import _as_arms


def thompson_allocation(alphas: ArrayLike, betas: ArrayLike, floor: float = 0.01) -> FloatArray:
    """Traffic weights for the next window: P(best), mixed with the uniform split so that
    every arm keeps at least `floor` (w_k = floor + (1 − K·floor) · P(k best))."""
    a, _ = _as_arms(alphas, betas)
    arms = a.shape[-1]
    if not 0 <= floor <= 1.0 / arms:
        raise ValueError(f"floor must be between 0 and 1/K = {1.0 / arms:.4g}, got {floor}")
    return floor + (1.0 - arms * floor) * prob_best(alphas, betas)
