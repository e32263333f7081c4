"""From a window's counts to the answers people act on: posterior records (design.md §5),
superiority and decisions, the bandit's allocation, and the data-quality figures.

Pure functions over counts and the stats module; no Dagster, no DuckDB.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from diana_pipeline import stats
from diana_pipeline.config import ExperimentsConfig, ExperimentTest
from diana_pipeline.counting import Quality, WindowCounts
from diana_pipeline.stats import FloatArray

SRM_ERROR_P = 0.001
SRM_WARN_P = 0.01
MULTI_VARIANT_WARN_SHARE = 0.01
ORPHAN_WARN_SHARE = 0.01


def posterior_records(
    config: ExperimentsConfig,
    counts: Mapping[datetime, list[WindowCounts]],
    windows: list[tuple[datetime, datetime]],
    timestamp: datetime,
) -> list[dict[str, object]]:
    """One record per window, test and variant, cumulative to the window's end (design.md §5).
    The statistics of every window are computed together, one vectorised pass per test."""
    if not windows:
        return []
    by_test = {}
    for test in config.tests:
        rows = [
            [_counts_of(counts[start], test.test_id, variant) for variant in test.variant_names]
            for start, _ in windows
        ]
        alphas = test.prior.alpha + np.array([[r.successes_total for r in w] for w in rows], float)
        betas = test.prior.beta + np.array(
            [[r.exposures_total - r.successes_total for r in w] for w in rows], float
        )
        best, loss = stats.prob_best_and_expected_loss(alphas, betas)
        low, high = stats.credible_interval(alphas, betas)
        by_test[test.test_id] = (rows, alphas, betas, best, loss, low, high)
    records: list[dict[str, object]] = []
    for t, (window_start, window_end) in enumerate(windows):
        for test in config.tests:
            rows, alphas, betas, best, loss, low, high = by_test[test.test_id]
            for k, row in enumerate(rows[t]):
                records.append(
                    {
                        "test_id": test.test_id,
                        "variant": row.variant,
                        "window_start": window_start,
                        "window_end": window_end,
                        "timestamp": timestamp,
                        "alpha": float(alphas[t, k]),
                        "beta": float(betas[t, k]),
                        "exposures_inc": row.exposures_inc,
                        "successes_inc": row.successes_inc,
                        "exposures_total": row.exposures_total,
                        "successes_total": row.successes_total,
                        "success_rate_total": (
                            row.successes_total / row.exposures_total
                            if row.exposures_total
                            else 0.0
                        ),
                        "mean": float(alphas[t, k] / (alphas[t, k] + betas[t, k])),
                        "ci_low": float(low[t, k]),
                        "ci_high": float(high[t, k]),
                        "prob_best": float(best[t, k]),
                        "expected_loss": float(loss[t, k]),
                    }
                )
    return records


def _counts_of(counts: list[WindowCounts], test_id: str, variant: str) -> WindowCounts:
    for row in counts:
        if row.test_id == test_id and row.variant == variant:
            return row
    raise KeyError(f"no counts for {test_id}/{variant}")


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


def _by_window(
    test: ExperimentTest, records: list[dict[str, object]]
) -> tuple[list[object], list[list[dict[str, object]]], FloatArray, FloatArray]:
    """The test's records by window (in window order), each window's in variant order, with
    α and β as (windows, variants) arrays."""
    grouped: dict[object, list[dict[str, object]]] = {}
    for record in records:
        if record["test_id"] == test.test_id:
            grouped.setdefault(record["window_start"], []).append(record)
    starts = sorted(grouped)  # type: ignore[type-var]
    table = [_in_variant_order(test, grouped[start]) for start in starts]
    shape = (len(starts), len(test.variant_names))
    alphas = np.array([[r["alpha"] for r in row] for row in table], float).reshape(shape)
    betas = np.array([[r["beta"] for r in row] for row in table], float).reshape(shape)
    return starts, table, alphas, betas


def _window_major(config: ExperimentsConfig, rows_by_test: dict[str, list[dict]]) -> list[dict]:
    """Rows of all tests, ordered by window, then test in the configured order."""
    rank = {test.test_id: t for t, test in enumerate(config.tests)}
    rows = [row for test_rows in rows_by_test.values() for row in test_rows]
    return sorted(rows, key=lambda row: (row["window_start"], rank[row["test_id"]]))


def superiority_rows(
    config: ExperimentsConfig, records: list[dict[str, object]]
) -> list[dict[str, object]]:
    """Per window, test and variant: P(best), expected loss, P(beats each other variant), the
    lift over control (the first variant) with its 95% interval, and the test's decision.
    Every window of a test is computed together."""
    rows_by_test: dict[str, list[dict]] = {}
    for test in config.tests:
        starts, table, alphas, betas = _by_window(test, records)
        if not starts:
            continue
        arms = range(len(test.variant_names))
        beats = {
            (k, j): np.atleast_1d(
                stats.prob_superiority(alphas[:, k], betas[:, k], alphas[:, j], betas[:, j])
            )
            for k in arms
            for j in arms
            if j != k
        }
        zeros = np.zeros(len(starts))
        lifts = [(zeros, zeros)] + [
            stats.uplift_interval(alphas[:, 0], betas[:, 0], alphas[:, k], betas[:, k])
            for k in arms[1:]
        ]
        rows = rows_by_test[test.test_id] = []
        for t, mine in enumerate(table):
            decision = stats.decide(
                [r["prob_best"] for r in mine],
                [r["expected_loss"] for r in mine],
                [r["exposures_total"] for r in mine],
                test.threshold_of_caring,
                test.minimum_sample,
                names=[str(r["variant"]) for r in mine],
            )
            for k, record in enumerate(mine):
                rows.append(
                    {
                        "test_id": test.test_id,
                        "variant": record["variant"],
                        "window_start": record["window_start"],
                        "prob_best": record["prob_best"],
                        "expected_loss": record["expected_loss"],
                        "prob_beats": {
                            str(mine[j]["variant"]): float(beats[(k, j)][t]) for j in arms if j != k
                        },
                        "lift_vs_control_low": float(lifts[k][0][t]),
                        "lift_vs_control_high": float(lifts[k][1][t]),
                        "decision": decision.verdict,
                        "winner": decision.winner,
                        "reason": decision.reason,
                    }
                )
    return _window_major(config, rows_by_test)


def allocation_rows(
    config: ExperimentsConfig, records: list[dict[str, object]]
) -> list[dict[str, object]]:
    """The bandit's recommendation for the window after each one: Thompson weights with a
    floor. Every window of a test is computed together."""
    rows_by_test: dict[str, list[dict]] = {}
    for test in config.tests:
        starts, _, alphas, betas = _by_window(test, records)
        if not starts:
            continue
        floor = min(config.statistics.thompson_floor, 1.0 / len(test.variants))
        weights = stats.thompson_allocation(alphas, betas, floor=floor)
        rows_by_test[test.test_id] = [
            {
                "test_id": test.test_id,
                "variant": variant.name,
                "window_start": start,
                "configured_allocation": variant.allocation,
                "recommended_allocation": float(weights[t, k]),
            }
            for t, start in enumerate(starts)
            for k, variant in enumerate(test.variants)
        ]
    return _window_major(config, rows_by_test)


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
