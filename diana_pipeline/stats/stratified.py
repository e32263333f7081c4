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
) -> tuple[FloatArray, FloatArray, int]:
    """Per arm, Σ_p w_p · s_pk / n_pk and its standard error √(Σ_p w_p² · r_pk(1 − r_pk) /
    n_pk), with w_p = n_p / Σ n over the periods p in which every arm has users (n_p: all
    arms' users of period p); returns the rates, the standard errors and how many periods
    were used. `exposures`, `successes`: users newly exposed per period and arm, and how
    many of them converted, shape (P, K). Periods where an arm has no users are left out
    for every arm, so that all arms stand on the same periods."""
    n = np.asarray(exposures, dtype=np.float64)
    s = np.asarray(successes, dtype=np.float64)
    if n.ndim != 2 or n.shape != s.shape:
        raise ValueError(
            f"exposures and successes must both have shape (periods, arms), got {n.shape} "
            f"and {s.shape}"
        )
    if np.any(n < 0) or np.any(s < 0) or np.any(s > n):
        raise ValueError("need 0 ≤ successes ≤ exposures in every period and arm")
    used = np.all(n > 0, axis=1)
    arms = n.shape[1]
    if not used.any():
        return np.full(arms, np.nan), np.full(arms, np.nan), 0
    n, s = n[used], s[used]
    weights = n.sum(axis=1) / n.sum()
    rates = s / n
    estimate = weights @ rates
    variance = (weights**2) @ (rates * (1.0 - rates) / n)
    return estimate, np.sqrt(variance), int(used.sum())
