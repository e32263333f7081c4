"""diana_pipeline.bandit_analysis: the sample-ratio check against the weights in force (no
error when users follow moving weights, though the configured split is far off; an error on
a real mismatch), the period-weighted rates by hand, and the decision on them."""

from __future__ import annotations

from datetime import datetime

import pytest

from diana_pipeline.allocations import AllocationVersion
from diana_pipeline.analysis import SRM_ERROR_P, quality_checks
from diana_pipeline.bandit_analysis import (
    period_weighted,
    period_weighted_looks,
    weights_in_force_srm,
)
from diana_pipeline.config import parse_config
from diana_pipeline.counting import WindowCounts

CONFIG = parse_config(
    """
tests:
  - test_id: arms
    mode: bandit
    variants:
      - {name: a, allocation: 0.5}
      - {name: b, allocation: 0.5}
""",
    env={},
)
TEST = CONFIG.tests[0]
W = [datetime(2026, 11, 21, h) for h in range(10, 14)]


def version(number: int, a: float) -> AllocationVersion:
    at = W[number]
    return AllocationVersion("arms", number, {"a": a, "b": 1 - a}, at, at, None)


VERSIONS = [version(1, 0.8), version(2, 0.95)]


def cells(users: dict[int, tuple[int, int]]) -> list[tuple[datetime, int, str, int]]:
    """window/version p (0, 1, 2) → users given a and b."""
    return [(W[p], p, v, n) for p, pair in users.items() for v, n in zip("ab", pair, strict=True)]


def srm_check(bandit_srm: dict) -> object:
    counts = [WindowCounts("arms", v, 0, 0, n, 0) for v, n in zip("ab", (0, 0), strict=True)]
    [check] = [c for c in quality_checks(CONFIG, counts, {}, bandit_srm)
               if c.name == "sample_ratio_mismatch"]  # fmt: skip
    return check


def test_users_following_moving_weights_raise_no_srm_error() -> None:
    # 1,000 users per version, split as the version in force said (the configured 50/50 first).
    following = cells({0: (500, 500), 1: (800, 200), 2: (950, 50)})
    p, figures = weights_in_force_srm(TEST, following, VERSIONS)
    assert p == 1.0
    assert figures["exposures"] == [2250, 750] and figures["expected"] == [2250.0, 750.0]
    assert srm_check({"arms": (p, figures)}).passed
    # Judged against the configured split instead, the same users would be an error.
    counts = [WindowCounts("arms", "a", 0, 0, 2250, 0), WindowCounts("arms", "b", 0, 0, 750, 0)]
    [chi2] = [c for c in quality_checks(CONFIG, counts, {}) if c.name == "sample_ratio_mismatch"]
    assert not chi2.passed and chi2.severity == "error"


def test_a_real_mismatch_under_moving_weights_is_an_error() -> None:
    # Version 2 said 95% a, but only 80% came: assignment is not following the weights.
    broken = cells({0: (500, 500), 1: (800, 200), 2: (800, 200), 3: (800, 200)})
    versions = [*VERSIONS, version(3, 0.95)]
    p, _ = weights_in_force_srm(TEST, broken, versions)
    assert p < SRM_ERROR_P
    check = srm_check({"arms": (p, {})})
    assert not check.passed and check.severity == "error"


def test_period_weighted_rates_by_hand() -> None:
    # Cohort 10:00: 100 a (10 converted), 100 b (20); cohort 11:00: 300 a (60), 100 b (30).
    cohorts = [(W[0], "a", 100, 10), (W[0], "b", 100, 20), (W[1], "a", 300, 60),
               (W[1], "b", 100, 30)]  # fmt: skip
    found = period_weighted(TEST, cohorts)
    # Period weights 200/600 and 400/600, the same for both arms.
    rate_a = (200 * 0.10 + 400 * 0.20) / 600
    se_a = ((1 / 3) ** 2 * 0.1 * 0.9 / 100 + (2 / 3) ** 2 * 0.2 * 0.8 / 300) ** 0.5
    assert found["a"] == pytest.approx((rate_a, se_a), rel=1e-12)
    rate_b = (200 * 0.20 + 400 * 0.30) / 600
    assert found["b"][0] == pytest.approx(rate_b, rel=1e-12)
    # Pooled, a would be 70/400 = 0.175 instead of 0.1667: its users came later, when rates rose.
    assert period_weighted(TEST, []) == {"a": (None, None), "b": (None, None)}


def records(rate_a: float, rate_b: float, se: float, users: int) -> list[dict]:
    return [
        {"test_id": "arms", "variant": v, "window_start": W[0], "metric": "conversion",
         "dimension": "all", "exposures_total": users, "rate_period_weighted": r,
         "rate_period_weighted_se": se}
        for v, r in (("a", rate_a), ("b", rate_b))
    ]  # fmt: skip


def test_the_decision_weighs_the_period_weighted_rates() -> None:
    [tied] = period_weighted_looks(TEST, records(0.20, 0.20, 0.004, 5000)).values()
    assert tied.prob_best == pytest.approx([0.5, 0.5])
    [clear] = period_weighted_looks(TEST, records(0.20, 0.25, 0.004, 5000)).values()
    assert clear.prob_best[1] > 0.999
    assert clear.evidence.p_values[1][0] < 1e-6
    assert period_weighted_looks(TEST, records(0.2, 0.2, 0.004, 5000)[:1]) == {}
