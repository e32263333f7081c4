"""The sample ratio mismatch (SRM) tests: do a test's exposures fit the weights users were
assigned by? Frequentist, beside the Bayesian rest of the package: a chi-square goodness of fit
against a fixed allocation, and an anytime-valid e-process for weights that move (a bandit)."""

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


# Pseudo-users behind the plug-in's estimate of each arm's observed/expected ratio: it starts
# at 1 (no mismatch) and follows the data as they come.
SRM_PSEUDO_USERS = 20.0


def srm_e_values(counts: ArrayLike, weights: ArrayLike) -> FloatArray:
    """An anytime-valid sample-ratio test for weights that change between periods (a bandit):
    the e-process after each period, shape (P,) for counts and weights of shape (P, K) (users
    newly assigned per period and arm; the weights in force in each period).

    Under the hypothesis that every user was assigned by the weights in force, the product
    over periods of Π_k (q_pk / w_pk)^n_pk has expectation 1 at every period, whatever the
    weights, so P(it ever reaches 1/α) ≤ α (Ville): 1 / its running maximum is a p-value that
    stays valid however often it is looked at. q_p is the weights tilted by each arm's
    observed/expected ratio in the periods before p (a predictable plug-in, shrunk to 1 by
    SRM_PSEUDO_USERS), so a lasting mismatch grows the product exponentially. An arm with
    users in a period where its weight was 0 contradicts the weights outright (infinity)."""
    observed = np.asarray(counts, dtype=np.float64)
    share = np.asarray(weights, dtype=np.float64)
    if observed.ndim != 2 or observed.shape != share.shape:
        raise ValueError(
            f"counts and weights must both have shape (periods, arms), got {observed.shape} "
            f"and {share.shape}"
        )
    if not (np.all(np.isfinite(observed)) and np.all(observed >= 0)):
        raise ValueError("counts must be finite and ≥ 0")
    if not (np.all(np.isfinite(share)) and np.all(share >= 0)):
        raise ValueError("weights must be finite and ≥ 0")
    totals = share.sum(axis=1, keepdims=True)
    if np.any(totals <= 0):
        raise ValueError("weights must not all be zero in any period")
    share = share / totals
    seen = np.zeros(observed.shape[1])
    expected = np.zeros(observed.shape[1])
    log_e = np.zeros(observed.shape[0])
    running = 0.0
    for p in range(observed.shape[0]):
        w, n = share[p], observed[p]
        if np.any((w == 0) & (n > 0)):
            running = np.inf
        elif running < np.inf:
            ratio = (seen + SRM_PSEUDO_USERS) / (expected + SRM_PSEUDO_USERS)
            q = w * ratio / np.dot(w, ratio)
            active = n > 0
            running += float(np.sum(n[active] * (np.log(q[active]) - np.log(w[active]))))
        log_e[p] = running
        seen += n
        expected += n.sum() * w
    return np.exp(log_e)


def srm_anytime_pvalue(counts: ArrayLike, weights: ArrayLike) -> float:
    """1 / the running maximum of srm_e_values over every period, capped at 1."""
    e = srm_e_values(counts, weights)
    return float(min(1.0, 1.0 / e.max())) if e.size else 1.0
