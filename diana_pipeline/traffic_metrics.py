"""What a traffic run's extra events (Purchase, PageError, ...) must make of a test's metrics
beyond the conversion (docs/metrics.md): per variant, the sums the pipeline's records hold.
The run's users are counted users (exposed in one variant); every extra event goes out at its
visit's exposure, inside the conversion window."""

from __future__ import annotations

from collections.abc import Callable

from diana_pipeline.config import ExperimentTest


def expected_metric_sums(
    test: ExperimentTest,
    variant_of: Callable[[int], str],
    users: dict[int, dict[str, list[int]]],
) -> list[dict[str, object]]:
    """Rows (test_id, variant, metric, field, value) for the test's metrics from each counted
    user's extra events: user index -> event type -> [events, value in cents]; `variant_of`
    gives a user's variant by index. `field` names
    the record field the value must equal: successes_total (binary: users with one, count:
    events), value_total (revenue, exact to the cent) or value_products_total (ratio).
    Winsorised metrics are left out: their cap depends on the whole history."""
    by_name = {m.name: m for m in test.metrics_in_effect}

    def total(metric_name: str, events: dict[str, list[int]]) -> float:
        metric = by_name[metric_name]
        count, cents = events.get(metric.event or "", [0, 0])
        if metric.type == "binary":
            return float(count > 0)
        return float(count) if metric.type == "count" else cents / 100

    sums: dict[tuple[str, str], float] = {}
    for user_index, events in users.items():
        variant = variant_of(user_index)
        for metric in test.other_metrics:
            if metric.type == "ratio":
                assert metric.numerator is not None and metric.denominator is not None
                value = total(metric.numerator, events) * total(metric.denominator, events)
            else:
                value = total(metric.name, events)
            sums[(variant, metric.name)] = sums.get((variant, metric.name), 0.0) + value
    field = {"binary": "successes_total", "count": "successes_total", "revenue": "value_total",
             "mean": "value_total", "ratio": "value_products_total"}  # fmt: skip
    return [
        {"test_id": test.test_id, "variant": variant, "metric": metric.name,
         "field": field[metric.type], "value": round(sums.get((variant, metric.name), 0.0), 2)}
        for variant in test.variant_names
        for metric in test.other_metrics
        if metric.winsorize is None
    ]  # fmt: skip
