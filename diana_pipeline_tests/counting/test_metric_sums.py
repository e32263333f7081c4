"""The sums of the metrics beyond the conversion (counting/metric_sums.py): a hand-computed
fixture, and the incremental state against the per-user recount over random streams (values,
late exposures, users in two variants, events before exposure or after the window)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from diana_pipeline.config import ExperimentsConfig, Metric
from diana_pipeline.counting import (
    CountingRules,
    MetricSums,
    metric_sums,
    recount_metric_sums,
)
from diana_pipeline.counting import state as counting_state
from diana_pipeline.store import EventStore
from diana_pipeline_tests.counting.test_rules import CLICK, SHOW, TEST, config_with_one_hour_window
from diana_pipeline_tests.counting.test_state import START, add, replay, streams_of

CUTOFFS = [START + timedelta(hours=h) for h in range(6)]
BUY, ERROR = "Purchase", "PageError"
MICRO = 1_000_000


def config_with_metrics() -> ExperimentsConfig:
    """The one-hour test with a metric of every type."""
    config = config_with_one_hour_window()
    metrics = [
        Metric(name="conversion", type="binary", role="primary", event=CLICK),
        Metric(name="purchased", type="binary", event=BUY),
        Metric(name="purchases", type="count", event=BUY),
        Metric(name="revenue", type="revenue", role="guardrail", margin=0.01, event=BUY),
        Metric(name="errors", type="count", direction="decrease", event=ERROR),
        Metric(name="order_value", type="ratio", numerator="revenue", denominator="purchases"),
    ]
    test = config.tests[0].model_copy(update={"metrics": metrics})
    return config.model_copy(update={"tests": [test]})


def nonzero(sums: dict) -> dict:
    return {key: value for key, value in sums.items() if value != MetricSums()}


def assert_equals_recount(store: EventStore, config: ExperimentsConfig) -> None:
    from_state = metric_sums(store.connection, config, CUTOFFS)
    for cutoff in CUTOFFS:
        expected = recount_metric_sums(store.connection, config, cutoff)
        assert nonzero(from_state[cutoff]) == nonzero(expected), cutoff


# (event_id, type, variant, user, minutes after 09:00, value); the comments give the effect.
FIXTURE = [
    ("a1", SHOW, "control", "ann", 10, None),  # ann: control from 09:10
    ("a2", BUY, "control", "ann", 5, 99.0),  # before her exposure: does not count
    ("a3", BUY, "control", "ann", 20, 10.5),  # counts: 1 purchase, 10.5
    ("a4", BUY, "control", "ann", 65, 4.25),  # 10:05, within the hour: 2 purchases, 14.75
    ("a5", BUY, "control", "ann", 75, 7.0),  # 10:15, after her hour: does not count
    ("a6", ERROR, "control", "ann", 30, None),  # 1 error
    ("b1", SHOW, "treatment", "bo", 30, None),  # bo: treatment from 09:30
    ("b2", BUY, "treatment", "bo", 40, None),  # a purchase without a value: 1 purchase, 0
    ("b3", BUY, "treatment", "bo", 40, -2.5),  # a refund at the same moment: 2, -2.5
    ("c1", SHOW, "control", "cy", 50, None),  # cy: control from 09:50 ...
    ("c2", BUY, "control", "cy", 55, 3.0),  # counts until ...
    ("c3", SHOW, "treatment", "cy", 130, None),  # ... 11:10: in two variants, leaves
    ("d1", BUY, "control", "di", 15, 8.0),  # di is never exposed: nothing
]


def test_hand_computed_sums_at_each_cutoff(tmp_path: Path) -> None:
    config = config_with_metrics()
    with EventStore.open(tmp_path / "s.duckdb") as store:
        add(store, config, FIXTURE, 0)
        sums = metric_sums(store.connection, config, CUTOFFS[1:4])
    at_10, at_11, at_12 = (sums[c] for c in CUTOFFS[1:4])
    # 10:00: ann 1 purchase of 10.5 and 1 error; cy 1 of 3.0; bo 2 purchases of -2.5 in all.
    assert at_10[(TEST, "purchases", "control")] == MetricSums(2, 1 + 1)
    assert at_10[(TEST, "revenue", "control")] == MetricSums(
        int(13.5 * MICRO), int(10.5 * MICRO) ** 2 + (3 * MICRO) ** 2
    )
    assert at_10[(TEST, "revenue", "treatment")] == MetricSums(
        int(-2.5 * MICRO), int(2.5 * MICRO) ** 2
    )
    assert at_10[(TEST, "purchased", "treatment")] == MetricSums(1, 1)
    assert at_10[(TEST, "purchases", "treatment")] == MetricSums(2, 4)
    assert at_10[(TEST, "errors", "control")] == MetricSums(1, 1)
    # order value: Σ revenue × purchases per user
    assert at_10[(TEST, "order_value", "control")] == MetricSums(
        0, 0, int(10.5 * MICRO) * 1 + 3 * MICRO * 1
    )
    # 11:00: ann's 10:05 purchase: 2 purchases, 14.75.
    assert at_11[(TEST, "purchases", "control")] == MetricSums(3, 4 + 1)
    assert at_11[(TEST, "revenue", "control")] == MetricSums(
        int(17.75 * MICRO), int(14.75 * MICRO) ** 2 + (3 * MICRO) ** 2
    )
    # 12:00: cy left at 11:10, with everything he counted.
    assert at_12[(TEST, "purchases", "control")] == MetricSums(2, 4)
    assert at_12[(TEST, "revenue", "control")] == MetricSums(
        int(14.75 * MICRO), int(14.75 * MICRO) ** 2
    )
    assert at_12[(TEST, "order_value", "control")] == MetricSums(0, 0, int(14.75 * MICRO) * 2)
    assert at_12[(TEST, "purchased", "control")] == MetricSums(1, 1)


_event = st.tuples(
    st.sampled_from([SHOW, SHOW, CLICK, BUY, BUY, ERROR]),
    st.sampled_from(["control", "treatment"]),
    st.sampled_from(["u1", "u2", "u3"]),
    st.integers(0, 59).map(lambda step: step * 5),
    st.one_of(st.none(), st.sampled_from([0.0, 1.5, -2.25, 19.99, 1e6])),
)
_stream = streams_of(_event)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=_stream)
# A refund in the user's second window, then a second variant: the level they leave with is
# their last (17.74), not their highest.
@example(stream=[([((SHOW, "control", "u1", 50, None), False),
                   ((BUY, "control", "u1", 55, 19.99), False),
                   ((BUY, "control", "u1", 65, -2.25), False)], None),
                 ([((SHOW, "treatment", "u1", 100, None), False)], None)])  # fmt: skip
def test_sums_merged_batch_by_batch_equal_the_per_user_recount(
    tmp_path_factory: pytest.TempPathFactory, stream: list
) -> None:
    config = config_with_metrics()
    rules = CountingRules.of(config)
    path = tmp_path_factory.mktemp("state") / "s.duckdb"
    with EventStore.open(path) as store:
        replay(store, config, stream)
        assert counting_state.rebuilds(store.connection) == 0
        assert_equals_recount(store, config)
        assert counting_state.differences(store.connection, rules) == []


# A user exposed in two variants at the same moment leaves the counts at once (t2 = t1):
# which of the two is v, and so co, is arbitrary in a merge and a rebuild alike, and counts
# nothing.
_MOMENTS = """SELECT * REPLACE (CASE WHEN t2 = t1 THEN NULL ELSE v END AS v,
                              CASE WHEN t2 = t1 THEN NULL ELSE co END AS co)
FROM user_moments"""


def _state_tables(store: EventStore) -> dict[str, set[tuple]]:
    """The users' moments and values, and the steps that are not zero (a merge leaves a
    step it took back to zero, a rebuild writes none)."""
    tables = {
        "user_moments": _MOMENTS,
        "user_values": "SELECT * FROM user_values",
        "window_steps": "SELECT * FROM window_steps WHERE change <> 0",
        "metric_steps": "SELECT * FROM metric_steps WHERE change <> 0",
    }
    return {table: set(store.connection.execute(sql).fetchall()) for table, sql in tables.items()}


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=_stream)
def test_a_rebuild_and_a_recount_in_parts_leave_the_state_the_merges_left(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    stream: list,
) -> None:
    """A rebuild, and the recount `diana-state check` compares with, take the users in parts
    (of 2 events here, of millions in a store) and each user's rule and value events in the
    same part: the recount finds every window's steps the batch-by-batch merges left, and the
    rebuild leaves every user's moments and values and every window's steps as they were."""
    config = config_with_metrics()
    rules = CountingRules.of(config)
    monkeypatch.setattr(counting_state, "REBUILD_PART_EVENTS", 2)
    with EventStore.open(tmp_path_factory.mktemp("parts") / "s.duckdb") as store:
        replay(store, config, stream)
        merged = _state_tables(store)
        caplog.clear()
        with caplog.at_level("INFO", logger=counting_state.__name__):
            assert counting_state.differences(store.connection, rules) == []
            counting_state.rebuild(store.connection, rules)
        if store.count_events() > 2:
            logged = [r.getMessage() for r in caplog.records]
            assert any("recount: part 2 of" in line for line in logged)
            assert any("rebuild: part 2 of" in line for line in logged)
        assert _state_tables(store) == merged
