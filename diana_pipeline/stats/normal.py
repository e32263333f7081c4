"""Normal posteriors: the mean of a metric per exposed user (revenue, a sum of values) by the
normal approximation, N(sample mean, sample sd / √n), and anything else summarised by a mean
and a standard error (a ratio by the delta method).

    P(k best)  = ∫ φ_k(x) ∏_{j≠k} Φ_j(x) dx
    E[max_j μ_j − μ_k] = ∫ Φ_k(x) (1 − ∏_{j≠k} Φ_j(x)) dx

on the quadrature the other families use (diana_pipeline.stats.quadrature), in x itself. For
two arms both have closed forms, which the tests hold it to; the quadrature serves any K.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from diana_pipeline.stats._types import ArrayLike, FloatArray
from diana_pipeline.stats.quadrature import _TAIL_MASS, _as_arms, _Family, best_and_loss

# P(X > μ + zσ) ≤ e^{−z²/2} (Chernoff): z for _TAIL_MASS.
_TAIL_Z = float(np.sqrt(-2.0 * np.log(_TAIL_MASS)))


def _check(means: FloatArray, sds: FloatArray) -> None:
    for label, values in (("mean", means), ("sd", sds)):
        if not np.all(np.isfinite(values)):
            raise ValueError(f"every {label} must be finite, got {values[~np.isfinite(values)][0]}")
    if np.any(sds <= 0):
        raise ValueError(f"every sd must be > 0, got {sds[sds <= 0][0]:g}")


NORMAL = _Family(
    moments=lambda mean, sd: (mean, sd),
    tail_bounds=lambda mean, sd: (mean - _TAIL_Z * sd, mean + _TAIL_Z * sd),
    log_density=lambda mean, sd, x: -0.5 * ((x - mean) / sd) ** 2,
    dx_ds=np.ones_like,
    transition=np.empty(0),
)


def _arms(means: ArrayLike, sds: ArrayLike) -> tuple[FloatArray, FloatArray]:
    return _as_arms(means, sds, name="means/sds", check=_check)


def prob_best_normal(means: ArrayLike, sds: ArrayLike) -> FloatArray:
    """P(arm k has the highest mean), per arm; shape (K,) or (T, K), rows summing to 1."""
    best, _ = best_and_loss(*_arms(means, sds), NORMAL)
    return best.reshape(np.shape(means))


def expected_loss_normal(means: ArrayLike, sds: ArrayLike) -> FloatArray:
    """E[max_j μ_j − μ_k]: the mean given up by choosing arm k, in the metric's units."""
    _, loss = best_and_loss(*_arms(means, sds), NORMAL)
    return loss.reshape(np.shape(means))


def prob_best_and_expected_loss_normal(
    means: ArrayLike, sds: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Both at the cost of one: they share the quadrature."""
    best, loss = best_and_loss(*_arms(means, sds), NORMAL)
    return best.reshape(np.shape(means)), loss.reshape(np.shape(means))


def relative_lift(
    means: FloatArray, sds: FloatArray, control: int
) -> tuple[FloatArray, FloatArray]:
    """Per arm (last axis): the relative lift m_k / m_c − 1 over the control and its
    delta-method variance (m_k / m_c)² (s_k² / m_k² + s_c² / m_c²); NaN where the control's
    mean is not positive."""
    m_c, s_c = means[..., [control]], sds[..., [control]]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = means / m_c
        variance = ratio**2 * ((sds / means) ** 2 + (s_c / m_c) ** 2)
        # an arm at 0 has a lift of −1 with the control's share of the variance alone
        variance = np.where(means == 0, (sds / m_c) ** 2, variance)
    undefined = (m_c <= 0) | ~np.isfinite(variance) | (variance <= 0)
    return np.where(undefined, np.nan, ratio - 1.0), np.where(undefined, np.nan, variance)


def prob_lift_below(
    means: ArrayLike, sds: ArrayLike, threshold: float, control: int = 0
) -> FloatArray:
    """Per arm, P(relative lift over the control < threshold) by the normal approximation of
    the lift (relative_lift): what a guardrail weighs for any family, from each arm's
    posterior mean and sd. NaN for the control and where the lift is undefined."""
    m = np.asarray(means, dtype=np.float64)
    s = np.asarray(sds, dtype=np.float64)
    lift, variance = relative_lift(m, s, control)
    with np.errstate(invalid="ignore"):
        p = special.ndtr((threshold - lift) / np.sqrt(variance))
    p[..., control] = np.nan
    return p
