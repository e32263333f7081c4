"""A bandit test's statistics while its weights move (docs/bandit.md), beside analysis.py's:

- the sample-ratio check against the weights in force when each user came (an anytime-valid
  e-process over the cells of window × allocation version), not the configured split;
- each variant's period-weighted conversion rate (strata: the windows of first exposure) and
  its standard error, for the records;
- the decision's looks from those estimates: P(best), expected loss and the anytime-valid
  evidence of normal posteriors N(rate, se²), instead of the pooled Beta posteriors.

Pure: the counts come from counting/cohorts.py, the versions from the store."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

import numpy as np

from diana_pipeline import stats
from diana_pipeline.allocations import AllocationVersion, configured
from diana_pipeline.config import ALL_SEGMENTS, ExperimentTest
from diana_pipeline.metric_analysis import PrimaryLook

RATE, SE = "rate_period_weighted", "rate_period_weighted_se"


def weights_in_force_srm(
    test: ExperimentTest,
    cells: list[tuple[datetime, int, str, int]],
    versions: Iterable[AllocationVersion],
) -> tuple[float, dict[str, object]]:
    """The anytime-valid p-value that users were assigned by the weights in force, from
    `cells` (window, version, variant, users; counting.first_exposures_by_version), and the
    figures a check shows: users per variant, and what the weights in force expected."""
    weights = {0: configured(test).weights} | {v.version: v.weights for v in versions}
    names = test.variant_names
    keys = sorted({(window, version) for window, version, _, _ in cells})
    index = {key: p for p, key in enumerate(keys)}
    counts = np.zeros((len(keys), len(names)))
    for window, version, variant, users in cells:
        if variant in names:
            counts[index[(window, version)], names.index(variant)] += users
    shares = np.array([[weights[version].get(n, 0.0) for n in names] for _, version in keys])
    if not keys:
        return 1.0, {"exposures": [0] * len(names), "expected": [0.0] * len(names)}
    expected = (counts.sum(axis=1, keepdims=True) * shares).sum(axis=0)
    p_value = stats.srm_anytime_pvalue(counts, shares)
    return p_value, {
        "exposures": [int(n) for n in counts.sum(axis=0)],
        "expected": [round(float(e), 1) for e in expected],
        "versions": len({version for _, version in keys}),
        "anytime_p_value": round(p_value, 6),
    }


def period_weighted(
    test: ExperimentTest, cohorts: list[tuple[datetime, str, int, int]]
) -> dict[str, tuple[float | None, float | None]]:
    """variant → (rate, standard error), period-weighted over the cohorts (window of first
    exposure, variant, exposures, successes; counting.cohort_counts at one cutoff). None
    while no cohort has users in every variant."""
    names = test.variant_names
    periods = sorted({start for start, *_ in cohorts})
    exposures = np.zeros((len(periods), len(names)))
    successes = np.zeros_like(exposures)
    for start, variant, n, s in cohorts:
        if variant in names:
            exposures[periods.index(start), names.index(variant)] = n
            successes[periods.index(start), names.index(variant)] = s
    if not periods:
        return dict.fromkeys(names, (None, None))
    rates, errors, used = stats.period_weighted_rates(exposures, successes)
    if used == 0:
        return dict.fromkeys(names, (None, None))
    return {name: (float(rates[k]), float(errors[k])) for k, name in enumerate(names)}


def period_weighted_looks(
    test: ExperimentTest, records: Iterable[Mapping[str, object]]
) -> dict[object, PrimaryLook]:
    """window_start → what the decision weighs, from the period-weighted rates of the
    conversion's overall records: normal posteriors N(rate, se²) give P(best) and the expected
    loss (relative to the control's rate), and the anytime-valid test of normal estimates
    its evidence (running minimum and intersection over the windows so far)."""
    names = test.variant_names
    grouped: dict[object, dict[str, Mapping[str, object]]] = {}
    for record in records:
        if (
            record["test_id"] == test.test_id
            and record.get("metric") in (None, test.conversion_metric.name)
            and record.get("dimension") in (None, ALL_SEGMENTS)
            and record.get(RATE) is not None
            and record.get(SE) is not None
        ):
            grouped.setdefault(record["window_start"], {})[str(record["variant"])] = record
    starts = sorted(s for s, rows in grouped.items() if all(v in rows for v in names))  # type: ignore[type-var]
    if not starts:
        return {}
    table = [[grouped[s][v] for v in names] for s in starts]
    users = np.array([[int(r["exposures_total"]) for r in row] for row in table])  # type: ignore[call-overload]
    means, sds = normal_posteriors(table)
    best, loss = stats.prob_best_and_expected_loss_normal(means, sds)
    pairs = [anytime_pvalues(test, means, sds, control=j) for j in range(len(names))]
    low, high = lift_sequence(test, means, sds)
    p_values = np.fmin.accumulate(np.stack(pairs, axis=-1), axis=0)
    low, high = np.maximum.accumulate(low, axis=0), np.minimum.accumulate(high, axis=0)
    control = np.abs(means[:, :1])
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(control > 0, loss / control, np.inf)
    return {
        start: PrimaryLook(
            [float(x) for x in best[t]],
            [min(float(x), 1.0) for x in relative[t]],
            [int(n) for n in users[t]],
            stats.AnytimeEvidence(p_values[t], low[t], high[t], test.alpha, test.rope),
        )
        for t, start in enumerate(starts)
    }


def normal_posteriors(table: list[list[Mapping[str, object]]]) -> tuple[np.ndarray, np.ndarray]:
    """Means and standard deviations, (windows, variants), of the normal posteriors of the
    period-weighted rates in records (each window's in variant order, every one with them).
    A rate with no spread yet (0 or 1 in every stratum) has SE 0: it is floored at half a
    user's worth, so no posterior is a point."""
    means = np.array([[float(r[RATE]) for r in row] for row in table])  # type: ignore[arg-type]
    users = np.array([[int(r["exposures_total"]) for r in row] for row in table])  # type: ignore[call-overload]
    sds = np.array([[float(r[SE]) for r in row] for row in table])  # type: ignore[arg-type]
    return means, np.maximum(sds, 0.5 / np.maximum(users, 1))


def has_period_weighted(row: list[Mapping[str, object]]) -> bool:
    """Whether every variant's record of a window has its period-weighted rate."""
    return all(r.get(RATE) is not None and r.get(SE) is not None for r in row)


def anytime_pvalues(
    test: ExperimentTest, means: np.ndarray, sds: np.ndarray, control: int = 0
) -> np.ndarray:
    """Each look's anytime-valid p-value of each variant against `control`, from the normal
    posteriors of the period-weighted rates ((windows, variants); not running)."""
    return stats.always_valid_pvalues_normal(
        means, sds, control=control, expected_lift=test.expected_lift
    )


def lift_sequence(
    test: ExperimentTest, means: np.ndarray, sds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each look's anytime-valid confidence sequence of each variant's lift over the control
    at the decision's level (not running); rates are ≥ 0, so no lift falls below −100%."""
    level = 1 - test.alpha / (len(test.variants) - 1)
    low, high = stats.lift_confidence_sequence_normal(
        means, sds, level=level, expected_lift=test.expected_lift
    )
    return np.maximum(low, -1.0), high
