"""Segment breakdowns (docs/segments.md): the conversion's posterior records per segment of
each dimension, the smaller segments lumped into (other), and the checks that read them (a
sample-ratio mismatch inside a segment, a segment that disagrees with the overall result).
Decisions stay on the overall result: segments are for reading, not for deciding.

Pure functions over counts and the stats package; no Dagster, no DuckDB.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import datetime

from diana_pipeline import stats
from diana_pipeline.analysis import CheckFigure, posterior_records
from diana_pipeline.config import ExperimentsConfig, ExperimentTest
from diana_pipeline.counting import MetricSums, SegmentCounts, WindowCounts
from diana_pipeline.metric_analysis import metric_records

OTHER, NONE = "(other)", "(none)"
# A segment's SRM is judged from this many exposed users on (the χ² approximation holds).
SRM_MIN_USERS = 100
SRM_ERROR_P = 0.001
# A segment "disagrees" when its P(treatment beats control) is on the other side of these
# from the overall one's.
REVERSAL_PROB = 0.95


def lumped(
    test: ExperimentTest, rows: Mapping[datetime, list[SegmentCounts]], last: datetime
) -> dict[datetime, list[SegmentCounts]]:
    """The test's segment rows with, per dimension, all but the `max_segments` largest
    segments (by exposures at the window starting `last`; `(none)` always kept apart)
    summed into `(other)`: the same segments in every window of a run."""
    size: dict[tuple[str, str], int] = defaultdict(int)
    for row in rows[last]:
        if row.test_id == test.test_id:
            size[(row.dimension, row.segment)] += row.exposures_total
    kept = set()
    for dimension in test.dimensions:
        named = sorted(
            (s for (d, s) in size if d == dimension and s != NONE),
            key=lambda s: (-size[(dimension, s)], s),
        )
        kept |= {(dimension, s) for s in named[: test.max_segments]} | {(dimension, NONE)}
    result: dict[datetime, list[SegmentCounts]] = {}
    for start, window_rows in rows.items():
        sums: dict[tuple[str, str, str], list[int]] = {}
        for row in window_rows:
            if row.test_id != test.test_id:
                continue
            segment = row.segment if (row.dimension, row.segment) in kept else OTHER
            figures = sums.setdefault((row.dimension, segment, row.variant), [0, 0, 0, 0])
            for k, value in enumerate(
                (row.exposures_inc, row.successes_inc, row.exposures_total, row.successes_total)
            ):
                figures[k] += value
        result[start] = [
            SegmentCounts(test.test_id, dimension, segment, variant, *figures)
            for (dimension, segment, variant), figures in sorted(sums.items())
        ]
    return result


def segment_records(
    config: ExperimentsConfig,
    rows: Mapping[datetime, list[SegmentCounts]],
    windows: list[tuple[datetime, datetime]],
    timestamp: datetime,
) -> list[dict[str, object]]:
    """The conversion's posterior records per test, dimension, segment (lumped) and variant,
    as posterior_records gives the overall ones, with `dimension` and `segment`."""
    records: list[dict[str, object]] = []
    for test in config.tests:
        if not test.dimensions or not windows:
            continue
        mine = lumped(test, rows, windows[-1][0])
        groups = sorted({(r.dimension, r.segment) for r in mine[windows[-1][0]]})
        alone = config.model_copy(update={"tests": [test]})
        for dimension, segment in groups:
            counts = {
                start: _as_window_counts(test, mine.get(start, []), dimension, segment)
                for start, _ in windows
            }
            for record in posterior_records(alone, counts, windows, timestamp):
                records.append({**record, "dimension": dimension, "segment": segment})
    return records


def _as_window_counts(
    test: ExperimentTest, rows: list[SegmentCounts], dimension: str, segment: str
) -> list[WindowCounts]:
    found = {r.variant: r for r in rows if (r.dimension, r.segment) == (dimension, segment)}
    return [
        WindowCounts(test.test_id, variant, *(
            (found[variant].exposures_inc, found[variant].successes_inc,
             found[variant].exposures_total, found[variant].successes_total)
            if variant in found else (0, 0, 0, 0)))
        for variant in test.variant_names
    ]  # fmt: skip


def segment_srm(
    test: ExperimentTest, rows: list[SegmentCounts]
) -> list[tuple[str, str, float, list[int]]]:
    """Per segment with at least SRM_MIN_USERS exposed users (one window's rows): dimension,
    segment, the χ² p-value of its exposures against the allocation, and the exposures.
    None for a bandit test: its weights move, and the overall check judges them in force."""
    if test.mode == "bandit":
        return []
    by_segment: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for row in rows:
        if row.test_id == test.test_id:
            by_segment[(row.dimension, row.segment)][row.variant] = row.exposures_total
    results = []
    for (dimension, segment), exposures in sorted(by_segment.items()):
        counts = [exposures.get(v, 0) for v in test.variant_names]
        if sum(counts) >= SRM_MIN_USERS:
            p = float(stats.srm_pvalue(counts, test.allocation))
            results.append((dimension, segment, p, counts))
    return results


def reversals(
    test: ExperimentTest, overall: list[WindowCounts], rows: list[SegmentCounts]
) -> list[tuple[str, str, str, float, float]]:
    """Segments whose treatment-beats-control probability lies on the other side of
    REVERSAL_PROB from the overall one (one window's rows): dimension, segment, variant, the
    segment's P and the overall P (Beta posteriors with the test's prior)."""
    prior = test.prior
    control = test.variant_names[0]

    def beats(counts: Mapping[str, tuple[int, int]], variant: str) -> float:
        (ec, sc), (ev, sv) = counts[control], counts[variant]
        a, b = prior.alpha, prior.beta
        return float(stats.prob_superiority(a + sv, b + ev - sv, a + sc, b + ec - sc))

    whole = {r.variant: (r.exposures_total, r.successes_total) for r in overall
             if r.test_id == test.test_id}  # fmt: skip
    by_segment: dict[tuple[str, str], dict[str, tuple[int, int]]] = defaultdict(dict)
    for row in rows:
        if row.test_id == test.test_id:
            by_segment[(row.dimension, row.segment)][row.variant] = (
                row.exposures_total, row.successes_total)  # fmt: skip
    found = []
    for variant in test.variant_names[1:]:
        if variant not in whole or control not in whole:
            continue
        overall_p = beats(whole, variant)
        if 1 - REVERSAL_PROB < overall_p < REVERSAL_PROB:
            continue  # no clear overall result to disagree with
        for (dimension, segment), counts in sorted(by_segment.items()):
            if control in counts and variant in counts:
                p = beats(counts, variant)
                if (overall_p >= REVERSAL_PROB and p <= 1 - REVERSAL_PROB) or (
                    overall_p <= 1 - REVERSAL_PROB and p >= REVERSAL_PROB
                ):
                    found.append((dimension, segment, variant, p, overall_p))
    return found


def segment_checks(
    config: ExperimentsConfig,
    overall: list[WindowCounts],
    rows: Mapping[datetime, list[SegmentCounts]],
    last: datetime,
) -> list[CheckFigure]:
    """The segments' data-quality checks at the window starting `last`: a sample-ratio
    mismatch in any segment with enough users (error, naming it), and segments that disagree
    with a clear overall result (warning: a Simpson-style reversal to look into)."""
    mismatches, disagreements = [], []
    for test in config.tests:
        if not test.dimensions:
            continue
        mine = lumped(test, rows, last).get(last, [])
        for dimension, segment, p, counts in segment_srm(test, mine):
            if p < SRM_ERROR_P:
                mismatches.append(
                    {
                        "test_id": test.test_id,
                        "segment": f"{dimension}={segment}",
                        "p_value": round(p, 8),
                        "exposures": counts,
                    }
                )
        for dimension, segment, variant, p, whole in reversals(test, overall, mine):
            disagreements.append(
                {
                    "test_id": test.test_id,
                    "segment": f"{dimension}={segment}",
                    "variant": variant,
                    "p_beats_control": round(p, 4),
                    "overall": round(whole, 4),
                }
            )
    named = ", ".join(f"{m['test_id']} {m['segment']} (p = {m['p_value']:.2g})" for m in mismatches)
    return [
        CheckFigure(
            "segment_sample_ratio_mismatch",
            not mismatches,
            "error",
            f"chi-square of each segment's exposures (≥ {SRM_MIN_USERS} users) against the "
            f"allocation: error at p < {SRM_ERROR_P}" + (f"; failing: {named}" if named else ""),
            {"segments": mismatches},
        ),
        CheckFigure(
            "segments_disagree",
            not disagreements,
            "warn",
            f"segments whose P(variant beats control) lies on the other side of "
            f"{REVERSAL_PROB} from the overall one (a Simpson-style reversal: read "
            "docs/segments.md before acting on it)",
            {"segments": disagreements},
        ),
    ]


def segment_summaries(
    test: ExperimentTest, window: list[Mapping[str, object]], dimension: str
) -> list[dict[str, object]]:
    """Per segment of `dimension`, recomputed from one window's conversion records (α, β
    and the counts only): per variant the exposures, successes, posterior mean, 95%
    credible interval, P(best) and expected loss. Segments lacking a variant are left out."""
    by_segment: dict[str, dict[str, Mapping[str, object]]] = defaultdict(dict)
    for record in window:
        if (
            record.get("dimension") == dimension
            and record.get("metric") in (None, test.conversion_metric.name)
            and record["variant"] in test.variant_names
        ):
            by_segment[str(record["segment"])][str(record["variant"])] = record
    summaries = []
    for segment, records in sorted(by_segment.items(), key=lambda item: _segment_order(item[0])):
        if set(records) != set(test.variant_names):
            continue
        mine = [records[v] for v in test.variant_names]
        alphas = [float(r["alpha"]) for r in mine]  # type: ignore[arg-type]
        betas = [float(r["beta"]) for r in mine]  # type: ignore[arg-type]
        best, loss = stats.prob_best_and_expected_loss(alphas, betas)
        low, high = stats.credible_interval(alphas, betas)
        summaries.append(
            {
                "segment": segment,
                "variants": [
                    {
                        "variant": variant,
                        "exposures": int(r["exposures_total"]),  # type: ignore[call-overload]
                        "successes": int(r["successes_total"]),  # type: ignore[call-overload]
                        "mean": alphas[k] / (alphas[k] + betas[k]),
                        "ci_low": float(low[k]),  # type: ignore[index]
                        "ci_high": float(high[k]),  # type: ignore[index]
                        "prob_best": float(best[k]),
                        "expected_loss": float(loss[k]),
                    }
                    for k, (variant, r) in enumerate(zip(test.variant_names, mine, strict=True))
                ],
            }
        )
    return summaries


def _segment_order(segment: str) -> tuple[int, str]:
    """Named segments by name, then (other), then (none)."""
    return ({OTHER: 1, NONE: 2}.get(segment, 0), segment)


SumsOf = Callable[[str, str], Mapping[datetime, Mapping[tuple[str, str, str], MetricSums]]]


def segment_metric_records(
    config: ExperimentsConfig,
    rows: Mapping[datetime, list[SegmentCounts]],
    sums_of: SumsOf,
    windows: list[tuple[datetime, datetime]],
    timestamp: datetime,
) -> list[dict[str, object]]:
    """The records of every test's metrics beyond the conversion per dimension and segment
    (lumped as the conversion's), from `sums_of(dimension, segment)`: a segment's metric sums
    per cutoff (counting.metric_sums of it). Winsorised metrics are left out: their cap is a
    quantile of all users, not of the segment's."""
    records: list[dict[str, object]] = []
    if not windows:
        return records
    last = windows[-1][0]
    for test in config.tests:
        metrics = [m for m in test.other_metrics if m.winsorize is None]
        if not test.dimensions or not metrics:
            continue
        mine = lumped(test, rows, last)
        kept = {(r.dimension, r.segment) for r in mine[last]}
        raw = {(r.dimension, r.segment) for r in rows[last] if r.test_id == test.test_id}
        for dimension, segment in sorted(kept):
            members = [s for d, s in raw if d == dimension and (
                s == segment or (segment == OTHER and (d, s) not in kept))]  # fmt: skip
            sums: dict[datetime, dict[tuple[str, str, str], MetricSums]] = defaultdict(dict)
            for member in members:
                for cutoff, figures in sums_of(dimension, member).items():
                    for key, value in figures.items():
                        sums[cutoff][key] = sums[cutoff].get(key, MetricSums()) + value
            users = {
                start: {
                    variant: next(((r.exposures_inc, r.exposures_total) for r in mine[start]
                                   if (r.dimension, r.segment, r.variant)
                                   == (dimension, segment, variant)), (0, 0))
                    for variant in test.variant_names
                }
                for start, _ in windows
            }  # fmt: skip
            for record in metric_records(test, users, sums, windows, timestamp, metrics):
                records.append({**record, "dimension": dimension, "segment": segment})
    return records
