"""From a window's counts to the answers people act on: posterior records (design.md §5),
superiority and decisions, the bandit's allocation, and the data-quality figures.

Pure functions over counts and the stats module; no Dagster, no DuckDB.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from diana_pipeline import stats
from diana_pipeline.config import ExperimentsConfig, ExperimentTest
from diana_pipeline.counting import Quality, WindowCounts

SRM_ERROR_P = 0.001
SRM_WARN_P = 0.01
MULTI_VARIANT_WARN_SHARE = 0.01
ORPHAN_WARN_SHARE = 0.01


def posterior_records(
    config: ExperimentsConfig,
    counts: list[WindowCounts],
    window_start: datetime,
    window_end: datetime,
    timestamp: datetime,
) -> list[dict[str, object]]:
    """One record per test and variant, cumulative to the window's end (design.md §5)."""
    records: list[dict[str, object]] = []
    by_key = {(c.test_id, c.variant): c for c in counts}
    for test in config.tests:
        rows = [by_key[(test.test_id, v)] for v in test.variant_names]
        alphas = np.array([test.prior.alpha + r.successes_total for r in rows], dtype=float)
        betas = np.array(
            [test.prior.beta + r.exposures_total - r.successes_total for r in rows], dtype=float
        )
        best, loss = stats.prob_best_and_expected_loss(alphas, betas)
        low, high = stats.credible_interval(alphas, betas)
        for k, row in enumerate(rows):
            records.append(
                {
                    "test_id": test.test_id,
                    "variant": row.variant,
                    "window_start": window_start,
                    "window_end": window_end,
                    "timestamp": timestamp,
                    "alpha": float(alphas[k]),
                    "beta": float(betas[k]),
                    "exposures_inc": row.exposures_inc,
                    "successes_inc": row.successes_inc,
                    "exposures_total": row.exposures_total,
                    "successes_total": row.successes_total,
                    "success_rate_total": (
                        row.successes_total / row.exposures_total if row.exposures_total else 0.0
                    ),
                    "mean": float(alphas[k] / (alphas[k] + betas[k])),
                    "ci_low": float(low[k]),
                    "ci_high": float(high[k]),
                    "prob_best": float(best[k]),
                    "expected_loss": float(loss[k]),
                }
            )
    return records


def _in_variant_order(test: ExperimentTest, records: list[dict[str, object]]) -> list[dict]:
    """The test's records in the order of its configured variants (control first), whatever
    order they were stored or read in."""
    by_variant = {r["variant"]: r for r in records if r["test_id"] == test.test_id}
    return [by_variant[name] for name in test.variant_names]


def in_config_order(
    config: ExperimentsConfig, records: list[dict[str, object]]
) -> list[dict[str, object]]:
    """Records by window, then tests and variants in their configured order."""
    rank = {
        (test.test_id, name): (t, v)
        for t, test in enumerate(config.tests)
        for v, name in enumerate(test.variant_names)
    }
    unknown = (len(rank), 0)
    return sorted(
        records,
        key=lambda r: (r["window_start"], rank.get((r["test_id"], r["variant"]), unknown)),
    )


def superiority_rows(
    config: ExperimentsConfig, records: list[dict[str, object]]
) -> list[dict[str, object]]:
    """Per test and variant: P(best), expected loss, P(beats each other variant), the lift
    over control (the first variant) with its 95% interval, and the test's decision."""
    rows: list[dict[str, object]] = []
    for test in config.tests:
        mine = _in_variant_order(test, records)
        alphas = np.array([r["alpha"] for r in mine], dtype=float)
        betas = np.array([r["beta"] for r in mine], dtype=float)
        decision = stats.decide(
            [r["prob_best"] for r in mine],
            [r["expected_loss"] for r in mine],
            [r["exposures_total"] for r in mine],
            test.threshold_of_caring,
            test.minimum_sample,
            names=[str(r["variant"]) for r in mine],
        )
        for k, record in enumerate(mine):
            beats = {
                str(other["variant"]): float(
                    stats.prob_superiority(alphas[k], betas[k], alphas[j], betas[j])
                )
                for j, other in enumerate(mine)
                if j != k
            }
            if k == 0:
                lift_low = lift_high = 0.0
            else:
                lift_low, lift_high = stats.uplift_interval(
                    alphas[0], betas[0], alphas[k], betas[k]
                )
            rows.append(
                {
                    "test_id": test.test_id,
                    "variant": record["variant"],
                    "window_start": record["window_start"],
                    "prob_best": record["prob_best"],
                    "expected_loss": record["expected_loss"],
                    "prob_beats": beats,
                    "lift_vs_control_low": float(lift_low),
                    "lift_vs_control_high": float(lift_high),
                    "decision": decision.verdict,
                    "winner": decision.winner,
                    "reason": decision.reason,
                }
            )
    return rows


def allocation_rows(
    config: ExperimentsConfig, records: list[dict[str, object]]
) -> list[dict[str, object]]:
    """The bandit's recommendation for the next window: Thompson weights with a floor."""
    floor = config.statistics.thompson_floor
    rows: list[dict[str, object]] = []
    for test in config.tests:
        mine = _in_variant_order(test, records)
        floor_here = min(floor, 1.0 / len(mine))
        weights = stats.thompson_allocation(
            [r["alpha"] for r in mine], [r["beta"] for r in mine], floor=floor_here
        )
        for variant, record, weight in zip(test.variants, mine, weights, strict=True):
            rows.append(
                {
                    "test_id": test.test_id,
                    "variant": variant.name,
                    "window_start": record["window_start"],
                    "configured_allocation": variant.allocation,
                    "recommended_allocation": float(weight),
                }
            )
    return rows


@dataclass(frozen=True)
class CheckFigure:
    """A data-quality check's verdict: passed, or failed with severity warn or error."""

    name: str
    passed: bool
    severity: str  # "warn" | "error" (when not passed)
    description: str
    metadata: dict[str, object]


def quality_checks(
    config: ExperimentsConfig, counts: list[WindowCounts], quality: dict[str, Quality]
) -> list[CheckFigure]:
    """Sample-ratio mismatch, users in several variants, clicks without exposure and
    successes ≤ exposures, over every test, cumulative to the window's end."""
    srm_worst, srm_figures = 1.0, {}
    multi, exposed_all, orphans, successes_all = 0, 0, 0, 0
    impossible = []
    for test in config.tests:
        rows = [c for c in counts if c.test_id == test.test_id]
        exposures = [r.exposures_total for r in rows]
        pvalue = stats.srm_pvalue(exposures, [v.allocation for v in test.variants])
        srm_figures[test.test_id] = {"exposures": exposures, "p_value": round(float(pvalue), 6)}
        srm_worst = min(srm_worst, float(pvalue))
        q = quality.get(test.test_id, Quality(0, 0))
        multi += q.multi_variant_users
        orphans += q.orphan_success_users
        exposed_all += sum(exposures)
        successes_all += sum(r.successes_total for r in rows)
        impossible += [
            f"{r.test_id}/{r.variant}" for r in rows if r.successes_total > r.exposures_total
        ]
    multi_share = multi / (exposed_all + multi) if exposed_all + multi else 0.0
    orphan_share = orphans / (successes_all + orphans) if successes_all + orphans else 0.0
    return [
        CheckFigure(
            "sample_ratio_mismatch",
            srm_worst >= SRM_WARN_P,
            "error" if srm_worst < SRM_ERROR_P else "warn",
            f"chi-square of exposures against the allocation: error at p < {SRM_ERROR_P}, "
            f"warning below {SRM_WARN_P}",
            {"worst_p_value": round(srm_worst, 6), "by_test": srm_figures},
        ),
        CheckFigure(
            "users_in_several_variants",
            multi_share <= MULTI_VARIANT_WARN_SHARE,
            "warn",
            f"users seen in more than one variant (excluded): warning above "
            f"{MULTI_VARIANT_WARN_SHARE:.0%}",
            {"users": multi, "share": round(multi_share, 6)},
        ),
        CheckFigure(
            "clicks_without_exposure",
            orphan_share <= ORPHAN_WARN_SHARE,
            "warn",
            f"users with success events but no exposure: warning above {ORPHAN_WARN_SHARE:.0%}",
            {"users": orphans, "share": round(orphan_share, 6)},
        ),
        CheckFigure(
            "successes_within_exposures",
            not impossible,
            "error",
            "successes never exceed exposures",
            {"violations": impossible},
        ),
    ]


def summarize_test(
    test_id: str,
    records: list[dict[str, object]],
    threshold_of_caring: float,
    minimum_sample: int,
) -> dict[str, object]:
    """What diana-analyze reports for one test in one window, recomputed from α and β alone:
    per variant the mean, 95% credible interval, P(best) and expected loss; the probability
    that each variant beats each other; the decision. `records` come in variant order and
    need variant, window_start, alpha, beta and exposures_total."""
    alphas = np.array([r["alpha"] for r in records], dtype=float)
    betas = np.array([r["beta"] for r in records], dtype=float)
    names = [str(r["variant"]) for r in records]
    exposures = [int(r["exposures_total"]) for r in records]  # type: ignore[call-overload]
    best, loss = stats.prob_best_and_expected_loss(alphas, betas)
    low, high = stats.credible_interval(alphas, betas)
    decision = stats.decide(best, loss, exposures, threshold_of_caring, minimum_sample, names=names)
    beats = {
        a: {
            b: float(stats.prob_superiority(alphas[i], betas[i], alphas[j], betas[j]))
            for j, b in enumerate(names)
            if j != i
        }
        for i, a in enumerate(names)
    }
    first = records[0]
    return {
        "test_id": test_id,
        "window_start": first["window_start"],
        "window_end": first.get("window_end"),
        "timestamp": first.get("timestamp"),
        "variants": [
            {
                "variant": names[k],
                "alpha": float(alphas[k]),
                "beta": float(betas[k]),
                "exposures": exposures[k],
                "successes": records[k].get("successes_total"),
                "mean": float(alphas[k] / (alphas[k] + betas[k])),
                "ci_low": float(low[k]),
                "ci_high": float(high[k]),
                "prob_best": float(best[k]),
                "expected_loss": float(loss[k]),
            }
            for k in range(len(records))
        ],
        "prob_superiority": beats,
        "decision": {
            "verdict": decision.verdict,
            "winner": decision.winner,
            "reason": decision.reason,
        },
    }
