"""The decision rule shown to users: winner, no meaningful difference, keep running or not
enough data. This is business policy (the 0.95 bar, the threshold of caring, the minimum
sample, the test's α and region of practical equivalence), not maths; the numbers it weighs
come from diana_pipeline.stats.beta and diana_pipeline.stats.sequential."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from diana_pipeline.stats._types import ArrayLike

PROB_BEST_TO_WIN = 0.95

Verdict = Literal["winner", "no meaningful difference", "keep running", "not enough data"]


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    winner: str | None
    reason: str


@dataclass(frozen=True)
class AnytimeEvidence:
    """What the anytime-valid test says so far, at one look.

    `p_values[i][j]`: running minimum over the looks of the p-value of "arm i's rate differs
    from arm j's" (the diagonal is ignored). `lift_low`, `lift_high`: running intersection of
    each arm's lift confidence sequence over the control (arm 0), at level 1 − alpha / (K − 1).
    A winner must reject every other arm at alpha / (K − 1): under equal rates, a false winner
    needs some treatment to reject the control, which has probability ≤ (K − 1) · alpha /
    (K − 1) = alpha for every stopping rule."""

    p_values: ArrayLike
    lift_low: ArrayLike
    lift_high: ArrayLike
    alpha: float = 0.05
    rope: float = 0.01


def decide(
    prob_best_by_arm: ArrayLike,
    expected_loss_by_arm: ArrayLike,
    exposures: ArrayLike,
    threshold_of_caring: float,
    minimum_sample: int,
    evidence: AnytimeEvidence,
    names: list[str] | None = None,
    prob_to_win: float = PROB_BEST_TO_WIN,
) -> Decision:
    """The decision shown to users for one test at one look.

    Not enough data while any arm has fewer exposures than the minimum sample. Otherwise the
    arm with the highest P(best) wins when P(best) ≥ 0.95, its expected loss is below the
    threshold of caring, and the anytime-valid test rejects equal rates against every other
    arm. Failing that, when every arm's lift over the control lies inside ±rope, there is no
    meaningful difference. Else keep running, with what is missing."""
    best = np.asarray(prob_best_by_arm, dtype=np.float64)
    loss = np.asarray(expected_loss_by_arm, dtype=np.float64)
    seen = np.asarray(exposures, dtype=np.float64)
    if best.ndim != 1 or best.shape != loss.shape or best.shape != seen.shape:
        raise ValueError(
            "prob_best, expected_loss and exposures must be 1-D and of one length, got "
            f"{best.shape}, {loss.shape}, {seen.shape}"
        )
    arms = best.size
    if arms < 2:
        raise ValueError(f"need at least 2 arms, got {arms}")
    p_values = np.asarray(evidence.p_values, dtype=np.float64)
    low = np.asarray(evidence.lift_low, dtype=np.float64)
    high = np.asarray(evidence.lift_high, dtype=np.float64)
    if p_values.shape != (arms, arms) or low.shape != (arms,) or high.shape != (arms,):
        raise ValueError(
            f"evidence must hold a {arms}×{arms} p-value matrix and {arms} lift bounds, got "
            f"{p_values.shape}, {low.shape}, {high.shape}"
        )
    labels = [f"arm {k}" for k in range(arms)] if names is None else list(names)
    if len(labels) != arms or not all(isinstance(n, str) and n for n in labels):
        raise ValueError(f"need {arms} non-empty names, got {names!r}")
    _check_inputs(best, loss, seen, p_values, low, high)
    if not (np.isfinite(threshold_of_caring) and threshold_of_caring > 0):
        raise ValueError(f"threshold_of_caring must be finite and > 0, got {threshold_of_caring}")
    if (
        isinstance(minimum_sample, bool)
        or int(minimum_sample) != minimum_sample
        or minimum_sample < 1
    ):
        raise ValueError(f"minimum_sample must be a whole number ≥ 1, got {minimum_sample}")
    if not (0 < evidence.alpha < 1 and np.isfinite(evidence.rope) and evidence.rope > 0):
        raise ValueError(f"alpha must be in (0, 1) and rope finite and > 0, got {evidence}")
    if not 0 < prob_to_win <= 1:
        raise ValueError(f"prob_to_win must be in (0, 1], got {prob_to_win}")
    short = [labels[k] for k in range(arms) if seen[k] < minimum_sample]
    if short:
        return Decision(
            "not enough data",
            None,
            f"{', '.join(short)} below the minimum sample of {minimum_sample} exposures "
            f"(have {', '.join(f'{labels[k]}={int(seen[k])}' for k in range(arms))})",
        )
    level = evidence.alpha / (arms - 1)
    leader = int(np.argmax(best))
    name = labels[leader]
    others = [j for j in range(arms) if j != leader]
    weakest = max(others, key=lambda j: p_values[leader, j])
    p_weakest = p_values[leader, weakest]
    against = (
        f"against {labels[weakest]}"
        if arms == 2
        else f"against every arm (weakest: {labels[weakest]})"
    )
    rejects = p_weakest <= level
    if best[leader] >= prob_to_win and loss[leader] < threshold_of_caring and rejects:
        return Decision(
            "winner",
            name,
            f"{name}: P(best) = {best[leader]:.4f} ≥ {prob_to_win}, expected loss "
            f"{loss[leader]:.2e} < {threshold_of_caring:g}, and the anytime-valid test "
            f"rejects equal rates {against} (p = {p_weakest:.2g} ≤ {level:.3g})",
        )
    treatments = range(1, arms)
    if all(-evidence.rope <= low[k] and high[k] <= evidence.rope for k in treatments):
        bounds = ", ".join(f"{labels[k]} [{low[k]:+.2%}, {high[k]:+.2%}]" for k in treatments)
        return Decision(
            "no meaningful difference",
            None,
            f"every lift over {labels[0]} lies within ±{evidence.rope:.2%} "
            f"(anytime-valid {1 - level:.1%} confidence sequence: {bounds})",
        )
    if best[leader] < prob_to_win:
        why = f"P(best) = {best[leader]:.4f} < {prob_to_win}"
    elif loss[leader] >= threshold_of_caring:
        why = f"expected loss {loss[leader]:.2e} ≥ threshold of caring {threshold_of_caring:g}"
    else:
        why = f"anytime-valid p = {p_weakest:.2g} > {level:.3g} {against}"
    return Decision("keep running", None, f"leader {name}: {why}")


def _check_inputs(
    best: np.ndarray,
    loss: np.ndarray,
    seen: np.ndarray,
    p_values: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
) -> None:
    """Every figure the rule weighs must be a number in its range: a NaN would otherwise slip
    past a comparison (NaN < 100 is False) and change the verdict."""
    off_diagonal = p_values[~np.eye(len(best), dtype=bool)]
    checks = (
        ("prob_best", best, 0.0, 1.0),
        ("expected_loss", loss, 0.0, 1.0),
        ("exposures", seen, 0.0, np.inf),
        ("p-values", off_diagonal, 0.0, 1.0),
        ("lift_low", low, -1.0, np.inf),
        ("lift_high", high, -1.0, np.inf),
    )
    slack = 1e-9  # rounding in the quadrature may put a probability a few ulps past 1
    for label, values, lowest, highest in checks:
        if (
            np.any(np.isnan(values))
            or np.any(values < lowest - slack)
            or np.any(values > highest + slack)
        ):
            raise ValueError(
                f"every {label} must be a number in [{lowest:g}, {highest:g}], got {values}"
            )
    if np.any(np.isinf(seen)) or np.any(seen != np.floor(seen)):
        raise ValueError(f"exposures must be whole numbers, got {seen}")


# A guardrail blocks a winner while P(the winner is worse than the control by more than the
# guardrail's margin) is at least this.
GUARDRAIL_RISK = 0.05


@dataclass(frozen=True)
class Guardrail:
    """A guardrail metric of one variant at one look: its margin (relative) and P(worse than
    the control by more than it); None while it has no posterior (too few users)."""

    metric: str
    margin: float
    prob_worse: float | None


def guard(decision: Decision, guardrails: list[Guardrail], control: str) -> Decision:
    """A winner other than the control stands only when every one of its guardrails holds:
    P(worse than the control by more than the margin) < GUARDRAIL_RISK. Otherwise keep
    running, naming the guardrail that blocks it (the first, in the order given)."""
    if decision.verdict != "winner" or decision.winner == control or not guardrails:
        return decision
    for rail in guardrails:
        if rail.prob_worse is None:
            why = "it has no posterior yet"
        elif rail.prob_worse >= GUARDRAIL_RISK:
            why = (
                f"P({decision.winner} worse than {control} by more than {rail.margin:.1%}) = "
                f"{rail.prob_worse:.3f} ≥ {GUARDRAIL_RISK}"
            )
        else:
            continue
        return Decision(
            "keep running",
            None,
            f"guardrail {rail.metric} blocks {decision.winner}: {why} "
            f"(otherwise: {decision.reason})",
        )
    held = ", ".join(f"{rail.metric} {rail.prob_worse:.3f}" for rail in guardrails)
    return Decision(
        "winner",
        decision.winner,
        f"{decision.reason}; guardrails hold, P(worse by margin) < {GUARDRAIL_RISK}: {held}",
    )
