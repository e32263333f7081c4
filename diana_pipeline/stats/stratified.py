"""Period-weighted (stratified) conversion rates, for arms whose traffic shares moved during
the test (a bandit). Pooling every user of an arm weights each period by that arm's share in
it; when the rates drift over time and the shares follow the results, the pooled rates are
biased (Simpson's paradox). Weighting each period by its share of all users instead compares
every arm on the same mix of periods, as GrowthBook's bandits do."""

from __future__ import annotations

import numpy as np

from diana_pipeline.stats._types import ArrayLike, FloatArray


def period_weighted_rates(
    exposures: ArrayLike, successes: ArrayLike
) -> tuple[FloatArray, FloatArray, np.ndarray]:
    """Per arm, Σ_p w_p · s_pk / n_pk and its standard error √(Σ_p w_p² · r_pk(1 − r_pk) /
    n_pk), with w_p = n_p / Σ n over the periods p in which every arm has users (n_p: all
    arms' users of period p); returns the rates, the standard errors and how many periods
    were used (NaN rates when none). `exposures`, `successes`: users newly exposed per
    period and arm, and how many of them converted, shape (P, K), or (T, P, K) for T cases
    at once (then (T, K) results). Periods where an arm has no users are left out for every
    arm, so that all arms stand on the same periods."""
    n = np.asarray(exposures, dtype=np.float64)
    s = np.asarray(successes, dtype=np.float64)
    if n.ndim not in (2, 3) or n.shape != s.shape:
        raise ValueError(
            "exposures and successes must both have shape (periods, arms) or (cases, periods, "
            f"arms), got {n.shape} and {s.shape}"
        )
    if np.any(n < 0) or np.any(s < 0) or np.any(s > n):
        raise ValueError("need 0 ≤ successes ≤ exposures in every period and arm")
    used = np.all(n > 0, axis=-1)  # (..., P)
    totals = np.where(used, n.sum(axis=-1), 0.0)  # all arms' users of each used period
    grand = totals.sum(axis=-1, keepdims=True)
    weights = np.divide(totals, grand, out=np.zeros_like(totals), where=grand > 0)
    rates = np.divide(s, n, out=np.zeros_like(s), where=n > 0)
    variances = np.divide(rates * (1.0 - rates), n, out=np.zeros_like(s), where=n > 0)
    estimate = np.einsum("...p,...pk->...k", weights, rates)
    variance = np.einsum("...p,...pk->...k", weights**2, variances)
    periods = used.sum(axis=-1)
    none = (periods == 0)[..., None]
    estimate = np.where(none, np.nan, estimate)
    error = np.where(none, np.nan, np.sqrt(variance))
    return estimate, error, periods
