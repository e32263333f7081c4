"""Winsorised revenue (counting/winsorize.py): the capped sums against capping each user's
total by hand from the events, and the cap against numpy's quantile."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from fractions import Fraction
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from diana_pipeline.counting import MetricSums, window_counts
from diana_pipeline.counting.winsorize import cap_at_quantile, winsorized_sums
from diana_pipeline.store import EventStore
from diana_pipeline_tests.counting.test_metric_sums import (
    BUY,
    CUTOFFS,
    MICRO,
    _event,
    config_with_metrics,
)
from diana_pipeline_tests.counting.test_rules import SHOW, TEST
from diana_pipeline_tests.counting.test_state import START, add


@given(
    totals=st.lists(st.integers(-(10**9), 10**12), max_size=30),
    zeros=st.integers(0, 30),
    q=st.floats(0.5, 0.999),
)
def test_the_cap_is_numpys_quantile_floored(totals: list[int], zeros: int, q: float) -> None:
    everyone = totals + [0] * zeros
    if not everyone:
        return
    # numpy interpolates in floats: the exact cap is within a unit of its floor.
    assert abs(cap_at_quantile(totals, zeros, q) - math.floor(np.quantile(everyone, q))) <= 1


def exact_quantile_floor(ordered: list[int], q: float) -> int:
    """numpy's default (linear) quantile of sorted integers, in exact fractions, floored."""
    h = (len(ordered) - 1) * Fraction(q)
    low = int(h)
    high = min(low + 1, len(ordered) - 1)
    return math.floor(ordered[low] + (h - low) * (ordered[high] - ordered[low]))


def capped_by_hand(rows: list[tuple], cutoff: datetime, q: float) -> dict[str, MetricSums]:
    """The winsorised revenue per variant at `cutoff`, straight from the events in Python:
    each counted user's total of Purchase values (micro-units) in their hour after exposure,
    capped at the q-quantile of every counted user's total (zeros included), numpy's linear
    interpolation in exact arithmetic."""
    users: dict[str, dict] = {}
    for _, kind, variant, user, minutes, value in rows:
        moment = START + timedelta(minutes=minutes)
        if moment < cutoff:
            users.setdefault(user, {"shows": [], "buys": []})
            if kind == SHOW:
                users[user]["shows"].append((moment, variant))
            elif kind == BUY:
                users[user]["buys"].append((moment, value))
    totals = {}
    for user, seen in users.items():
        if not seen["shows"] or len({v for _, v in seen["shows"]}) > 1:
            continue
        t1, variant = min(seen["shows"])
        total = sum(round((value or 0) * MICRO) for moment, value in seen["buys"]
                    if t1 <= moment <= t1 + timedelta(hours=1))  # fmt: skip
        totals[user] = (variant, total)
    cap = exact_quantile_floor(sorted(t for _, t in totals.values()), q) if totals else 0
    return {
        variant: MetricSums(
            sum(min(t, cap) for v, t in totals.values() if v == variant),
            sum(min(t, cap) ** 2 for v, t in totals.values() if v == variant),
        )
        for variant in ("control", "treatment")
    }


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=st.lists(_event, min_size=1, max_size=40), q=st.sampled_from([0.6, 0.9, 0.99]))
# u1's second variant comes at 10:00 exactly: at the 10:00 cutoff u1 still counts.
@example(rows=[(SHOW, "control", "u1", 10, None), (BUY, "control", "u1", 20, 19.99),
               (SHOW, "treatment", "u1", 60, None), (SHOW, "control", "u2", 30, None)],
         q=0.99)  # fmt: skip
# A refund and a zero: the cap, -22,500 micro-units exactly, floored one lower in floats.
@example(rows=[(SHOW, "control", "u2", 0, None), (SHOW, "control", "u3", 0, None),
               (BUY, "control", "u2", 0, -2.25)], q=0.99)  # fmt: skip
def test_winsorized_revenue_equals_capping_each_users_total_by_hand(
    tmp_path_factory: pytest.TempPathFactory, rows: list, q: float
) -> None:  # fmt: skip
    config = config_with_metrics()
    test = config.tests[0]
    metrics = [m.model_copy(update={"winsorize": q}) if m.name == "revenue" else m
               for m in test.metrics]  # fmt: skip
    config = config.model_copy(update={"tests": [test.model_copy(update={"metrics": metrics})]})
    events = [(f"e{i}", *row) for i, row in enumerate(rows)]
    with EventStore.open(tmp_path_factory.mktemp("w") / "s.duckdb") as store:
        add(store, config, events, 0)
        counts = window_counts(store.connection, config, list(pairwise(CUTOFFS)))
        counted = {end: {(TEST, r.variant): r.exposures_total for r in counts[start]}
                   for start, end in pairwise(CUTOFFS)}  # fmt: skip
        capped = winsorized_sums(store.connection, config, counted)
    for end in counted:
        expected = capped_by_hand(events, end, q)
        for variant in ("control", "treatment"):
            assert capped[end][(TEST, "revenue", variant)] == expected[variant], (end, variant)
