"""From a window's counts to the answers people act on: posterior records (docs/design.md §5),
superiority and decisions, the bandit's allocation, and the data-quality figures.

Pure functions over counts and the stats module; no Dagster, no DuckDB.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import numpy as np

from diana_pipeline import stats
from diana_pipeline.bandit_analysis import (
    anytime_pvalues,
    has_period_weighted,
    lift_sequence,
    normal_posteriors,
    period_weighted_looks,
)
from diana_pipeline.config import ALL_SEGMENTS, ExperimentsConfig, ExperimentTest
from diana_pipeline.counting import Quality, WindowCounts
from diana_pipeline.metric_analysis import PrimaryLook, primary_looks
from diana_pipeline.sinks.records import finite_or_none
from diana_pipeline.stats import FloatArray

SRM_ERROR_P = 0.001
SRM_WARN_P = 0.01
MULTI_VARIANT_WARN_SHARE = 0.01
ORPHAN_WARN_SHARE = 0.01
EARLY_CLICK_WARN_SHARE = 0.01
OTHER_VARIANT_CLICK_WARN_SHARE = 0.01

R = TypeVar("R", bound=Mapping[str, object])


def posterior_records(
    config: ExperimentsConfig,
    counts: Mapping[datetime, list[WindowCounts]],
    windows: list[tuple[datetime, datetime]],
    timestamp: datetime,
    period_weighted: Mapping[tuple[datetime, str], Mapping[str, tuple]] | None = None,
) -> list[dict[str, object]]:
    """One record per window, test and variant, cumulative to the window's end (docs/design.md §5).
    The statistics of every window are computed together, one vectorised pass per test.
    `period_weighted`: (window_start, test_id) → variant → (rate, se) of bandit tests
    (bandit_analysis.period_weighted); None in the records of the others."""
    period_weighted = period_weighted or {}
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
        exposures = np.array([[r.exposures_total for r in w] for w in rows], float)
        successes = np.array([[r.successes_total for r in w] for w in rows], float)
        figures = {
            **_posterior_figures(alphas, betas),
            **_anytime_figures(test, exposures, successes),
        }
        if test.mode == "bandit":
            # The pooled test assumes the configured split: a bandit's moved (docs/bandit.md).
            figures |= _bandit_anytime_figures(test, windows, period_weighted, exposures)
        if test.conversion_metric.role == "guardrail":
            sds = np.sqrt(alphas * betas / ((alphas + betas) ** 2 * (alphas + betas + 1)))
            margin = float(test.conversion_metric.margin or 0.0)
            figures["prob_worse_by_margin"] = stats.prob_lift_below(figures["mean"], sds, -margin)
        by_test[test.test_id] = (rows, alphas, betas, figures)
    records: list[dict[str, object]] = []
    for t, (window_start, window_end) in enumerate(windows):
        for test in config.tests:
            rows, alphas, betas, figures = by_test[test.test_id]
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
                        **{name: finite_or_none(values[t, k]) for name, values in figures.items()},
                        **_conversion_fields(test),
                        **dict(
                            zip(
                                ("rate_period_weighted", "rate_period_weighted_se"),
                                period_weighted.get((window_start, test.test_id), {}).get(
                                    row.variant, (None, None)
                                ),
                                strict=True,
                            )
                        ),
                    }
                )
    return records


def _conversion_fields(test: ExperimentTest) -> dict[str, object]:
    """What names the conversion among the test's metrics (docs/metrics.md), overall (for
    all users: docs/segments.md)."""
    metric = test.conversion_metric
    return {"metric": metric.name, "metric_type": "binary", "metric_role": metric.role,
            "dimension": ALL_SEGMENTS, "segment": ALL_SEGMENTS}  # fmt: skip


def is_conversion(test: ExperimentTest, record: Mapping[str, object]) -> bool:
    """An overall record of the test's conversion (records written before metrics and
    segments have neither field)."""
    return record.get("metric") in (None, test.conversion_metric.name) and is_overall(record)


def is_overall(record: Mapping[str, object]) -> bool:
    """A record of all the test's users, not of a segment."""
    return record.get("dimension") in (None, ALL_SEGMENTS)


def _anytime_figures(
    test: ExperimentTest, exposures: FloatArray, successes: FloatArray
) -> dict[str, FloatArray]:
    """Per look (window) and variant against the control: the anytime-valid p-value and the
    lift's confidence sequence at the decision's level 1 − α / (K − 1). Not running: each look
    from its own cumulative counts (docs/statistics.md)."""
    tuning = {"allocation": test.allocation, "expected_lift": test.expected_lift}
    low, high = stats.lift_confidence_sequence(
        exposures, successes, level=1 - decision_level(test), **tuning
    )
    return {
        "p_value_always_valid": stats.always_valid_pvalues(exposures, successes, **tuning),
        "lift_cs_low": low,
        "lift_cs_high": high,
    }


def _bandit_anytime_figures(
    test: ExperimentTest,
    windows: list[tuple[datetime, datetime]],
    period_weighted: Mapping[tuple[datetime, str], Mapping[str, tuple]],
    exposures: FloatArray,
) -> dict[str, FloatArray]:
    """A bandit test's anytime-valid figures per look (not running), from the normal
    posteriors of its period-weighted rates; NaN (null) for a window without them."""
    names = test.variant_names
    rows = [
        [{"rate_period_weighted": rate, "rate_period_weighted_se": se,
          "exposures_total": int(exposures[t, k])}
         for k, (rate, se) in enumerate(
             period_weighted.get((start, test.test_id), {}).get(n, (None, None)) for n in names)]
        for t, (start, _) in enumerate(windows)
    ]  # fmt: skip
    known = np.array([has_period_weighted(row) for row in rows])
    shape = exposures.shape
    figures = {name: np.full(shape, np.nan) for name in ANYTIME_FIELDS}
    if known.any():
        means, sds = normal_posteriors([row for row, ok in zip(rows, known, strict=True) if ok])
        low, high = lift_sequence(test, means, sds)
        figures["p_value_always_valid"][known] = anytime_pvalues(test, means, sds)
        figures["lift_cs_low"][known], figures["lift_cs_high"][known] = low, high
    return figures


ANYTIME_FIELDS = ("p_value_always_valid", "lift_cs_low", "lift_cs_high")


def decision_level(test: ExperimentTest) -> float:
    """The level each comparison is held to: α, Bonferroni over the K − 1 a winner makes."""
    return test.alpha / (len(test.variants) - 1)


def _posterior_figures(alphas: FloatArray, betas: FloatArray) -> dict[str, FloatArray]:
    """The figures of a posterior record that follow from α and β, as (windows, variants)
    arrays: the mean, the 95% credible interval, P(best) and the expected loss."""
    best, loss = stats.prob_best_and_expected_loss(alphas, betas)
    low, high = stats.credible_interval(alphas, betas)
    return {
        "mean": alphas / (alphas + betas),
        "ci_low": low,  # type: ignore[dict-item]
        "ci_high": high,  # type: ignore[dict-item]
        "prob_best": best,
        "expected_loss": loss,
    }


def _counts_of(counts: list[WindowCounts], test_id: str, variant: str) -> WindowCounts:
    for row in counts:
        if row.test_id == test_id and row.variant == variant:
            return row
    raise KeyError(f"no counts for {test_id}/{variant}")


def in_variant_order(records: Iterable[R], variant_names: Sequence[str]) -> list[R]:
    """A test's records in the order of its configured variants (control first), whatever
    order they were stored or read in; variants the configuration does not name come last,
    by name."""
    rank = {name: k for k, name in enumerate(variant_names)}
    return sorted(
        records, key=lambda r: (rank.get(str(r["variant"]), len(rank)), str(r["variant"]))
    )


def in_config_order(
    config: ExperimentsConfig, records: list[dict[str, object]]
) -> list[dict[str, object]]:
    """Records by window, then tests in their configured order (tests it does not name last,
    by id), then metrics (the conversion first, the others as listed), each group's
    in_variant_order."""
    tests = {test.test_id: test for test in config.tests}
    rank = {test_id: t for t, test_id in enumerate(tests)}
    groups: dict[tuple[object, ...], list[dict[str, object]]] = defaultdict(list)
    for record in records:
        test_id = str(record["test_id"])
        names = [m.name for m in tests[test_id].reported_metrics] if test_id in tests else []
        metric = names[0] if record.get("metric") is None and names else str(record["metric"])
        order = names.index(metric) if metric in names else len(names)
        segment = (str(record.get("dimension") or ALL_SEGMENTS) != ALL_SEGMENTS,
                   str(record.get("dimension")), str(record.get("segment")))  # fmt: skip
        key = (record["window_start"], rank.get(test_id, len(rank)), test_id, order, metric,
               *segment)  # fmt: skip
        groups[key].append(record)
    return [
        record
        for key in sorted(groups)  # type: ignore[type-var]
        for record in in_variant_order(
            groups[key], tests[key[2]].variant_names if key[2] in tests else []
        )
    ]


def _by_window(
    test: ExperimentTest,
    records: list[dict[str, object]],
    required: Collection[object] | None = None,
) -> tuple[list[object], list[list[dict[str, object]]], FloatArray, FloatArray]:
    """The test's records by window (in window order), each window's one per configured
    variant in variant order, with α and β as (windows, variants) arrays. Windows without a
    record of every variant are left out (earlier windows of a variant added since), unless
    `required` (default: every window) names them: then it is an error."""
    names = test.variant_names
    grouped: dict[object, list[dict[str, object]]] = {}
    for record in records:
        # A variant no longer configured has no arm in the comparison.
        if (
            record["test_id"] == test.test_id
            and record["variant"] in names
            and is_conversion(test, record)
        ):
            grouped.setdefault(record["window_start"], []).append(record)
    partial = [start for start, rows in grouped.items() if len(rows) != len(names)]
    if any(required is None or start in required for start in partial):
        raise ValueError(
            f"test {test.test_id} needs one record per variant ({', '.join(names)}) in each window"
        )
    starts = sorted(set(grouped) - set(partial))  # type: ignore[type-var]
    table = [in_variant_order(grouped[start], names) for start in starts]
    shape = (len(starts), len(names))
    alphas = np.array([[r["alpha"] for r in row] for row in table], float).reshape(shape)
    betas = np.array([[r["beta"] for r in row] for row in table], float).reshape(shape)
    return starts, table, alphas, betas


def _window_major(config: ExperimentsConfig, rows_by_test: dict[str, list[dict]]) -> list[dict]:
    """Rows of all tests, ordered by window, then test in the configured order."""
    rank = {test.test_id: t for t, test in enumerate(config.tests)}
    rows = [row for test_rows in rows_by_test.values() for row in test_rows]
    return sorted(rows, key=lambda row: (row["window_start"], rank[row["test_id"]]))


def superiority_rows(
    config: ExperimentsConfig,
    records: list[dict[str, object]],
    windows: Collection[datetime] | None = None,
) -> list[dict[str, object]]:
    """Per window, test and variant: P(best), expected loss, P(beats each other variant), the
    lift over control (the first variant) with its 95% credible interval, the anytime-valid
    p-value and lift confidence sequence so far (running minimum and intersection over the
    windows), and the test's decision. `records` hold every window up to the last one wanted,
    since the anytime-valid test reads them all; rows come out for `windows` (all when None).
    Every window of a test is computed together."""
    rows_by_test: dict[str, list[dict]] = {}
    for test in config.tests:
        starts, table, alphas, betas = _by_window(test, records, windows)
        keep = [t for t, start in enumerate(starts) if windows is None or start in windows]
        if not keep:
            continue
        evidence = _running_evidence(test, table)
        table, evidence = [table[t] for t in keep], [evidence[t] for t in keep]
        alphas, betas = alphas[keep], betas[keep]
        primary, looks = _decision_looks(test, records)
        compared = _compare(
            test, table, alphas, betas, evidence, _guardrails(test, records), primary
        )
        zeros = np.zeros(len(keep))
        lifts = [(zeros, zeros)] + [
            stats.uplift_interval(alphas[:, 0], betas[:, 0], alphas[:, k], betas[:, k])
            for k in range(1, len(test.variant_names))
        ]
        rows = rows_by_test[test.test_id] = []
        for t, (mine, (beats, decision)) in enumerate(zip(table, compared, strict=True)):
            look = looks.get(mine[0]["window_start"]) if looks is not None else None
            for k, record in enumerate(mine):
                rows.append(
                    {
                        "test_id": test.test_id,
                        "variant": record["variant"],
                        "window_start": record["window_start"],
                        "prob_best": look.prob_best[k] if look else record["prob_best"],
                        "expected_loss": record["expected_loss"],
                        "prob_beats": beats[str(record["variant"])],
                        "lift_vs_control_low": float(lifts[k][0][t]),
                        "lift_vs_control_high": float(lifts[k][1][t]),
                        **_evidence_of(look.evidence if look else evidence[t], k),
                        "decision": decision.verdict,
                        "winner": decision.winner,
                        "reason": decision.reason,
                    }
                )
    return _window_major(config, rows_by_test)


def _running_evidence(
    test: ExperimentTest, table: list[list[dict[str, object]]]
) -> list[stats.AnytimeEvidence]:
    """Per window of one test (`table`: its records by window, in variant order): every
    pair's anytime-valid p-value, running minimum over the windows so far, and each lift's
    confidence sequence, running intersection (both stay valid: docs/statistics.md)."""
    exposures = np.array([[r["exposures_total"] for r in row] for row in table], float)
    successes = np.array([[r["successes_total"] for r in row] for row in table], float)
    tuning = {"allocation": test.allocation, "expected_lift": test.expected_lift}
    arms = len(test.variants)
    pairs = np.stack(
        [
            stats.always_valid_pvalues(exposures, successes, control=j, **tuning)
            for j in range(arms)
        ],
        axis=-1,
    )  # (windows, arm, against)
    pairs = np.fmin.accumulate(pairs, axis=0)
    low, high = stats.lift_confidence_sequence(
        exposures, successes, level=1 - decision_level(test), **tuning
    )
    low, high = np.maximum.accumulate(low, axis=0), np.minimum.accumulate(high, axis=0)
    return [
        stats.AnytimeEvidence(pairs[t], low[t], high[t], test.alpha, test.rope)
        for t in range(len(table))
    ]


def _evidence_of(evidence: stats.AnytimeEvidence, arm: int) -> dict[str, float | None]:
    """An arm's anytime-valid figures against the control, as rows and reports show them."""
    return {
        "p_value_always_valid": finite_or_none(np.asarray(evidence.p_values)[arm, 0]),
        "lift_cs_low": finite_or_none(np.asarray(evidence.lift_low)[arm]),
        "lift_cs_high": finite_or_none(np.asarray(evidence.lift_high)[arm]),
    }


def _compare(
    test: ExperimentTest,
    table: list[list[dict[str, object]]],
    alphas: FloatArray,
    betas: FloatArray,
    evidence: list[stats.AnytimeEvidence],
    guardrails: Mapping[tuple[object, str], list[stats.Guardrail]],
    primary: Mapping[object, PrimaryLook] | None = None,
) -> list[tuple[dict[str, dict[str, float]], stats.Decision]]:
    """Per window of one test: the probability that each variant beats each other (variant ->
    other -> P) and the test's decision. `table` holds the test's conversion records by window,
    each window's in variant order; `alphas` and `betas` are theirs as (windows, variants)
    arrays; `evidence` the anytime-valid test's per window; `guardrails` the guardrails' by
    window and variant. The decision weighs the conversion, or with `primary` (by window)
    the primary metric. Every window is computed together."""
    arms = range(alphas.shape[1])
    beats = {
        (k, j): np.atleast_1d(
            stats.prob_superiority(alphas[:, k], betas[:, k], alphas[:, j], betas[:, j])
        )
        for k in arms
        for j in arms
        if j != k
    }
    compared = []
    for t, mine in enumerate(table):
        names = [str(r["variant"]) for r in mine]
        if primary is None:
            decision = stats.decide(
                [r["prob_best"] for r in mine],
                [r["expected_loss"] for r in mine],
                [r["exposures_total"] for r in mine],
                test.threshold_of_caring,
                test.minimum_sample,
                evidence[t],
                names=names,
            )
        else:
            decision = _decide_on_primary(test, primary.get(mine[0]["window_start"]), names)
        if decision.winner is not None:
            found = guardrails.get((mine[0]["window_start"], decision.winner), [])
            missing = [
                stats.Guardrail(m.name, float(m.margin or 0), None)
                for m in test.metrics_in_effect
                if m.role == "guardrail" and m.name not in {g.metric for g in found}
            ]
            decision = stats.guard(decision, found + missing, names[0])
        window_beats = {
            names[k]: {names[j]: float(beats[(k, j)][t]) for j in arms if j != k} for k in arms
        }
        compared.append((window_beats, decision))
    return compared


def _decision_looks(
    test: ExperimentTest, records: Iterable[Mapping[str, object]]
) -> tuple[dict[object, PrimaryLook] | None, dict[object, PrimaryLook] | None]:
    """What the decision weighs instead of the conversion's pooled posteriors, if anything:
    a primary metric's looks, or a bandit's period-weighted ones (docs/bandit.md); and the
    latter again, when they are what it weighs."""
    primary = _primary(test, records)
    if primary is None and test.mode == "bandit":
        looks = period_weighted_looks(test, records)
        return looks, looks
    return primary, None


def _primary(
    test: ExperimentTest, records: Iterable[Mapping[str, object]]
) -> dict[object, PrimaryLook] | None:
    """The primary metric's looks by window when it is not the conversion; else None."""
    if test.conversion_metric.role == "primary":
        return None
    return primary_looks(test, records)


def _decide_on_primary(
    test: ExperimentTest, look: PrimaryLook | None, names: list[str]
) -> stats.Decision:
    """The decision on a primary metric other than the conversion; its reason names it."""
    metric = next(m for m in test.metrics_in_effect if m.role == "primary")
    if test.mode == "bandit" and metric.name == test.conversion_metric.name:
        label = f"{metric.name} (period-weighted)"
    else:
        label = metric.name
    if look is None:
        return stats.Decision("not enough data", None, f"{label}: no posterior yet")
    decision = stats.decide(
        look.prob_best,
        look.relative_loss,
        look.users,
        test.threshold_of_caring,
        test.minimum_sample,
        look.evidence,
        names=names,
    )
    return stats.Decision(decision.verdict, decision.winner, f"{label}: {decision.reason}")


def _guardrails(
    test: ExperimentTest, records: Iterable[Mapping[str, object]]
) -> dict[tuple[object, str], list[stats.Guardrail]]:
    """(window_start, variant) -> the test's guardrails there, from their records, in the
    order the test lists them."""
    margins = {
        m.name: float(m.margin or 0) for m in test.metrics_in_effect if m.role == "guardrail"
    }
    order = list(margins)
    found: dict[tuple[object, str], list[stats.Guardrail]] = defaultdict(list)
    for record in records:
        metric = str(record.get("metric"))
        if record["test_id"] == test.test_id and metric in margins and is_overall(record):
            worse = record.get("prob_worse_by_margin")
            found[(record["window_start"], str(record["variant"]))].append(
                stats.Guardrail(metric, margins[metric], None if worse is None else float(worse))  # type: ignore[arg-type]
            )
    return {key: sorted(rails, key=lambda g: order.index(g.metric)) for key, rails in found.items()}


def allocation_rows(
    config: ExperimentsConfig,
    records: list[dict[str, object]],
    windows: Collection[datetime] | None = None,
) -> list[dict[str, object]]:
    """The bandit's weights for the window after each one, for `windows` (all when None).
    A test in A/B mode gets Thompson weights with `statistics.thompson_floor`, a
    recommendation; a test in bandit mode the configured allocation until every variant has
    `bandit.burn_in_users` exposed users, then (top-two) Thompson weights with its own floor
    (docs/bandit.md). Every window of a test is computed together."""
    rows_by_test: dict[str, list[dict]] = {}
    for test in config.tests:
        starts, table, alphas, betas = _by_window(
            test, [r for r in records if windows is None or r["window_start"] in windows]
        )
        if not starts:
            continue
        if test.mode == "bandit":
            # P(best) of the period-weighted rates' normal posteriors where the records have
            # them (docs/bandit.md), of the pooled Beta posteriors before any stratum does.
            best = stats.prob_best(alphas, betas)
            for t, row in enumerate(table):
                if has_period_weighted(row):
                    best[t] = stats.prob_best_normal(*normal_posteriors([row]))[0]
            played = stats.top_two_weights(best) if test.bandit.top_two else best
            arms = len(test.variants)
            weights = test.bandit.floor + (1.0 - arms * test.bandit.floor) * played
            exposed = np.array([[r["exposures_total"] for r in row] for row in table], float)
            weights[exposed.min(axis=1) < test.bandit.burn_in_users] = test.allocation
        else:
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
    config: ExperimentsConfig,
    counts: list[WindowCounts],
    quality: dict[str, Quality],
    bandit_srm: Mapping[str, tuple[float, dict[str, object]]] | None = None,
) -> list[CheckFigure]:
    """Sample-ratio mismatch, users in several variants, clicks without exposure, clicks
    before exposure, clicks in another variant and successes ≤ exposures, over every test,
    cumulative to the window's end. A bandit test's sample ratio is judged by `bandit_srm`
    (test_id → anytime p-value against the weights in force, its figures:
    bandit_analysis.weights_in_force_srm), not by the configured allocation."""
    bandit_srm = bandit_srm or {}
    srm_worst, srm_figures = 1.0, {}
    multi, exposed_all, orphans, successes_all = 0, 0, 0, 0
    early, other_variant = 0, 0
    impossible = []
    for test in config.tests:
        rows = [c for c in counts if c.test_id == test.test_id]
        exposures = [r.exposures_total for r in rows]
        if test.test_id in bandit_srm:
            pvalue, srm_figures[test.test_id] = bandit_srm[test.test_id]
        else:
            pvalue = stats.srm_pvalue(exposures, [v.allocation for v in test.variants])
            srm_figures[test.test_id] = {"exposures": exposures, "p_value": round(float(pvalue), 6)}
        srm_worst = min(srm_worst, float(pvalue))
        q = quality.get(test.test_id, Quality(0, 0))
        multi += q.multi_variant_users
        orphans += q.orphan_success_users
        early += q.clicks_before_exposure_users
        other_variant += q.other_variant_click_users
        exposed_all += sum(exposures)
        successes_all += sum(r.successes_total for r in rows)
        impossible += [
            f"{r.test_id}/{r.variant}" for r in rows if r.successes_total > r.exposures_total
        ]
    multi_share = multi / (exposed_all + multi) if exposed_all + multi else 0.0
    orphan_share = orphans / (successes_all + orphans) if successes_all + orphans else 0.0
    early_share = early / (successes_all + early) if successes_all + early else 0.0
    other_share = other_variant / successes_all if successes_all else 0.0
    return [
        CheckFigure(
            "sample_ratio_mismatch",
            srm_worst >= SRM_WARN_P,
            "error" if srm_worst < SRM_ERROR_P else "warn",
            f"chi-square of exposures against the allocation (a bandit's: an anytime-valid "
            f"test against the weights in force): error at p < {SRM_ERROR_P}, warning below "
            f"{SRM_WARN_P}",
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
            "clicks_before_exposure",
            early_share <= EARLY_CLICK_WARN_SHARE,
            "warn",
            "exposed users whose every success event came before their exposure (not counted "
            f"as successes): warning above {EARLY_CLICK_WARN_SHARE:.0%}",
            {"users": early, "share": round(early_share, 6)},
        ),
        CheckFigure(
            "clicks_in_another_variant",
            other_share <= OTHER_VARIANT_CLICK_WARN_SHARE,
            "warn",
            "exposed users with a success event tagged with another variant than their "
            "exposure's (their success counts for the exposure's variant): warning above "
            f"{OTHER_VARIANT_CLICK_WARN_SHARE:.0%}",
            {"users": other_variant, "share": round(other_share, 6)},
        ),
        CheckFigure(
            "successes_within_exposures",
            not impossible,
            "error",
            "successes never exceed exposures",
            {"violations": impossible},
        ),
    ]


def summarize_test(test: ExperimentTest, records: list[dict[str, object]]) -> dict[str, object]:
    """What diana-analyze reports for one test at the latest window of `records`, recomputed
    from α, β and the counts alone by the code of posterior_records and superiority_rows: per
    variant the mean, 95% credible interval, P(best), expected loss and the anytime-valid
    p-value and lift confidence sequence (running over every window in `records`); the
    probability that each variant beats each other; the decision. Records need variant,
    window_start, alpha, beta, exposures_total and successes_total, one per configured
    variant in each window; the figures they hold besides are not trusted, but for a bandit
    test's period-weighted rates, which the counts alone cannot give back (docs/bandit.md)."""
    _, table, alphas, betas = _by_window(test, records)
    if not table:
        raise ValueError(f"no records of test {test.test_id}")
    evidence = _running_evidence(test, table)[-1]
    guardrails, (primary, looks) = _guardrails(test, records), _decision_looks(test, records)
    look = looks.get(table[-1][0]["window_start"]) if looks is not None else None
    if look is not None:
        evidence = look.evidence
    alphas, betas = alphas[-1:], betas[-1:]
    figures = _posterior_figures(alphas, betas)
    window = [
        {**record, **{name: float(values[0, k]) for name, values in figures.items()}}
        for k, record in enumerate(table[-1])
    ]
    [(beats, decision)] = _compare(test, [window], alphas, betas, [evidence], guardrails, primary)
    first = window[0]
    return {
        "test_id": test.test_id,
        "window_start": first["window_start"],
        "window_end": first.get("window_end"),
        "timestamp": first.get("timestamp"),
        "variants": [
            {
                "variant": str(record["variant"]),
                "alpha": float(alphas[0, k]),
                "beta": float(betas[0, k]),
                "exposures": int(record["exposures_total"]),  # type: ignore[call-overload]
                "successes": int(record["successes_total"]),  # type: ignore[call-overload]
                **{name: record[name] for name in figures},
                **_evidence_of(evidence, k),
            }
            for k, record in enumerate(window)
        ],
        "prob_superiority": beats,
        "decision": {
            "verdict": decision.verdict,
            "winner": decision.winner,
            "reason": decision.reason,
            "level": decision_level(test),  # what each anytime-valid p-value must reach
        },
    }
