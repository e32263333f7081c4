"""Bandit benchmark (issue 23): what steering traffic by the allocation buys, and whether the
statistics stay right while the weights move. A simulation of the statistics alone (no
pipeline): every figure comes with its 95% interval over the replications.

Four arms (conversion 0.10, 0.11, 0.12, 0.13), 14 days of hourly windows, USERS_PER_WINDOW
new users a window, with and without drift (every arm's rate moves together by ±20% over a
day). Three policies: a fixed equal split; a bandit whose weights are updated once a day
(GrowthBook's recommended cadence); and Diana's, updated every window. A bandit's weights
are the configured split until every arm has BURN_IN users, then top-two Thompson sampling
(or plain, in its own rows) with a floor of 0.01 per arm, from normal posteriors of the
period-weighted rates (stats.period_weighted_rates: each window a period).

Reported per policy: regret (conversions lost against always playing the best arm), the
best arm's share of the last day's traffic, the final estimates' bias in standard errors
(pooled counts against period-weighted), and the share of runs with a false sample-ratio
error (p < 0.001 at any window) when the check compares exposures with the weights in force,
and with the configured split.

    .venv/bin/python -m benchmarks.bandit_benchmark            # docs/benchmarks.md
    .venv/bin/python -m benchmarks.bandit_benchmark --replications 50 --no-write
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np

from benchmarks.sequential_benchmark import progress, wilson
from diana_pipeline import stats
from diana_pipeline.harness.docs import BENCHMARKS_PAGE, write_section
from diana_pipeline.markdown import table

RATES = np.array([0.10, 0.11, 0.12, 0.13])
DAYS, WINDOWS_PER_DAY = 14, 24
USERS_PER_WINDOW = 1_000
DRIFT = 0.2  # ± share of every rate over a day
BURN_IN = 100  # users per arm before the weights move
FLOOR = 0.01
SRM_ERROR_P = 0.001
# Targets (issue 23).
REGRET_SHARE, BIAS_SE = 0.5, 0.5


@dataclass(frozen=True)
class Policy:
    name: str
    update_every: int | None  # windows between weight updates; None: the fixed split
    top_two: bool = True


POLICIES = (
    Policy("equal split", None),
    Policy("bandit, daily (top-two)", WINDOWS_PER_DAY),
    Policy("Diana: bandit, every window (top-two)", 1),
    Policy("bandit, daily (plain Thompson)", WINDOWS_PER_DAY, top_two=False),
    Policy("Diana: bandit, every window (plain Thompson)", 1, top_two=False),
)


@dataclass
class Outcome:
    """Per replication: regret, the best arm's last-day share, per arm the pooled and the
    period-weighted estimates' errors in their standard errors, and false SRM errors."""

    regret: np.ndarray  # (R,)
    best_share: np.ndarray  # (R,)
    pooled_z: np.ndarray  # (R, K)
    weighted_z: np.ndarray  # (R, K)
    srm_in_force: np.ndarray  # (R,) bool
    srm_configured: np.ndarray  # (R,) bool


def drift(window: int, drifting: bool) -> float:
    """Every arm's rate multiplier in a window: a daily cycle."""
    return 1.0 + (DRIFT * np.sin(2 * np.pi * window / WINDOWS_PER_DAY) if drifting else 0.0)


def weights_from(exposures: np.ndarray, successes: np.ndarray, top_two: bool) -> np.ndarray:
    """The bandit's next weights per replication from its windows so far, (R, W, K) each:
    the configured equal split during burn-in, then (top-two) Thompson sampling on normal
    posteriors of the period-weighted rates, with the floor."""
    replications, _, arms = exposures.shape
    weights = np.full((replications, arms), 1.0 / arms)
    burnt_in = exposures.sum(axis=1).min(axis=1) >= BURN_IN
    if burnt_in.any():
        rates, errors, _ = stats.period_weighted_rates(exposures[burnt_in], successes[burnt_in])
        best = stats.prob_best_normal(rates, np.maximum(errors, 1e-9))
        played = stats.top_two_weights(best) if top_two else best
        weights[burnt_in] = FLOOR + (1 - arms * FLOOR) * played
    return weights


def simulate(policy: Policy, drifting: bool, replications: int, seed: int) -> Outcome:
    """`replications` independent runs of the policy over DAYS days."""
    rng = np.random.default_rng(seed)
    windows, arms = DAYS * WINDOWS_PER_DAY, RATES.size
    exposures = np.zeros((replications, windows, arms), dtype=np.int64)
    successes = np.zeros_like(exposures)
    weights = np.full((replications, arms), 1.0 / arms)
    seen = np.zeros((replications, arms))  # exposures so far
    expected = np.zeros((replications, arms))  # what the weights in force would give
    srm_in_force = np.zeros(replications, dtype=bool)
    srm_configured = np.zeros(replications, dtype=bool)
    for w in range(windows):
        if policy.update_every and w and w % policy.update_every == 0:
            weights = weights_from(exposures[:, :w], successes[:, :w], policy.top_two)
        exposures[:, w] = rng.multinomial(USERS_PER_WINDOW, weights)
        successes[:, w] = rng.binomial(exposures[:, w], RATES * drift(w, drifting))
        # The SRM check of the cumulative exposures: against the weights in force window by
        # window, and against the configured split.
        seen += exposures[:, w]
        expected += USERS_PER_WINDOW * weights
        srm_in_force |= stats.srm_pvalue(seen, expected) < SRM_ERROR_P
        srm_configured |= stats.srm_pvalue(seen, np.full(arms, 1.0 / arms)) < SRM_ERROR_P
        if w % WINDOWS_PER_DAY == WINDOWS_PER_DAY - 1:
            progress(f"{policy.name}{', drift' if drifting else ''}: day {w // 24 + 1}")
    multipliers = np.array([drift(w, drifting) for w in range(windows)])
    best_rate = RATES.max() * multipliers  # (W,)
    expected_conversions = (exposures * (RATES[None, None, :] * multipliers[None, :, None])).sum(
        axis=(1, 2)
    )
    regret = USERS_PER_WINDOW * best_rate.sum() - expected_conversions
    last_day = exposures[:, -WINDOWS_PER_DAY:].sum(axis=1)
    best_share = last_day[:, RATES.argmax()] / last_day.sum(axis=1)
    # The truth each estimate aims at: the arm's rate averaged over the windows' users.
    truth = RATES * multipliers.mean()
    n, s = exposures.sum(axis=1), successes.sum(axis=1)
    pooled = s / n
    pooled_se = np.sqrt(pooled * (1 - pooled) / n)
    weighted, weighted_se, _ = stats.period_weighted_rates(exposures, successes)
    return Outcome(
        regret=regret,
        best_share=best_share,
        pooled_z=(pooled - truth) / pooled_se,
        weighted_z=(weighted - truth) / weighted_se,
        srm_in_force=srm_in_force,
        srm_configured=srm_configured,
    )


def mean_interval(values: np.ndarray, digits: int = 0, percent: bool = False) -> str:
    """The mean with its 95% interval (normal, over the replications), as text."""
    mean = float(np.mean(values))
    half = 1.96 * float(np.std(values, ddof=1)) / np.sqrt(values.size)
    if percent:
        return f"{mean:.1%} [{mean - half:.1%}, {mean + half:.1%}]"
    return f"{mean:,.{digits}f} [{mean - half:,.{digits}f}, {mean + half:,.{digits}f}]"


def worst_bias(z: np.ndarray) -> tuple[float, str]:
    """The arm whose mean error in standard errors is furthest from 0: that bias, as a
    number and as text with its 95% interval."""
    means = z.mean(axis=0)
    arm = int(np.argmax(np.abs(means)))
    return float(means[arm]), mean_interval(z[:, arm], digits=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replications", type=int, default=200)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    rows, met = [], True
    for drifting in (False, True):
        outcomes = {
            policy.name: simulate(policy, drifting, args.replications, args.seed + k)
            for k, policy in enumerate(POLICIES)
        }
        equal = outcomes["equal split"].regret.mean()
        for policy in POLICIES:
            o = outcomes[policy.name]
            _, pooled_text = worst_bias(o.pooled_z)
            weighted, weighted_text = worst_bias(o.weighted_z)
            if policy.name.startswith("Diana") and policy.top_two:
                met &= o.regret.mean() <= REGRET_SHARE * equal
                met &= abs(weighted) <= BIAS_SE and not o.srm_in_force.any()
            rows.append(
                (
                    "daily cycle ±20%" if drifting else "none",
                    policy.name,
                    mean_interval(o.regret),
                    f"{o.regret.mean() / equal:.0%}",
                    mean_interval(o.best_share, percent=True),
                    pooled_text,
                    weighted_text,
                    wilson(int(o.srm_in_force.sum()), o.srm_in_force.size),
                    wilson(int(o.srm_configured.sum()), o.srm_configured.size),
                )
            )
    rendered = table(
        [
            "drift",
            "policy",
            "regret (conversions)",
            "of the equal split's",
            "best arm's share, last day",
            "bias, pooled (SE)",
            "bias, period-weighted (SE)",
            "false SRM errors, weights in force",
            "against the configured split",
        ],
        rows,
        align="llrrrrrrr",
    )
    print(rendered)
    if not args.no_write:
        write_section(
            BENCHMARKS_PAGE,
            "bandit",
            "Bandit: regret, bias and SRM while the weights move",
            "python -m benchmarks.bandit_benchmark "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            f"{args.replications} replications per row of a simulation of the statistics "
            f"alone: arms at {', '.join(f'{r:.2f}' for r in RATES)}, {DAYS} days of hourly "
            f"windows, {USERS_PER_WINDOW:,} new users a window; a bandit keeps the equal "
            f"split until every arm has {BURN_IN} users, then plays top-two (or plain) "
            f"Thompson sampling on normal posteriors of the period-weighted rates, floor "
            f"{FLOOR}. Bias: the mean error of an arm's final estimate against its average "
            "rate, in its standard errors (the arm furthest from 0). Each figure with its "
            "95% interval. Targets (issue 23), for Diana's bandit with top-two: regret ≤ "
            f"{REGRET_SHARE:.0%} of the equal split's, period-weighted bias ≤ {BIAS_SE} SE "
            f"under drift, no false SRM errors: {'met' if met else 'missed'}.",
            rendered,
        )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
