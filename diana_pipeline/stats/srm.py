"""The sample ratio mismatch (SRM) test: do a test's exposures fit its configured
allocation? A frequentist chi-square goodness of fit, beside the Bayesian rest of the
package."""

from __future__ import annotations

import numpy as np
from scipy import special

from diana_pipeline.stats._types import ArrayLike, FloatArray


def srm_pvalue(counts: ArrayLike, weights: ArrayLike) -> FloatArray | float:
    """Chi-square goodness of fit of observed exposures against the configured allocation.

    Shape (K,) or (T, K). Arms with zero weight take no part in the test, except that any
    exposure on such an arm contradicts the allocation outright (p = 0). With no exposures
    at all there is no evidence of a mismatch (p = 1)."""
    observed = np.asarray(counts, dtype=np.float64)
    expected_share = np.asarray(weights, dtype=np.float64)
    if observed.shape[-1:] != expected_share.shape[-1:] or observed.ndim not in (1, 2):
        raise ValueError(
            f"counts has shape {observed.shape} but weights has shape {expected_share.shape}"
        )
    if not (np.all(np.isfinite(observed)) and np.all(observed >= 0)):
        raise ValueError("counts must be finite and ≥ 0")
    if not (np.all(np.isfinite(expected_share)) and np.all(expected_share >= 0)):
        raise ValueError("weights must be finite and ≥ 0")
    observed2 = np.atleast_2d(observed)
    share2 = np.broadcast_to(np.atleast_2d(expected_share), observed2.shape)
    weight_total = share2.sum(axis=-1, keepdims=True)
    if np.any(weight_total <= 0):
        raise ValueError("weights must not all be zero")
    share2 = share2 / weight_total
    active = share2 > 0
    if np.any(active.sum(axis=-1) < 2):
        raise ValueError("need at least 2 arms with a positive weight")
    total = observed2.sum(axis=-1, keepdims=True)
    expected = share2 * total
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(active, (observed2 - expected) ** 2 / expected, 0.0)
    statistic = np.where(total[:, 0] > 0, terms.sum(axis=-1), 0.0)
    pvalue = special.chdtrc(active.sum(axis=-1) - 1, statistic)
    pvalue = np.where(np.any(~active & (observed2 > 0), axis=-1), 0.0, pvalue)
    return float(pvalue[0]) if observed.ndim == 1 else pvalue
