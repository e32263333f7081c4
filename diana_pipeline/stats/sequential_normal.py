"""Anytime-valid inference for metrics summarised by a mean and a standard error (counts,
revenue, ratios): the normal mixture sequential probability ratio test (mSPRT) of Johari,
Pekelis & Walsh, "Always valid inference" (2017), on the relative lift.

Each arm's mean is taken as normal around the truth with its standard error (the normal
approximation the posteriors of these metrics use too), so the relative lift estimate
L = m_k / m_c − 1 is normal around the true lift with variance, by the delta method,
V = (m_k / m_c)² (se_k² / m_k² + se_c² / m_c²). Mixing the likelihood ratio of "lift = θ"
against "lift = 0" over θ ~ N(0, τ²) gives

    Λ = √(V / (V + τ²)) · exp(τ² L² / (2 V (V + τ²))),

a martingale under no lift when V shrinks as 1/n: p = min(1, 1/Λ) is valid at every look, and
inverting it at every θ gives the confidence sequence L ± √(V (V + τ²) / τ² · (log((V + τ²) / V)
− 2 log α)). τ = expected_lift, where power is best. Valid as the normal approximation is (a
few hundred users per arm); where the control's mean is not positive no lift is defined and
nothing is rejected.
"""

from __future__ import annotations

import numpy as np

from diana_pipeline.stats._types import ArrayLike, FloatArray
from diana_pipeline.stats.normal import relative_lift


def _checked(means: ArrayLike, sds: ArrayLike, control: int) -> tuple[FloatArray, FloatArray]:
    m = np.asarray(means, dtype=np.float64)
    s = np.asarray(sds, dtype=np.float64)
    if m.shape != s.shape or m.ndim not in (1, 2):
        raise ValueError(
            f"means and sds must share a shape (K,) or (T, K), got {m.shape}, {s.shape}"
        )
    if not 0 <= control < m.shape[-1]:
        raise ValueError(f"control must be an arm index below {m.shape[-1]}, got {control}")
    return m, s


def always_valid_pvalues_normal(
    means: ArrayLike, sds: ArrayLike, expected_lift: float, control: int = 0
) -> FloatArray:
    """Per arm, the anytime-valid p-value of "arm k's mean differs from the control's" at this
    look; the control's own entry is NaN, an arm whose lift is undefined gets 1."""
    m, s = _checked(means, sds, control)
    lift, v = relative_lift(m, s, control)
    tau2 = expected_lift**2
    with np.errstate(invalid="ignore", over="ignore"):
        log_evidence = 0.5 * np.log(v / (v + tau2)) + tau2 * lift**2 / (2 * v * (v + tau2))
        p = np.minimum(1.0, np.exp(-log_evidence))
    p = np.where(np.isnan(p), 1.0, p)
    p[..., control] = np.nan
    return p


def lift_confidence_sequence_normal(
    means: ArrayLike, sds: ArrayLike, expected_lift: float, level: float = 0.95, control: int = 0
) -> tuple[FloatArray, FloatArray]:
    """Per arm, the anytime-valid confidence sequence (low, high) of the relative lift over the
    control; (−inf, inf) where it is undefined, (0, 0) for the control itself."""
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    m, s = _checked(means, sds, control)
    lift, v = relative_lift(m, s, control)
    tau2 = expected_lift**2
    with np.errstate(invalid="ignore"):
        radius = np.sqrt(v * (v + tau2) / tau2 * (np.log((v + tau2) / v) - 2 * np.log(1 - level)))
    low = np.where(np.isnan(radius), -np.inf, lift - radius)
    high = np.where(np.isnan(radius), np.inf, lift + radius)
    low[..., control], high[..., control] = 0.0, 0.0
    return low, high
