"""Posterior records with awkward floats, for the sink tests (no Dagster, no servers)."""

from __future__ import annotations

from datetime import datetime, timedelta

from diana_pipeline.sinks.records import Record


def make_records(
    window_start: datetime, tests: tuple[str, ...] = ("t1",), generation: int = 0
) -> list[Record]:
    """One record per test and variant of one window. Floats that text often gets wrong
    (0.1 + 0.2, 1e-300, a long mantissa), and optional figures without a value (None);
    `generation` changes the values, not the keys."""
    records = []
    for test_id in tests:
        for k, variant in enumerate(("control", "treatment")):
            records.append(
                {
                    "test_id": test_id,
                    "variant": variant,
                    "window_start": window_start,
                    "window_end": window_start + timedelta(hours=1),
                    "timestamp": datetime(2026, 11, 21, 12, 0, 1, 123456),
                    "alpha": 1.0 + k + generation,
                    "beta": 12345678.123456789 + generation,
                    "exposures_inc": 10 + k,
                    "successes_inc": 3,
                    "exposures_total": 2**40 + k,  # beyond what a float32 holds
                    "successes_total": 7,
                    "success_rate_total": 0.1 + 0.2,
                    "mean": 1 / 3,
                    "ci_low": 1e-300,
                    "ci_high": 0.9999999999999999,
                    "prob_best": 0.5 + k * 1e-12,
                    "expected_loss": 2.2250738585072014e-308,
                    "p_value_always_valid": None if k == 0 else 0.05 - 1e-17 * generation,
                    "lift_cs_low": 0.0 if k == 0 else -0.123456789012345678,
                    "lift_cs_high": 0.0 if k == 0 else (None if generation % 2 else 1.5),
                    "metric": "conversion",
                    "metric_type": "binary",
                    "metric_role": "primary",
                    "value_total": None,
                    "value_squares_total": None,
                    "value_products_total": None,
                    "prob_worse_by_margin": None,
                    "dimension": "all",
                    "segment": "all",
                    "rate_period_weighted": None,
                    "rate_period_weighted_se": None,
                }
            )
    return records


def make_revenue_records(window_start: datetime, test_id: str = "t1") -> list[Record]:
    """A revenue guardrail's records for the same keys as make_records': a normal posterior,
    so no α, β or successes."""
    records = []
    for conversion in make_records(window_start, (test_id,)):
        records.append(
            {
                **conversion,
                "alpha": None,
                "beta": None,
                "successes_inc": None,
                "successes_total": None,
                "success_rate_total": 12.5,
                "mean": 12.5,
                "metric": "revenue",
                "metric_type": "revenue",
                "metric_role": "guardrail",
                "value_total": 0.1 + 0.2 + 1e6,
                "value_squares_total": 1.5e13,
                "prob_worse_by_margin": None if conversion["variant"] == "control" else 0.01,
            }
        )
    return records
