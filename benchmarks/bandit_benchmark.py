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
error (p < 0.001 at any window): Diana's anytime-valid check against the weights in force,
and the chi-square against the configured split. Then the A/A case: four arms at the same
rate under Diana's bandit, decided window by window through the product's own
`superiority_rows` (period-weighted rates, anytime-valid evidence): runs that ever call a
winner.

    .venv/bin/python -m benchmarks.bandit_benchmark            # docs/benchmarks.md
    .venv/bin/python -m benchmarks.bandit_benchmark --replications 50 --no-write
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

import numpy as np

from benchmarks.sequential_benchmark import progress, wilson
from diana_pipeline import stats
from diana_pipeline.analysis import posterior_records, superiority_rows
from diana_pipeline.config import parse_config
from diana_pipeline.counting import WindowCounts
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
REGRET_SHARE, BIAS_SE, AA_TARGET = 0.5, 0.5, 0.05


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
    exposures: np.ndarray  # (R, W, K)
    successes: np.ndarray  # (R, W, K)


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


def simulate(
    policy: Policy, drifting: bool, replications: int, seed: int, rates: np.ndarray = RATES
) -> Outcome:
    """`replications` independent runs of the policy over DAYS days."""
    rng = np.random.default_rng(seed)
    windows, arms = DAYS * WINDOWS_PER_DAY, RATES.size
    exposures = np.zeros((replications, windows, arms), dtype=np.int64)
    successes = np.zeros_like(exposures)
    weights = np.full((replications, arms), 1.0 / arms)
    in_force = np.zeros((replications, windows, arms))
    seen = np.zeros((replications, arms))  # exposures so far
    srm_configured = np.zeros(replications, dtype=bool)
    for w in range(windows):
        if policy.update_every and w and w % policy.update_every == 0:
            weights = weights_from(exposures[:, :w], successes[:, :w], policy.top_two)
        in_force[:, w] = weights
        exposures[:, w] = rng.multinomial(USERS_PER_WINDOW, weights)
        successes[:, w] = rng.binomial(exposures[:, w], rates * drift(w, drifting))
        # The chi-square check of the cumulative exposures against the configured split.
        seen += exposures[:, w]
        srm_configured |= stats.srm_pvalue(seen, np.full(arms, 1.0 / arms)) < SRM_ERROR_P
        if w % WINDOWS_PER_DAY == WINDOWS_PER_DAY - 1:
            progress(f"{policy.name}{', drift' if drifting else ''}: day {w // 24 + 1}")
    # Diana's check: the anytime-valid e-process against the weights in force, every window.
    srm_in_force = np.array(
        [stats.srm_anytime_pvalue(exposures[r], in_force[r]) < SRM_ERROR_P
         for r in range(replications)]
    )  # fmt: skip
    multipliers = np.array([drift(w, drifting) for w in range(windows)])
    best_rate = rates.max() * multipliers  # (W,)
    expected_conversions = (exposures * (rates[None, None, :] * multipliers[None, :, None])).sum(
        axis=(1, 2)
    )
    regret = USERS_PER_WINDOW * best_rate.sum() - expected_conversions
    last_day = exposures[:, -WINDOWS_PER_DAY:].sum(axis=1)
    best_share = last_day[:, rates.argmax()] / last_day.sum(axis=1)
    # The truth each estimate aims at: the arm's rate averaged over the windows' users.
    truth = rates * multipliers.mean()
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
        exposures=exposures,
        successes=successes,
    )


AA_RATE = 0.12
AA_TEST = parse_config(
    """
tests:
  - test_id: aa
    mode: bandit
    variants:
      - {name: a, allocation: 0.25}
      - {name: b, allocation: 0.25}
      - {name: c, allocation: 0.25}
      - {name: d, allocation: 0.25}
"""
)


def ever_called_a_winner(exposures: np.ndarray, successes: np.ndarray) -> bool:
    """Whether the product's decision (superiority_rows on posterior records with the
    period-weighted rates; the shipped defaults) calls a winner at any window of one run
    ((W, K) users and successes per window; each window's users convert within it)."""
    names = AA_TEST.tests[0].variant_names
    starts = [datetime(2026, 1, 1) + timedelta(hours=w) for w in range(exposures.shape[0] + 1)]
    windows = list(pairwise(starts))
    n_total, s_total = exposures.cumsum(axis=0), successes.cumsum(axis=0)
    counts, period = {}, {}
    for w, (start, _) in enumerate(windows):
        counts[start] = [
            WindowCounts("aa", name, int(exposures[w, k]), int(successes[w, k]),
                         int(n_total[w, k]), int(s_total[w, k]))
            for k, name in enumerate(names)
        ]  # fmt: skip
        rates, errors, used = stats.period_weighted_rates(exposures[: w + 1], successes[: w + 1])
        if used:
            period[(start, "aa")] = {n: (float(rates[k]), float(errors[k]))
                                     for k, n in enumerate(names)}  # fmt: skip
    records = posterior_records(AA_TEST, counts, windows, starts[-1], period)
    return any(row["winner"] is not None for row in superiority_rows(AA_TEST, records))


def aa_false_winners(drifting: bool, replications: int, seed: int) -> tuple[int, int]:
    """Runs of Diana's bandit on four equal arms that ever called a winner, of how many."""
    policy = Policy("A/A", 1)
    outcome = simulate(policy, drifting, replications, seed, rates=np.full(4, AA_RATE))
    called = 0
    for r in range(replications):
        called += ever_called_a_winner(outcome.exposures[r], outcome.successes[r])
        if r % 20 == 19:
            progress(f"A/A{', drift' if drifting else ''}: decided {r + 1} runs")
    return called, replications


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
            "false SRM errors: anytime, weights in force",
            "χ², configured split",
        ],
        rows,
        align="llrrrrrrr",
    )
    aa_rows = []
    for drifting in (False, True):
        called, runs = aa_false_winners(drifting, args.replications, args.seed + 100)
        met &= called / runs <= AA_TARGET
        aa_rows.append(("daily cycle ±20%" if drifting else "none", wilson(called, runs)))
    aa = table(["drift", "runs that ever called a winner"], aa_rows, align="lr")
    rendered += (
        f"\n\nA/A in bandit mode: four arms at {AA_RATE}, Diana's bandit every window "
        "(top-two), the shipped decision rule on the period-weighted rates:\n\n" + aa
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
            f"under drift, no false SRM errors, A/A false winners ≤ {AA_TARGET:.0%}: "
            f"{'met' if met else 'missed'}.",
            rendered,
        )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
