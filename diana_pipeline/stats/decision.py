"""The decision rule shown to users: winner, keep running or not enough data. This is
business policy (the 0.95 bar, the threshold of caring, the minimum sample), not maths; the
numbers it weighs come from diana_pipeline.stats.beta."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from diana_pipeline.stats._types import ArrayLike

PROB_BEST_TO_WIN = 0.95

Verdict = Literal["winner", "keep running", "not enough data"]


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    winner: str | None
    reason: str


def decide(
    prob_best_by_arm: ArrayLike,
    expected_loss_by_arm: ArrayLike,
    exposures: ArrayLike,
    threshold_of_caring: float,
    minimum_sample: int,
    names: list[str] | None = None,
    prob_to_win: float = PROB_BEST_TO_WIN,
) -> Decision:
    """The decision shown to users for one test.

    Not enough data while any arm has fewer exposures than the minimum sample. Otherwise the
    arm with the highest P(best) wins when P(best) ≥ 0.95 and its expected loss is below the
    threshold of caring; else keep running."""
    best = np.asarray(prob_best_by_arm, dtype=np.float64)
    loss = np.asarray(expected_loss_by_arm, dtype=np.float64)
    seen = np.asarray(exposures, dtype=np.float64)
    if best.ndim != 1 or best.shape != loss.shape or best.shape != seen.shape:
        raise ValueError(
            "prob_best, expected_loss and exposures must be 1-D and of one length, got "
            f"{best.shape}, {loss.shape}, {seen.shape}"
        )
    if best.size < 2:
        raise ValueError(f"need at least 2 arms, got {best.size}")
    labels = names or [f"arm {k}" for k in range(best.size)]
    if len(labels) != best.size:
        raise ValueError(f"{len(labels)} names for {best.size} arms")
    if threshold_of_caring <= 0 or minimum_sample < 1:
        raise ValueError("threshold_of_caring must be > 0 and minimum_sample ≥ 1")
    short = [labels[k] for k in range(best.size) if seen[k] < minimum_sample]
    if short:
        return Decision(
            "not enough data",
            None,
            f"{', '.join(short)} below the minimum sample of {minimum_sample} exposures "
            f"(have {', '.join(f'{labels[k]}={int(seen[k])}' for k in range(best.size))})",
        )
    leader = int(np.argmax(best))
    name = labels[leader]
    if best[leader] >= prob_to_win and loss[leader] < threshold_of_caring:
        return Decision(
            "winner",
            name,
            f"{name}: P(best) = {best[leader]:.4f} ≥ {prob_to_win} and expected loss "
            f"{loss[leader]:.2e} < {threshold_of_caring:g}",
        )
    if best[leader] < prob_to_win:
        why = f"P(best) = {best[leader]:.4f} < {prob_to_win}"
    else:
        why = f"expected loss {loss[leader]:.2e} ≥ threshold of caring {threshold_of_caring:g}"
    return Decision("keep running", None, f"leader {name}: {why}")
