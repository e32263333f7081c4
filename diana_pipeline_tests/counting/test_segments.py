"""Segments (counting/rules.py SEGMENTED_SQL): the counts per dimension and segment, merged
batch by batch, equal a per-user recount over random streams (properties on some exposures,
late exposures that change a user's segment, users in two variants, backfills), and one
dimension's segments add up to the test's counts."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.counting import (
    CountingRules,
    recount_segment_counts,
    segment_counts,
    window_counts,
)
from diana_pipeline.counting import state as counting_state
from diana_pipeline.store import EventStore
from diana_pipeline_tests.counting.test_rules import CLICK, SHOW, config_with_one_hour_window
from diana_pipeline_tests.counting.test_state import WINDOWS, replay, streams_of

DEVICE_MOBILE = {"device": "mobile", "country": "DE"}
DESKTOP = {"device": "desktop"}


def config_with_dimensions() -> ExperimentsConfig:
    config = config_with_one_hour_window()
    test = config.tests[0].model_copy(update={"dimensions": ["device", "country"]})
    return config.model_copy(update={"tests": [test]})


_event = st.tuples(
    st.sampled_from([SHOW, SHOW, CLICK]),
    st.sampled_from(["control", "treatment"]),
    st.sampled_from(["u1", "u2", "u3"]),
    st.integers(0, 59).map(lambda step: step * 5),
    st.just(None),
    st.sampled_from([None, DEVICE_MOBILE, DESKTOP, {"country": "FR"}]),
)


def with_properties_text(fields: tuple) -> tuple:
    """An event's fields as stored: its properties as canonical JSON text."""
    *rest, properties = fields
    return (*rest, None if properties is None else json_text(properties))


def json_text(properties: dict) -> str:
    return orjson.dumps(properties, option=orjson.OPT_SORT_KEYS).decode()


def assert_equals_recount(store: EventStore, config: ExperimentsConfig) -> None:
    segments = segment_counts(store.connection, config, WINDOWS)
    overall = window_counts(store.connection, config, WINDOWS)
    for start, end in WINDOWS:
        got = {(r.test_id, r.dimension, r.segment, r.variant): (r.exposures_total,
               r.successes_total) for r in segments[start]}  # fmt: skip
        expected = recount_segment_counts(store.connection, config, end)
        assert {k: v for k, v in got.items() if v != (0, 0)} == {
            k: (c.exposures, c.successes) for k, c in expected.items()
        }, end
        for dimension in ("device", "country"):
            summed: Counter = Counter()
            for (_, d, _, variant), (exposed, converted) in got.items():
                if d == dimension:
                    summed[(variant, "e")] += exposed
                    summed[(variant, "s")] += converted
            for row in overall[start]:
                assert (summed[(row.variant, "e")], summed[(row.variant, "s")]) == (
                    row.exposures_total, row.successes_total)  # fmt: skip


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=streams_of(_event))
# A late exposure without properties moves u1's first exposure: mobile becomes (none).
@example(
    stream=[
        (
            [
                ((SHOW, "control", "u1", 40, None, DEVICE_MOBILE), False),
                ((CLICK, "control", "u1", 50, None, None), False),
            ],
            None,
        ),
        ([((SHOW, "control", "u1", 10, None, None), False)], (0, 2)),
    ]
)
# Two exposures at the same moment with different properties: the least text wins.
@example(
    stream=[
        (
            [
                ((SHOW, "control", "u1", 40, None, DESKTOP), False),
                ((SHOW, "control", "u1", 40, None, DEVICE_MOBILE), False),
            ],
            None,
        )
    ]
)
def test_segments_merged_batch_by_batch_equal_the_recount(
    tmp_path_factory: pytest.TempPathFactory, stream: list
) -> None:  # fmt: skip
    config = config_with_dimensions()
    rules = CountingRules.of(config)
    with EventStore.open(tmp_path_factory.mktemp("seg") / "s.duckdb") as store:
        replay(store, config, stream, stored=with_properties_text)
        assert counting_state.rebuilds(store.connection) == 0
        assert_equals_recount(store, config)
        assert counting_state.differences(store.connection, rules) == []
