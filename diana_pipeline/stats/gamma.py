"""Gamma posteriors: the rate of a count metric (events per exposed user, Gamma-Poisson).
With a Gamma(shape₀, rate₀) prior, a variant with n exposed users and c events has the
posterior Gamma(shape₀ + c, rate₀ + n) for its events per user λ.

    P(k best)  = ∫ f_k(λ) ∏_{j≠k} F_j(λ) dλ
    E[max_j λ_j − λ_k] = ∫ F_k(λ) (1 − ∏_{j≠k} F_j(λ)) dλ

on the quadrature Beta uses (diana_pipeline.stats.quadrature), in s = log λ, where the
density ∝ e^{shape·s − rate·e^s} is smooth and unimodal with mean ψ(shape) − log(rate) and
variance ψ′(shape). Deterministic; exact to 1e-9 against high-precision references for shapes
from 0.01 (diana_pipeline_tests/stats/test_gamma.py).
"""

from __future__ import annotations

import numpy as np
from scipy import special

from diana_pipeline.stats._types import ArrayLike, FloatArray
from diana_pipeline.stats.quadrature import (
    _TAIL_MASS,
    SMALLEST_PARAMETER,
    _as_arms,
    _Family,
    best_and_loss,
)


def _log_moments(shape: FloatArray, rate: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Mean and standard deviation of log λ, λ ~ Gamma(shape, rate)."""
    return special.digamma(shape) - np.log(rate), np.sqrt(special.polygamma(1, shape))


def _tail_bounds(shape: FloatArray, rate: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Points L, U of s = log λ with P(S < L) ≤ 1e-15 and P(S > U) ≤ 1e-15, by Chernoff:
    M(t) = E[λ^t] = Γ(shape + t) / (Γ(shape) rate^t) for t > −shape, and
    P(S ≤ s) ≤ M(−u) e^{u s}, P(S ≥ s) ≤ M(t) e^{−t s}; the tightest of a few u and t."""
    _, sd = _log_moments(shape, rate)
    log_eps = np.log(_TAIL_MASS)
    gaussian_rate = np.sqrt(-2.0 * log_eps) / sd

    def log_m(t: FloatArray) -> FloatArray:
        return special.gammaln(shape + t) - special.gammaln(shape) - t * np.log(rate)

    lower = np.full(shape.shape, -np.inf)
    upper = np.full(shape.shape, np.inf)
    for u in (0.25 * shape, 0.5 * shape, np.minimum(gaussian_rate, 0.95 * shape)):
        lower = np.maximum(lower, (log_eps - log_m(-u)) / u)
    # The upper tail falls like e^{−rate·λ}: any t > 0 is allowed, large ones help.
    for t in (0.5 * shape, gaussian_rate, 4.0 * gaussian_rate, 4.0 * shape + 4.0):
        upper = np.minimum(upper, (log_m(t) - log_eps) / t)
    return lower, upper


def _log_density(shape: FloatArray, rate: FloatArray, s: FloatArray) -> FloatArray:
    """shape·s − rate·e^s relative to its mode (s_mode = log(shape / rate), where
    rate·e^s = shape·e^{s − s_mode})."""
    above_mode = s - (np.log(shape) - np.log(rate))
    with np.errstate(over="ignore"):  # far above every arm: a density of 0
        return shape * (above_mode - np.expm1(above_mode))


def _check(shapes: FloatArray, rates: FloatArray) -> None:
    for label, values in (("shape", shapes), ("rate", rates)):
        if not np.all(np.isfinite(values)):
            raise ValueError(f"every {label} must be finite, got {values[~np.isfinite(values)][0]}")
    if np.any(shapes < SMALLEST_PARAMETER):
        raise ValueError(
            f"every shape must be ≥ {SMALLEST_PARAMETER} (smaller priors are not computed "
            f"exactly), got {shapes[shapes < SMALLEST_PARAMETER][0]:g}"
        )
    if np.any(rates <= 0):
        raise ValueError(f"every rate must be > 0, got {rates[rates <= 0][0]:g}")


# Panel edges of each arm beyond the ones from its mean and spread, where the integrands turn
# on scales finer than its standard deviation (which for a small shape is ≈ 1 / shape):
# - above its mode the density falls like e^{−rate·λ}, within a few units of s: edges where
#   rate·λ passes these values, one or two e-folds of the fall per panel;
_RATE_TIMES_LAMBDA = np.array([0.25, 0.5, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 40])
# - around the mode, on a unit scale;
_AROUND_MODE = np.array([-4.0, -2.0, -1.0, 0.0, 1.0, 2.0])
# - below it the density falls like e^{shape·(s − mode)}: steps of a few 1 / shape (each
#   panel's exponential then varies little enough for its rule);
_BELOW_MODE_IN_1_OVER_SHAPE = np.array([1, 2, 4, 8, 12, 16, 20, 25, 30, 35, 40])
# - the loss weighs λ = e^s, which grows by e² every 2 units: steps of 2 below each arm's
#   mean down to where e^s is 1e-16 of it (between a small arm and a large one the loss's
#   integrand is e^s alone).
_BELOW_MEAN_FOR_THE_LOSS = np.arange(2.0, 38.0, 2.0)


def _arm_edges(shape: FloatArray, rate: FloatArray) -> FloatArray:
    mode = (np.log(shape) - np.log(rate))[..., None]
    return np.concatenate(
        [
            np.log(_RATE_TIMES_LAMBDA) - np.log(rate)[..., None],
            mode + _AROUND_MODE,
            mode - _BELOW_MODE_IN_1_OVER_SHAPE / shape[..., None],
            mode - _BELOW_MEAN_FOR_THE_LOSS,
        ],
        axis=-1,
    )


GAMMA = _Family(
    moments=_log_moments,
    tail_bounds=_tail_bounds,
    log_density=_log_density,
    dx_ds=np.exp,  # λ = e^s
    transition=np.empty(0),
    arm_edges=_arm_edges,
)


def _arms(shapes: ArrayLike, rates: ArrayLike) -> tuple[FloatArray, FloatArray]:
    return _as_arms(shapes, rates, name="shapes/rates", check=_check)


def prob_best_gamma(shapes: ArrayLike, rates: ArrayLike) -> FloatArray:
    """P(arm k has the highest rate λ), per arm; shape (K,) or (T, K), rows summing to 1."""
    best, _ = best_and_loss(*_arms(shapes, rates), GAMMA)
    return best.reshape(np.shape(shapes))


def expected_loss_gamma(shapes: ArrayLike, rates: ArrayLike) -> FloatArray:
    """E[max_j λ_j − λ_k]: the events per user given up by choosing arm k."""
    _, loss = best_and_loss(*_arms(shapes, rates), GAMMA)
    return loss.reshape(np.shape(shapes))


def prob_best_and_expected_loss_gamma(
    shapes: ArrayLike, rates: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Both at the cost of one: they share the quadrature."""
    best, loss = best_and_loss(*_arms(shapes, rates), GAMMA)
    return best.reshape(np.shape(shapes)), loss.reshape(np.shape(shapes))
