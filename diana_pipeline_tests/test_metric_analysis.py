"""Posteriors of the metrics beyond the conversion, from sums, against the same quantities
computed directly from each user's values (numpy's mean, variance and covariance)."""

from __future__ import annotations

import numpy as np
import pytest

from diana_pipeline.config import Metric
from diana_pipeline.metric_analysis import MetricData, figures, posterior
from diana_pipeline_tests.counting.test_metric_sums import config_with_metrics

TEST = config_with_metrics().tests[0]
REVENUE = Metric(name="revenue", type="revenue", role="guardrail", margin=0.01, event="Purchase")
ORDERS = Metric(name="orders", type="count", event="Purchase")
ORDER_VALUE = Metric(name="aov", type="ratio", numerator="revenue", denominator="orders")


def sums_of(per_user: list[np.ndarray]) -> MetricData:
    """One window, one column per variant, from each user's total."""
    row = lambda f: np.array([[f(u) for u in per_user]], float)  # noqa: E731
    return MetricData(
        row(len), row(np.sum), row(lambda u: np.sum(u * u)), np.zeros((1, len(per_user)))
    )


def test_revenue_posterior_is_the_sample_mean_and_its_standard_error() -> None:
    rng = np.random.default_rng(3)
    users = [rng.lognormal(1.0, 1.0, 500) * (rng.random(500) < 0.3) for _ in range(2)]
    post = posterior(TEST, REVENUE, sums_of(users))
    for k, values in enumerate(users):
        assert post.a[0, k] == pytest.approx(values.mean(), rel=1e-12)
        assert post.b[0, k] == pytest.approx(values.std(ddof=1) / np.sqrt(500), rel=1e-9)


def test_ratio_posterior_is_the_delta_method_of_the_users_totals() -> None:
    rng = np.random.default_rng(4)
    orders = [rng.poisson(0.4, 800).astype(float) for _ in range(2)]
    revenue = [o * rng.lognormal(2.0, 0.5, 800) for o in orders]
    top, bottom = sums_of(revenue), sums_of(orders)
    products = np.array([[np.sum(r * o) for r, o in zip(revenue, orders, strict=True)]])
    data = MetricData(top.users, np.zeros((1, 2)), np.zeros((1, 2)), products, (top, bottom))
    post = posterior(TEST, ORDER_VALUE, data)
    for k in range(2):
        x, y = revenue[k], orders[k]
        ratio = x.sum() / y.sum()
        cov = np.cov(x, y)  # (n − 1) denominators
        var = (cov[0, 0] - 2 * ratio * cov[0, 1] + ratio**2 * cov[1, 1]) / (800 * y.mean() ** 2)
        assert post.a[0, k] == pytest.approx(ratio, rel=1e-12)
        assert post.b[0, k] == pytest.approx(np.sqrt(var), rel=1e-9)


def test_count_posterior_is_gamma_of_events_and_users() -> None:
    data = sums_of([np.array([0.0, 2, 1]), np.array([3.0, 0])])
    post = posterior(TEST, ORDERS, data)
    assert (post.family, post.a.tolist(), post.b.tolist()) == ("gamma", [[4, 4]], [[4, 3]])


def test_a_guardrail_that_lost_revenue_is_flagged_and_one_that_held_is_not() -> None:
    rng = np.random.default_rng(5)
    control = rng.normal(10.0, 2.0, 4000)
    for shift, flagged in ((-0.5, True), (0.0, False)):
        values = figures(TEST, REVENUE, sums_of([control, control + shift]))
        worse = values["prob_worse_by_margin"][0, 1]
        assert (worse > 0.95) == flagged, worse
        assert np.isnan(values["prob_worse_by_margin"][0, 0])


def test_one_user_gives_no_normal_posterior() -> None:
    values = figures(TEST, REVENUE, sums_of([np.array([5.0]), np.array([1.0, 2.0])]))
    assert np.isnan(values["prob_best"]).all()
