"""The metrics beyond the conversion (docs/metrics.md): from each variant's counted users and
metric sums (counting/metric_sums.py) to its posterior, and the figures a record carries.

    binary   Beta(prior α + converters, prior β + users − converters), as the conversion
    count    Gamma(1 + events, 1 + users) for the events per user (Gamma-Poisson)
    revenue  N(mean, sd / √n) per user, the sample's mean and sd (normal approximation)
    ratio    N(Σ numerator / Σ denominator, delta-method se), the users' sums as the units

P(best) and expected loss come from the family's exact quadrature (stats.beta, stats.gamma,
stats.normal), for "decrease is good" metrics of the lowest mean: a Beta's failures are
Beta(β, α), a normal is mirrored, and a Gamma's lowest is found on its normal approximation.
The anytime-valid test is the conversion's for binary metrics and the normal mSPRT on the
relative lift (stats.sequential_normal) for the others. A guardrail's figure is P(the variant
is worse than the control by more than its margin), by the normal approximation of the
relative lift.

Pure functions; no Dagster, no DuckDB.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from scipy import special

from diana_pipeline import stats
from diana_pipeline.config import ALL_SEGMENTS, ExperimentTest, Metric
from diana_pipeline.counting import MetricSums
from diana_pipeline.counting.metric_sums import VALUE_SCALE
from diana_pipeline.sinks.records import finite_or_none
from diana_pipeline.stats import FloatArray

COUNT_PRIOR = (1.0, 1.0)  # Gamma(shape, rate): one event in one user's worth of evidence
_Z95 = float(special.ndtri(0.975))


@dataclass(frozen=True)
class MetricData:
    """One metric of one test over T windows (cumulative to each window's end) and K variants:
    users, and the sums of counting/metric_sums.py in the metric's units, (T, K) each. For a
    ratio, `parts` holds its numerator's and denominator's data."""

    users: FloatArray
    total: FloatArray
    squares: FloatArray
    products: FloatArray
    parts: tuple[MetricData, MetricData] | None = None


def scale_of(metric_type: str) -> float:
    """What one unit of a stored sum is worth in the metric's units."""
    return 1.0 / VALUE_SCALE if metric_type in ("revenue", "mean") else 1.0


@dataclass(frozen=True)
class Posterior:
    """Per window and variant: the family's two parameters, (T, K); `defined` (T,) where
    every variant has a posterior (a normal needs two users and some spread)."""

    family: str  # beta | gamma | normal
    a: FloatArray  # α, shape or mean
    b: FloatArray  # β, rate or sd
    defined: np.ndarray

    @property
    def mean(self) -> FloatArray:
        if self.family == "beta":
            return self.a / (self.a + self.b)
        return self.a / self.b if self.family == "gamma" else self.a

    @property
    def sd(self) -> FloatArray:
        if self.family == "beta":
            n = self.a + self.b
            return np.sqrt(self.a * self.b / (n * n * (n + 1)))
        return np.sqrt(self.a) / self.b if self.family == "gamma" else self.b


def posterior(test: ExperimentTest, metric: Metric, data: MetricData) -> Posterior:
    """The metric's posterior per window and variant."""
    n = data.users
    everywhere = np.ones(n.shape[0], dtype=bool)
    if metric.type == "binary":
        a, b = test.prior.alpha + data.total, test.prior.beta + n - data.total
        return Posterior("beta", a, b, everywhere)
    if metric.type == "count":
        return Posterior("gamma", COUNT_PRIOR[0] + data.total, COUNT_PRIOR[1] + n, everywhere)
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric.type == "ratio":
            assert data.parts is not None
            top, bottom = data.parts
            x, y = top.total / n, bottom.total / n
            var_x = (top.squares - top.total * x) / (n - 1)
            var_y = (bottom.squares - bottom.total * y) / (n - 1)
            cov = (data.products - top.total * y) / (n - 1)
            mean = x / y
            var = (var_x - 2 * mean * cov + mean**2 * var_y) / (n * y * y)
        else:
            mean = data.total / n
            var = (data.squares - data.total * mean) / (n - 1) / n
    ok = (n >= 2) & np.isfinite(mean) & np.isfinite(var) & (var > 0)
    sd = np.sqrt(np.where(ok, var, 1.0))
    return Posterior("normal", np.where(ok, mean, 0.0), sd, ok.all(axis=1))


def figures(test: ExperimentTest, metric: Metric, data: MetricData) -> dict[str, FloatArray]:
    """The record's figures per window and variant, (T, K), NaN where undefined: mean, 95%
    credible interval, P(best), expected loss, the anytime-valid p-value and lift confidence
    sequence against the control, and for a guardrail P(worse than the control by more than
    its margin)."""
    post = posterior(test, metric, data)
    shape = post.a.shape
    nan = np.full(shape, np.nan)
    out = {name: nan.copy() for name in _FIGURES}
    rows = post.defined
    if not rows.any():
        return out
    a, b = post.a[rows], post.b[rows]
    sub = Posterior(post.family, a, b, post.defined[rows])
    mean, sd = sub.mean, sub.sd
    decrease = metric.direction == "decrease"
    if post.family == "beta":
        low, high = stats.credible_interval(a, b)
        best, loss = stats.prob_best_and_expected_loss(*((b, a) if decrease else (a, b)))
    elif post.family == "gamma":
        low, high = special.gammaincinv(a, 0.025) / b, special.gammaincinv(a, 0.975) / b
        best, loss = (
            stats.prob_best_and_expected_loss_normal(-mean, sd)
            if decrease
            else stats.prob_best_and_expected_loss_gamma(a, b)
        )
    else:
        low, high = mean - _Z95 * sd, mean + _Z95 * sd
        best, loss = stats.prob_best_and_expected_loss_normal(-mean if decrease else mean, sd)
    tuning = {"expected_lift": test.expected_lift}
    level = 1 - test.alpha / (len(test.variants) - 1)
    if post.family == "beta":
        counts = (data.users[rows], data.total[rows])
        p_value = stats.always_valid_pvalues(*counts, allocation=test.allocation, **tuning)
        cs_low, cs_high = stats.lift_confidence_sequence(
            *counts, allocation=test.allocation, level=level, **tuning
        )
    else:
        p_value = stats.always_valid_pvalues_normal(mean, sd, **tuning)
        cs_low, cs_high = stats.lift_confidence_sequence_normal(mean, sd, level=level, **tuning)
    worse = np.full(a.shape, np.nan)
    if metric.role == "guardrail":
        margin = float(metric.margin or 0.0)
        worse = (
            1.0 - stats.prob_lift_below(mean, sd, margin)
            if decrease
            else stats.prob_lift_below(mean, sd, -margin)
        )
    values = {
        "mean": mean,
        "ci_low": low,
        "ci_high": high,
        "prob_best": best,
        "expected_loss": loss,
        "p_value_always_valid": p_value,
        "lift_cs_low": cs_low,
        "lift_cs_high": cs_high,
        "prob_worse_by_margin": worse,
    }
    for name, value in values.items():
        out[name][rows] = value
    return out


_FIGURES = (
    "mean",
    "ci_low",
    "ci_high",
    "prob_best",
    "expected_loss",
    "p_value_always_valid",
    "lift_cs_low",
    "lift_cs_high",
    "prob_worse_by_margin",
)


def metric_records(
    test: ExperimentTest,
    users: dict[datetime, dict[str, tuple[int, int]]],
    sums: Mapping[datetime, Mapping[tuple[str, str, str], MetricSums]],
    windows: list[tuple[datetime, datetime]],
    timestamp: datetime,
    metrics: list[Metric] | None = None,
) -> list[dict[str, object]]:
    """The posterior records of the test's metrics other than its conversion (or of
    `metrics`), per window and variant: `users` gives per window start and variant the (new,
    total) users counted, `sums` the metric sums at every window's start and end."""
    by_name = {m.name: m for m in test.metrics_in_effect}
    names = test.variant_names
    records: list[dict[str, object]] = []
    for metric in test.other_metrics if metrics is None else metrics:
        data = _data(test, metric, by_name, users, sums, windows)
        values = figures(test, metric, data)
        post = posterior(test, metric, data)
        summed = metric.type in ("count", "revenue", "mean")
        for t, (start, end) in enumerate(windows):
            for k, variant in enumerate(names):
                new_users, total_users = users[start][variant]
                record: dict[str, object] = {
                    "test_id": test.test_id,
                    "variant": variant,
                    "window_start": start,
                    "window_end": end,
                    "timestamp": timestamp,
                    "metric": metric.name,
                    "metric_type": metric.type,
                    "metric_role": metric.role,
                    "dimension": ALL_SEGMENTS,
                    "segment": ALL_SEGMENTS,
                    "alpha": float(post.a[t, k]) if post.family != "normal" else None,
                    "beta": float(post.b[t, k]) if post.family != "normal" else None,
                    "exposures_inc": new_users,
                    "exposures_total": total_users,
                    "successes_inc": None,
                    "successes_total": None,
                    "value_total": None,
                    "value_squares_total": None,
                    "value_products_total": None,
                    "success_rate_total": finite_or_none(
                        post.mean[t, k] if post.defined[t] else np.nan
                    ),
                    **{name: finite_or_none(v[t, k]) for name, v in values.items()},
                }
                if metric.type in ("binary", "count"):
                    key = (test.test_id, metric.name, variant)
                    record["successes_total"] = sums[end][key].total
                    record["successes_inc"] = sums[end][key].total - sums[start][key].total
                record["success_rate_total"] = _observed(data, t, k)
                if summed:
                    record["value_total"] = float(data.total[t, k])
                    record["value_squares_total"] = float(data.squares[t, k])
                if metric.type == "ratio":
                    record["value_products_total"] = float(data.products[t, k])
                records.append(record)
    return records


def _data(
    test: ExperimentTest,
    metric: Metric,
    by_name: dict[str, Metric],
    users: dict[datetime, dict[str, tuple[int, int]]],
    sums: Mapping[datetime, Mapping[tuple[str, str, str], MetricSums]],
    windows: list[tuple[datetime, datetime]],
) -> MetricData:
    """The metric's MetricData over the windows, in its units."""
    names = test.variant_names
    n = np.array([[users[start][v][1] for v in names] for start, _ in windows], float)

    def column(name: str, field: str, scale: float) -> FloatArray:
        return np.array(
            [[getattr(sums[end][(test.test_id, name, v)], field) * scale for v in names]
             for _, end in windows],
            float,
        )  # fmt: skip

    if metric.type != "ratio":
        scale = scale_of(metric.type)
        zeros = np.zeros_like(n)
        return MetricData(n, column(metric.name, "total", scale),
                          column(metric.name, "squares", scale * scale), zeros)  # fmt: skip
    assert metric.numerator is not None and metric.denominator is not None
    top, bottom = by_name[metric.numerator], by_name[metric.denominator]
    parts = tuple(_data(test, m, by_name, users, sums, windows) for m in (top, bottom))
    products = column(metric.name, "products", scale_of(top.type) * scale_of(bottom.type))
    return MetricData(n, np.zeros_like(n), np.zeros_like(n), products, parts)  # type: ignore[arg-type]


def _observed(data: MetricData, t: int, k: int) -> float | None:
    """The observed mean per user (a ratio: of its parts' totals), as the conversion's record
    gives its observed rate; None for a ratio with no denominator yet."""
    if data.parts is not None:
        top, bottom = data.parts
        return float(top.total[t, k] / bottom.total[t, k]) if bottom.total[t, k] else None
    return float(data.total[t, k] / data.users[t, k]) if data.users[t, k] else 0.0


@dataclass(frozen=True)
class PrimaryLook:
    """What the decision weighs at one window when the primary metric is not the conversion:
    per variant P(best), expected loss relative to the control's mean (so that the test's
    threshold of caring reads as a share), users, and the anytime-valid evidence so far."""

    prob_best: list[float]
    relative_loss: list[float]
    users: list[int]
    evidence: stats.AnytimeEvidence


def primary_looks(
    test: ExperimentTest, records: Iterable[Mapping[str, object]]
) -> dict[object, PrimaryLook]:
    """window_start -> the primary metric's PrimaryLook, for the windows where every variant
    has its posterior; the p-values run (minimum) and the confidence sequences intersect over
    those windows, in order."""
    metric = next(m for m in test.metrics_in_effect if m.role == "primary")
    names = test.variant_names
    grouped: dict[object, dict[str, Mapping[str, object]]] = {}
    for record in records:
        overall = record.get("dimension") in (None, ALL_SEGMENTS)
        if record["test_id"] == test.test_id and record.get("metric") == metric.name and overall:
            grouped.setdefault(record["window_start"], {})[str(record["variant"])] = record
    wanted = ("prob_best", "expected_loss", "mean", "ci_low", "ci_high")
    starts = sorted(
        (s for s, rows in grouped.items()
         if all(v in rows and all(rows[v].get(f) is not None for f in wanted) for v in names)),
    )  # type: ignore[type-var]  # fmt: skip
    if not starts:
        return {}
    table = [[grouped[s][v] for v in names] for s in starts]
    column = lambda field: np.array([[float(r[field]) for r in row] for row in table])  # type: ignore[arg-type]  # noqa: E731
    users = np.array([[int(r["exposures_total"]) for r in row] for row in table])  # type: ignore[call-overload]
    tuning = {"expected_lift": test.expected_lift}
    level = 1 - test.alpha / (len(names) - 1)
    if metric.type == "binary":
        counts = (users, column("successes_total"))
        tuning["allocation"] = test.allocation  # type: ignore[assignment]
        pairs = [
            stats.always_valid_pvalues(*counts, control=j, **tuning) for j in range(len(names))
        ]
        low, high = stats.lift_confidence_sequence(*counts, level=level, **tuning)
    else:
        means = column("mean")
        if metric.type == "count":
            sds = np.sqrt(column("alpha")) / column("beta")
        else:
            sds = (column("ci_high") - column("ci_low")) / (2 * _Z95)
        pairs = [stats.always_valid_pvalues_normal(means, sds, control=j, **tuning)
                 for j in range(len(names))]  # fmt: skip
        low, high = stats.lift_confidence_sequence_normal(means, sds, level=level, **tuning)
    p_values = np.fmin.accumulate(np.stack(pairs, axis=-1), axis=0)
    low, high = np.maximum.accumulate(low, axis=0), np.minimum.accumulate(high, axis=0)
    control_mean = np.abs(column("mean")[:, :1])
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(control_mean > 0, column("expected_loss") / control_mean, np.inf)
    return {
        start: PrimaryLook(
            [float(x) for x in column("prob_best")[t]],
            [min(float(x), 1.0) for x in relative[t]],
            [int(n) for n in users[t]],
            stats.AnytimeEvidence(p_values[t], low[t], high[t], test.alpha, test.rope),
        )
        for t, start in enumerate(starts)
    }


def metric_summaries(
    test: ExperimentTest, window: Iterable[Mapping[str, object]]
) -> list[dict[str, object]]:
    """Per metric other than the conversion, recomputed from one window's records (users and
    sums only; the figures they hold are not trusted): per variant the users, observed mean,
    posterior mean and 95% interval, P(best), expected loss, the anytime-valid p-value and
    lift confidence sequence of this look, and for a guardrail P(worse by its margin).
    Metrics whose records are missing are left out."""
    names = test.variant_names
    rows: dict[tuple[str, str], Mapping[str, object]] = {
        (str(r.get("metric")), str(r["variant"])): r
        for r in window
        if r.get("dimension") in (None, ALL_SEGMENTS)
    }
    by_name = {m.name: m for m in test.metrics_in_effect}

    def data_of(metric: Metric) -> MetricData | None:
        if any((metric.name, v) not in rows for v in names):
            return None
        records = [rows[(metric.name, v)] for v in names]
        get = lambda field: np.array([[float(r.get(field) or 0) for r in records]])  # type: ignore[arg-type]  # noqa: E731
        users = get("exposures_total")
        if metric.type == "ratio":
            assert metric.numerator is not None and metric.denominator is not None
            parts = (data_of(by_name[metric.numerator]), data_of(by_name[metric.denominator]))
            if parts[0] is None or parts[1] is None:
                return None
            zeros = np.zeros_like(users)
            return MetricData(users, zeros, zeros, get("value_products_total"), parts)  # type: ignore[arg-type]
        if metric.type == "binary":
            return MetricData(users, get("successes_total"), get("successes_total"), 0 * users)
        total = get("successes_total") if metric.type == "count" else get("value_total")
        return MetricData(users, total, get("value_squares_total"), 0 * users)

    summaries = []
    for metric in test.other_metrics:
        data = data_of(metric)
        if data is None:
            continue
        values = figures(test, metric, data)
        summaries.append(
            {
                "metric": metric.name,
                "type": metric.type,
                "role": metric.role,
                "direction": metric.direction,
                "margin": metric.margin,
                "variants": [
                    {
                        "variant": variant,
                        "users": int(data.users[0, k]),
                        "observed": _observed(data, 0, k),
                        **{name: finite_or_none(v[0, k]) for name, v in values.items()},
                    }
                    for k, variant in enumerate(names)
                ],
            }
        )
    return summaries
