"""Anytime-valid inference: p-values and confidence sequences that stay valid however often
people look and whenever they stop.

Method: the conditional (counting-process) e-process of Lindon, Sanden & Shirikian, "Rapid
regression detection in software deployments through sequential testing" (KDD 2022), applied
to conversions. Users are assigned at random with known weights, so when two arms have equal
rates, each conversion in either arm lands in the treatment arm with probability
w = w_t / (w_t + w_c), independently of everything before it. Against that simple null, the
mixture likelihood ratio over q, the treatment's share of conversions, with q ~ Beta(κw, κ(1−w)),

    E = B(κw + s_t, κ(1−w) + s_c) / B(κw, κ(1−w)) / (w^s_t (1−w)^s_c),

is a nonnegative martingale with mean 1 (so is any fixed mixture of such), and by Ville's
inequality P(some look has E ≥ 1/α) ≤ α for every stopping rule, exactly: no normal
approximation, no minimum sample. It depends
on the cumulative conversions only (a backfill, a CSV file or DynamoDB give the same value).
Exposures enter through the design weights, not the counts: the realised split of exposures
is part of the randomness the test accounts for, and the sample-ratio check guards the
assumption that assignment followed the weights.

The rate ratio r = p_t / p_c maps to q(r) = w r / (w r + 1 − w), so inverting the test at
every r gives a confidence sequence for the relative lift r − 1 (the same mixture against
each null q(r) is again a martingale). Tuning: the mixture puts 80% of its weight on a Beta
whose standard deviation of log r is log(1 + expected_lift), where power is best (the
sequential benchmark measures it), and 10% on each of two Betas 4 and 16 times as wide, so
that a lift far larger than expected (a broken variant) is still caught within a few hundred
conversions; this costs log(1 / 0.8) ≈ 0.22 of the log 20 ≈ 3 nats a rejection at α = 0.05
needs (docs/statistics.md).
"""

from __future__ import annotations

import numpy as np
from scipy.special import betaln

from diana_pipeline.stats._types import ArrayLike, FloatArray

DEFAULT_EXPECTED_LIFT = 0.05
# (width as a multiple of log(1 + expected_lift), weight) of the mixture's components
_COMPONENTS = ((1.0, 0.8), (4.0, 0.1), (16.0, 0.1))
_WIDEST_KAPPA = 2.0  # no component wider than Beta(2w, 2(1 − w))
_BISECTION_STEPS = 80
_LOGIT_SPAN = 60.0


def always_valid_pvalues(
    exposures: ArrayLike,
    successes: ArrayLike,
    allocation: ArrayLike | None = None,
    expected_lift: float = DEFAULT_EXPECTED_LIFT,
    control: int = 0,
) -> FloatArray:
    """The anytime-valid p-value, at this look, of "arm k's rate differs from the control's",
    per arm: min(1, 1/E) with E the e-process above. Shapes (K,) or (T, K) of cumulative
    counts, one row per look; the control's own entry is NaN. No running minimum is taken:
    the minimum over looks is itself valid, and is what a decision should read.

    `allocation`: the configured weights (equal when None); an arm with weight 0 gets no users
    by design, so nothing can be said of it (p = 1). `control`: the arm compared against."""
    _, conversions, weights = _checked(exposures, successes, allocation, expected_lift)
    log_e = np.full(conversions.shape, np.nan)
    for k in _others(conversions.shape[-1], control):
        log_e[..., k] = _log_evidence(conversions, weights, k, control, expected_lift)
    with np.errstate(over="ignore"):
        return np.minimum(1.0, np.exp(-log_e))


def lift_confidence_sequence(
    exposures: ArrayLike,
    successes: ArrayLike,
    allocation: ArrayLike | None = None,
    expected_lift: float = DEFAULT_EXPECTED_LIFT,
    level: float = 0.95,
    control: int = 0,
) -> tuple[FloatArray, FloatArray]:
    """Anytime-valid confidence sequence of each arm's relative lift p_k / p_control − 1:
    (low, high), shapes as the counts. With probability ≥ level the true lift lies inside at
    every look at once, so the running intersection over looks is valid too. Without
    conversions in the control the upper end is +inf; without any in the arm the lower end
    is −1. The control's own entry is (0, 0). The interval excludes 0 exactly when the
    p-value is ≤ 1 − level."""
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    _, conversions, weights = _checked(exposures, successes, allocation, expected_lift)
    low = np.zeros(conversions.shape)
    high = np.zeros(conversions.shape)
    for k in _others(conversions.shape[-1], control):
        low[..., k], high[..., k] = _lift_bounds(
            conversions[..., k],
            conversions[..., control],
            _share(weights, k, control),
            expected_lift,
            1.0 - level,
        )
    return low, high


# ---- the e-process -----------------------------------------------------------------------------


def _others(arms: int, control: int) -> list[int]:
    if not 0 <= control < arms:
        raise ValueError(f"control must be an arm index below {arms}, got {control}")
    return [k for k in range(arms) if k != control]


def _share(weights: FloatArray, arm: int, control: int) -> float:
    pair = weights[arm] + weights[control]
    return float(weights[arm] / pair) if pair > 0 else 0.0


def _mixture(share: float, expected_lift: float) -> list[tuple[float, float, float]]:
    """The components (a, b, log weight) of the mixture on q, each a Beta with mean `share`
    and a set sd of log r: since d log r / dq = 1 / (q (1 − q)), sd(q) = share (1 − share)
    sd(log r), and a Beta's variance is share (1 − share) / (κ + 1)."""
    components = []
    for width, weight in _COMPONENTS:
        spread = width * np.log1p(expected_lift)
        kappa = max(1.0 / (share * (1.0 - share) * spread**2) - 1.0, _WIDEST_KAPPA)
        components.append((kappa * share, kappa * (1.0 - share), float(np.log(weight))))
    return components


def _log_mixture(s_arm: FloatArray, s_control: FloatArray, share: float, lift: float) -> FloatArray:
    """log ∫ q^s_arm (1 − q)^s_control dπ(q), π the mixture above."""
    return np.logaddexp.reduce(
        [
            log_weight + betaln(a + s_arm, b + s_control) - betaln(a, b)
            for a, b, log_weight in _mixture(share, lift)
        ],
        axis=0,
    )


def _log_evidence(
    conversions: FloatArray, weights: FloatArray, arm: int, control: int, expected_lift: float
) -> FloatArray:
    share = _share(weights, arm, control)
    s_arm, s_control = conversions[..., arm], conversions[..., control]
    if share in (0.0, 1.0):
        return np.zeros(s_arm.shape)
    return (
        _log_mixture(s_arm, s_control, share, expected_lift)
        - s_arm * np.log(share)
        - s_control * np.log1p(-share)
    )


def _log_likelihood(t: FloatArray, s_arm: FloatArray, s_control: FloatArray) -> FloatArray:
    """log(q^s_arm (1 − q)^s_control) at q = sigmoid(t), without forming q."""
    return -s_arm * np.logaddexp(0.0, -t) - s_control * np.logaddexp(0.0, t)


def _lift_bounds(
    s_arm: FloatArray, s_control: FloatArray, share: float, expected_lift: float, alpha: float
) -> tuple[FloatArray, FloatArray]:
    """The q with q^s_arm (1 − q)^s_control ≥ α · mixture, an interval around the maximum
    likelihood share (the likelihood is log-concave in logit q), found by bisection on
    logit q and mapped to the lift."""
    if share in (0.0, 1.0):
        return np.full(s_arm.shape, -1.0), np.full(s_arm.shape, np.inf)
    threshold = _log_mixture(s_arm, s_control, share, expected_lift) + np.log(alpha)
    total = s_arm + s_control
    with np.errstate(divide="ignore", invalid="ignore"):
        peak = np.clip(
            np.log(s_arm) - np.log(s_control), -_LOGIT_SPAN, _LOGIT_SPAN
        )  # logit of s_arm / total
    peak = np.where(total > 0, peak, 0.0)

    def bound(toward: float) -> FloatArray:
        inside, outside = peak.copy(), peak + toward * 2 * _LOGIT_SPAN
        for _ in range(_BISECTION_STEPS):
            middle = (inside + outside) / 2
            holds = _log_likelihood(middle, s_arm, s_control) >= threshold
            inside, outside = np.where(holds, middle, inside), np.where(holds, outside, middle)
        return inside

    low_t, high_t = bound(-1.0), bound(+1.0)
    offset = np.log(share) - np.log1p(-share)
    low = np.where(s_arm > 0, np.expm1(low_t - offset), -1.0)
    high = np.where(s_control > 0, np.expm1(high_t - offset), np.inf)
    return low, high


# ---- input checks ------------------------------------------------------------------------------


def _checked(
    exposures: ArrayLike,
    successes: ArrayLike,
    allocation: ArrayLike | None,
    expected_lift: float,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    counts = np.asarray(exposures, dtype=np.float64)
    conversions = np.asarray(successes, dtype=np.float64)
    if counts.shape != conversions.shape or counts.ndim not in (1, 2):
        raise ValueError(
            "exposures and successes must have one shape, (K,) or (T, K); got "
            f"{counts.shape} and {conversions.shape}"
        )
    arms = counts.shape[-1]
    if arms < 2:
        raise ValueError(f"need at least 2 arms, got {arms}")
    if counts.ndim == 2 and counts.shape[0] == 0:
        raise ValueError("no looks: the (T, K) counts have T = 0 rows")
    for label, values in (("exposures", counts), ("successes", conversions)):
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{label} must be finite")
        if np.any(values < 0):
            raise ValueError(f"{label} must be ≥ 0, got {values[values < 0][0]:g}")
    if np.any(conversions > counts):
        raise ValueError("successes must not exceed exposures")
    weights = np.full(arms, 1.0) if allocation is None else np.asarray(allocation, float)
    if (
        weights.shape != (arms,)
        or not np.all(np.isfinite(weights))
        or np.any(weights < 0)
        or weights.sum() <= 0
    ):
        raise ValueError(f"allocation must hold {arms} weights ≥ 0, not all 0; got {allocation!r}")
    if not (np.isfinite(expected_lift) and 0 < expected_lift <= 5):
        raise ValueError(f"expected_lift must be in (0, 5], got {expected_lift!r}")
    return counts, conversions, weights / weights.sum()
