"""From counts to records, superiority and allocation: variants keep their configured order
(control first) whatever order the stored records come back in."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as scipy_stats

from diana_pipeline import stats
from diana_pipeline.analysis import (
    allocation_rows,
    in_config_order,
    in_variant_order,
    posterior_records,
    quality_checks,
    summarize_test,
    superiority_rows,
)
from diana_pipeline.config import parse_config
from diana_pipeline.counting import MetricSums, Quality, WindowCounts
from diana_pipeline.harness.stats_references import mpmath_prob_best
from diana_pipeline.metric_analysis import metric_records

# "treatment" sorts before "zcontrol"; the configured control is listed first all the same.
CONFIG = parse_config(
    """
tests:
  - test_id: t
    minimum_sample: 10
    variants:
      - {name: zcontrol, allocation: 0.5}
      - {name: treatment, allocation: 0.5}
"""
)
START, END = datetime(2026, 11, 21, 10), datetime(2026, 11, 21, 11)


def records() -> list[dict[str, object]]:
    counts = [
        WindowCounts("t", "zcontrol", 1000, 100, 1000, 100),
        WindowCounts("t", "treatment", 1000, 300, 1000, 300),
    ]
    return posterior_records(CONFIG, {START: counts}, [(START, END)], END)


def test_records_follow_the_counts_and_the_configured_order() -> None:
    control, treatment = records()
    assert (control["variant"], treatment["variant"]) == ("zcontrol", "treatment")
    assert (control["alpha"], control["beta"]) == (101.0, 901.0)
    assert (treatment["alpha"], treatment["beta"]) == (301.0, 701.0)
    best = stats.prob_best([101.0, 301.0], [901.0, 701.0])
    assert control["prob_best"] == float(best[0]) and treatment["prob_best"] == float(best[1])


def test_superiority_and_allocation_use_the_configured_order_not_the_stored_one() -> None:
    shuffled = sorted(records(), key=lambda r: str(r["variant"]))  # treatment first
    rows = {r["variant"]: r for r in superiority_rows(CONFIG, shuffled)}
    # The lift is measured against the configured control, so the control's is zero.
    assert rows["zcontrol"]["lift_vs_control_low"] == rows["zcontrol"]["lift_vs_control_high"] == 0
    assert rows["treatment"]["lift_vs_control_low"] > 1.0  # 30% against 10%: more than double
    assert rows["treatment"]["winner"] == "treatment"
    weights = {r["variant"]: r["recommended_allocation"] for r in allocation_rows(CONFIG, shuffled)}
    assert weights["treatment"] > 0.98 and weights["zcontrol"] == 0.01


def test_many_windows_at_once_equal_each_window_alone() -> None:
    """The vectorised pass over windows gives exactly the rows of one window at a time (with
    the windows before it, which the anytime-valid test's running minimum reads)."""
    config = parse_config(
        """
tests:
  - test_id: a
    variants: [{name: c, allocation: 0.4}, {name: v1, allocation: 0.3}, {name: v2, allocation: 0.3}]
  - test_id: b
    variants: [{name: c, allocation: 0.5}, {name: v, allocation: 0.5}]
"""
    )
    windows = [(datetime(2026, 11, 21, h), datetime(2026, 11, 21, h + 1)) for h in range(5)]
    counts = {
        start: [
            WindowCounts(test.test_id, name, 7 * h + k, 2 * h + k, 90 * h + 13 * k, 20 * h + 5 * k)
            for test in config.tests
            for k, name in enumerate(test.variant_names)
        ]
        for h, (start, _) in enumerate(windows)
    }
    together = posterior_records(config, counts, windows, END)
    alone = [
        record
        for start, end in windows
        for record in posterior_records(config, {start: counts[start]}, [(start, end)], END)
    ]
    assert together == alone
    for build in (superiority_rows, allocation_rows):
        each = [
            row
            for start, _ in windows
            for row in build(config, [r for r in together if r["window_start"] <= start], {start})
        ]
        assert build(config, list(reversed(together))) == each


def test_variants_not_configured_follow_the_configured_ones_by_name() -> None:
    rows = [{"variant": name} for name in ("b-extra", "treatment", "a-extra", "zcontrol")]
    ordered = in_variant_order(rows, CONFIG.test("t").variant_names)
    assert [r["variant"] for r in ordered] == ["zcontrol", "treatment", "a-extra", "b-extra"]
    assert [r["variant"] for r in in_variant_order(rows, [])] == sorted(r["variant"] for r in rows)


def test_config_order_is_by_window_then_test_then_variant() -> None:
    later = [{**r, "window_start": END} for r in records()]
    shuffled = sorted([*later, *records()], key=lambda r: (str(r["variant"]), r["window_start"]))
    ordered = in_config_order(CONFIG, shuffled)
    assert [(r["window_start"], r["variant"]) for r in ordered] == [
        (START, "zcontrol"), (START, "treatment"), (END, "zcontrol"), (END, "treatment")
    ]  # fmt: skip


def test_the_report_of_a_window_agrees_with_the_assets_rows() -> None:
    """diana-analyze's summary (from α and β alone) and the assets' records and superiority
    rows are one computation."""
    stored = records()
    wrong = [{**r, "prob_best": 0.5, "expected_loss": 0.0, "mean": 0.0} for r in stored]
    report = summarize_test(CONFIG.test("t"), wrong)
    rows = superiority_rows(CONFIG, stored)
    for variant, record, row in zip(report["variants"], stored, rows, strict=True):
        assert variant["variant"] == record["variant"] == row["variant"]
        for key in ("mean", "ci_low", "ci_high", "prob_best", "expected_loss"):
            assert variant[key] == record[key], key
        for key in ("p_value_always_valid", "lift_cs_low", "lift_cs_high"):
            assert variant[key] == row[key], key
        assert report["prob_superiority"][variant["variant"]] == row["prob_beats"]
    assert report["decision"] == {
        "verdict": rows[0]["decision"], "winner": rows[0]["winner"], "reason": rows[0]["reason"],
        "level": 0.05,
    }  # fmt: skip
    assert report["decision"]["winner"] == "treatment"


def test_the_anytime_valid_figures_run_over_the_windows() -> None:
    """Records carry each window's own p-value and lift bounds; superiority carries the
    running minimum and intersection, so evidence once seen is not forgotten."""
    windows = [(datetime(2026, 11, 21, h), datetime(2026, 11, 21, h + 1)) for h in range(3)]
    totals = [((1000, 50), (1000, 100)), ((2000, 190), (2000, 200)), ((3000, 300), (3000, 310))]
    counts = {
        start: [
            WindowCounts("t", "zcontrol", 0, 0, *totals[h][0]),
            WindowCounts("t", "treatment", 0, 0, *totals[h][1]),
        ]
        for h, (start, _) in enumerate(windows)
    }
    stored = posterior_records(CONFIG, counts, windows, END)
    raw = [r for r in stored if r["variant"] == "treatment"]
    own = stats.always_valid_pvalues(
        [[t[0][0], t[1][0]] for t in totals], [[t[0][1], t[1][1]] for t in totals]
    )[:, 1]
    assert [r["p_value_always_valid"] for r in raw] == list(own)
    assert own[0] < 0.05 < own[1]  # strong evidence in the first window, weak later
    assert all(r["p_value_always_valid"] is None for r in stored if r["variant"] == "zcontrol")
    rows = [r for r in superiority_rows(CONFIG, stored) if r["variant"] == "treatment"]
    assert [r["p_value_always_valid"] for r in rows] == [own[0]] * 3
    assert [r["lift_cs_low"] for r in rows] == [raw[0]["lift_cs_low"]] * 3
    assert rows[2]["lift_cs_high"] == min(r["lift_cs_high"] for r in raw)


def test_windows_from_before_a_variant_was_added_do_not_stop_the_later_ones() -> None:
    """A variant added to a running test has no records in the earlier windows: those drop
    out of the running figures, and the windows asked for are still computed."""
    windows = [(datetime(2026, 11, 21, h), datetime(2026, 11, 21, h + 1)) for h in range(2)]
    counts = {
        start: [
            WindowCounts("t", "zcontrol", 0, 0, 1000 * (h + 1), 100 * (h + 1)),
            WindowCounts("t", "treatment", 0, 0, 1000 * (h + 1), 120 * (h + 1)),
        ]
        for h, (start, _) in enumerate(windows)
    }
    stored = posterior_records(CONFIG, counts, windows, END)
    before = [
        r
        for r in stored
        if not (r["window_start"] == windows[0][0] and r["variant"] == "treatment")
    ]
    rows = superiority_rows(CONFIG, before, {windows[1][0]})
    assert [r["window_start"] for r in rows] == [windows[1][0]] * 2
    with pytest.raises(ValueError, match="one record per variant"):
        superiority_rows(CONFIG, before, {windows[0][0]})


def test_clicks_before_exposure_and_in_another_variant_warn_above_one_percent() -> None:
    counts = [
        WindowCounts("t", "zcontrol", 0, 0, 1000, 100),
        WindowCounts("t", "treatment", 0, 0, 1000, 100),
    ]

    def verdicts(figures: Quality) -> dict[str, bool]:
        checks = quality_checks(CONFIG, counts, {"t": figures})
        return {c.name: c.passed for c in checks if c.name.startswith("clicks_")}

    # 200 successes: 2 early users of 202 is under 1%, 3 of 203 over; 2 of 200 tagged with
    # another variant is at 1%, 3 over.
    assert verdicts(Quality(0, 0, 2, 2)) == {
        "clicks_without_exposure": True,
        "clicks_before_exposure": True,
        "clicks_in_another_variant": True,
    }
    assert verdicts(Quality(0, 0, 3, 3)) == {
        "clicks_without_exposure": True,
        "clicks_before_exposure": False,
        "clicks_in_another_variant": False,
    }


GUARDED = parse_config(
    """
tests:
  - test_id: t
    minimum_sample: 10
    metrics:
      - {name: clicked, type: binary, role: primary, event: ButtonClicked}
      - {name: revenue, type: revenue, role: guardrail, margin: 0.02, event: Purchase}
    variants:
      - {name: zcontrol, allocation: 0.5}
      - {name: treatment, allocation: 0.5}
"""
)


def guardrail_record(variant: str, prob_worse: float | None) -> dict[str, object]:
    return {"test_id": "t", "variant": variant, "window_start": START, "metric": "revenue",
            "metric_role": "guardrail", "prob_worse_by_margin": prob_worse}  # fmt: skip


@pytest.mark.parametrize(
    ("prob_worse", "verdict", "reason"),
    [
        (0.01, "winner", "guardrails hold, P(worse by margin) < 0.05: revenue 0.010"),
        (0.30, "keep running", "guardrail revenue blocks treatment: P(treatment worse than "
                               "zcontrol by more than 2.0%) = 0.300 ≥ 0.05"),
        (None, "keep running", "guardrail revenue blocks treatment: it has no posterior yet"),
    ],
)  # fmt: skip
def test_a_guardrail_blocks_a_winner_until_it_holds(
    prob_worse: float | None, verdict: str, reason: str
) -> None:
    conversions = posterior_records(GUARDED, {START: records_counts()}, [(START, END)], END)
    assert {r["metric"] for r in conversions} == {"clicked"}
    rails = [guardrail_record("zcontrol", None), guardrail_record("treatment", prob_worse)]
    [row, _] = [r for r in superiority_rows(GUARDED, conversions + rails)]
    assert (row["decision"], reason in row["reason"]) == (verdict, True), row["reason"]
    report = summarize_test(GUARDED.tests[0], conversions + rails)
    assert report["decision"]["verdict"] == verdict


def test_without_its_guardrails_records_a_winner_is_held_back() -> None:
    conversions = posterior_records(GUARDED, {START: records_counts()}, [(START, END)], END)
    [row, _] = superiority_rows(GUARDED, conversions)
    assert row["decision"] == "keep running" and "revenue" in str(row["reason"])


def records_counts() -> list[WindowCounts]:
    return [
        WindowCounts("t", "zcontrol", 1000, 100, 1000, 100),
        WindowCounts("t", "treatment", 1000, 300, 1000, 300),
    ]


REVENUE_FIRST = parse_config(
    """
tests:
  - test_id: t
    minimum_sample: 10
    metrics:
      - {name: revenue, type: revenue, role: primary, event: Purchase}
    variants:
      - {name: zcontrol, allocation: 0.5}
      - {name: treatment, allocation: 0.5}
"""
)


def revenue_records(control_mean: float, treatment_mean: float) -> list[dict[str, object]]:
    """Metric records of 20,000 users an arm whose revenue has sd 5 per user around the
    means, with the conversion equal in both arms."""
    test, n, micro = REVENUE_FIRST.tests[0], 20_000, 1_000_000
    sums = {}
    for variant, mean in (("zcontrol", control_mean), ("treatment", treatment_mean)):
        total = mean * n
        squares = (25.0 * (n - 1) + total * total / n) * micro * micro
        sums[("t", "revenue", variant)] = MetricSums(int(total * micro), int(squares))
    users = {START: {"zcontrol": (n, n), "treatment": (n, n)}}
    zeros = {key: MetricSums() for key in sums}
    metric = metric_records(test, users, {START: zeros, END: sums}, [(START, END)], END)
    counts = [WindowCounts("t", v, n, 2000, n, 2000) for v in ("zcontrol", "treatment")]
    return posterior_records(REVENUE_FIRST, {START: counts}, [(START, END)], END) + metric


def test_a_primary_metric_other_than_the_conversion_decides() -> None:
    [row, _] = superiority_rows(REVENUE_FIRST, revenue_records(10.0, 10.5))
    assert (row["decision"], row["winner"]) == ("winner", "treatment")
    assert str(row["reason"]).startswith("revenue: treatment: P(best) = 1.0000")
    [row, _] = superiority_rows(REVENUE_FIRST, revenue_records(10.0, 10.0))
    assert row["decision"] != "winner" and str(row["reason"]).startswith("revenue: ")


BANDIT = parse_config(
    """
tests:
  - test_id: t
    mode: bandit
    bandit: {burn_in_users: 500, floor: 0.05}
    variants:
      - {name: a, allocation: 0.2}
      - {name: b, allocation: 0.3}
      - {name: c, allocation: 0.5}
"""
)


def test_a_bandit_keeps_its_configured_split_through_burn_in_then_plays_top_two() -> None:
    """Window 1: variant a has 400 < 500 users, so the configured split holds; window 2:
    every variant past 500, so the weights are top-two Thompson's with the floor, by the
    formula on P(best) from an independent reference (mpmath)."""
    windows = [(START, END), (END, datetime(2026, 11, 21, 12))]
    counts = {
        START: [WindowCounts("t", "a", 400, 40, 400, 40), WindowCounts("t", "b", 600, 70, 600, 70),
                WindowCounts("t", "c", 900, 120, 900, 120)],
        END: [WindowCounts("t", "a", 200, 20, 600, 60), WindowCounts("t", "b", 100, 10, 700, 80),
              WindowCounts("t", "c", 100, 20, 1000, 140)],
    }  # fmt: skip
    rows = allocation_rows(BANDIT, posterior_records(BANDIT, counts, windows, END))
    weights = {(r["window_start"], r["variant"]): r["recommended_allocation"] for r in rows}
    assert [weights[(START, v)] for v in "abc"] == [0.2, 0.3, 0.5]
    best = mpmath_prob_best([1 + 60, 1 + 80, 1 + 140], [1 + 540, 1 + 620, 1 + 860])
    challenger = [[best[k] / (1 - best[j]) if k != j else 0.0 for k in range(3)] for j in range(3)]
    played = [0.5 * best[k] + 0.5 * sum(best[j] * challenger[j][k] for j in range(3))
              for k in range(3)]  # fmt: skip
    expected = [0.05 + (1 - 3 * 0.05) * p for p in played]
    assert [weights[(END, v)] for v in "abc"] == pytest.approx(expected, abs=1e-9)


# Pooled, c leads (140/1000); weighted over the windows of first exposure, b does.
SIMPSON_COUNTS = {START: [WindowCounts("t", "a", 600, 60, 600, 60),
                          WindowCounts("t", "b", 700, 80, 700, 80),
                          WindowCounts("t", "c", 1000, 140, 1000, 140)]}  # fmt: skip
SIMPSON_PERIOD = {(START, "t"): {"a": (0.10, 0.005), "b": (0.14, 0.005), "c": (0.11, 0.005)}}


def test_a_bandit_weighs_the_period_weighted_rates_where_the_records_have_them() -> None:
    """The pooled counts favour c (140/1000), but the records' period-weighted rates say b
    (0.14 against 0.10 and 0.11, SE 0.005): the weights follow the period-weighted normal
    posteriors, P(best) by an independent reference (scipy's normal integral)."""
    windows = [(START, END)]
    counts, period = SIMPSON_COUNTS, SIMPSON_PERIOD
    records = posterior_records(BANDIT, counts, windows, END, period)
    rows = allocation_rows(BANDIT, records)
    weights = {r["variant"]: r["recommended_allocation"] for r in rows}
    assert max(weights, key=weights.get) == "b"

    def prob_best(k: int) -> float:
        means = [0.10, 0.14, 0.11]
        others = [j for j in range(3) if j != k]

        def integrand(x: float) -> float:
            density = scipy_stats.norm.pdf(x, means[k], 0.005)
            return density * np.prod([scipy_stats.norm.cdf(x, means[j], 0.005) for j in others])

        return integrate.quad(integrand, 0.0, 0.3, points=means, limit=200)[0]

    best = [prob_best(k) for k in range(3)]
    challenger = [[best[k] / (1 - best[j]) if k != j else 0.0 for k in range(3)] for j in range(3)]
    played = [0.5 * best[k] + 0.5 * sum(best[j] * challenger[j][k] for j in range(3))
              for k in range(3)]  # fmt: skip
    assert [weights[v] for v in "abc"] == pytest.approx([0.05 + 0.85 * p for p in played], abs=1e-7)


def test_a_bandits_anytime_figures_and_report_come_from_the_period_weighted_rates() -> None:
    """The pooled anytime-valid test assumes the configured split, which a bandit left: its
    records carry the test of the period-weighted normal estimates instead (null while none),
    and diana-analyze's report decides and shows the evidence on them."""
    windows = [(START, END)]
    counts, period = SIMPSON_COUNTS, SIMPSON_PERIOD
    records = posterior_records(BANDIT, counts, windows, END, period)
    expected = stats.always_valid_pvalues_normal([0.10, 0.14, 0.11], [0.005] * 3, 0.05)
    assert [r["p_value_always_valid"] for r in records][1:] == pytest.approx(expected[1:])
    assert records[0]["p_value_always_valid"] is None
    without = posterior_records(BANDIT, counts, windows, END)
    assert all(r["p_value_always_valid"] is None for r in without)
    report = summarize_test(BANDIT.tests[0], records)
    assert report["variants"][1]["p_value_always_valid"] == pytest.approx(expected[1])
    assert str(report["decision"]["reason"]).startswith("conversion (period-weighted): ")
