"""Records as text and back: exact floats and times, and errors that name the field."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

import pytest

from diana_pipeline.sinks.records import (
    POSTERIOR_FIELDS,
    RecordError,
    decode,
    format_time,
    parse_time,
    record_key,
    sort_key,
    to_cells,
    to_json,
)
from diana_pipeline_tests.sinks.records_for_tests import make_records, make_revenue_records

START = datetime(2026, 11, 21, 10)


def test_json_and_cells_read_back_to_the_same_record() -> None:
    for record in make_records(START):
        from_json = json.loads(to_json(record))
        assert list(from_json) == list(POSTERIOR_FIELDS)
        assert decode(from_json, "json") == record
        assert decode(to_cells(record), "csv") == record


def test_a_revenue_metric_reads_back_without_alpha_beta_or_successes() -> None:
    revenue = make_revenue_records(START)
    figures = ("mean", "ci_low", "ci_high", "prob_best", "expected_loss", "success_rate_total")
    no_spread = {**revenue[0], **dict.fromkeys(figures)}
    for record in [*revenue, no_spread]:
        assert decode(json.loads(to_json(record)), "json") == record
        assert decode(to_cells(record), "csv") == record
    conversion = to_cells(make_records(START)[0])
    with pytest.raises(RecordError, match="csv: missing alpha, beta"):
        decode({**conversion, "alpha": "", "beta": ""}, "csv")


def test_keys_of_another_metric_never_collide_with_the_conversion() -> None:
    conversion, revenue = make_records(START)[0], make_revenue_records(START)[0]
    assert sort_key(conversion) == "control#2026-11-21T10:00:00Z"  # as before metrics
    assert sort_key(revenue) == "revenue#control#2026-11-21T10:00:00Z"
    assert record_key(revenue) == "t1/revenue#control#2026-11-21T10:00:00Z"
    mobile = {**conversion, "dimension": "device", "segment": "mobile"}
    assert sort_key(mobile) == "device=mobile#control#2026-11-21T10:00:00Z"
    assert sort_key({**revenue, "dimension": "device", "segment": "(none)"}) == (
        "device=(none)#revenue#control#2026-11-21T10:00:00Z"
    )


def test_counts_read_from_dynamodb_decimals_and_text() -> None:
    record = to_cells(make_records(START)[0])
    as_decimals = {**record, "exposures_total": Decimal(2**53 + 1), "alpha": Decimal("1.5")}
    decoded = decode(as_decimals, "item")
    assert decoded["exposures_total"] == 2**53 + 1 and decoded["alpha"] == 1.5


def test_times_are_utc_with_a_z() -> None:
    assert format_time(START) == "2026-11-21T10:00:00Z"
    assert parse_time("2026-11-21T11:00:00+01:00") == START
    assert parse_time("2026-11-21T10:00:00") == START
    assert sort_key(make_records(START)[1]) == "treatment#2026-11-21T10:00:00Z"
    assert record_key(make_records(START)[0]) == "t1/control#2026-11-21T10:00:00Z"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("alpha", "abc", "where: alpha should be a positive number, got 'abc'"),
        ("beta", "0", "where: beta should be a positive number, got '0'"),
        ("prob_best", "nan", "where: prob_best should be a finite number, got 'nan'"),
        ("exposures_total", "1.5", "where: exposures_total should be a count, got '1.5'"),
        ("exposures_total", "-1", "where: exposures_total should be a count, got '-1'"),
        ("exposures_total", "x", "where: exposures_total should be a count, got 'x'"),
        ("window_start", "yesterday", "where: window_start should be an ISO-8601 time"),
        ("beta", "", "where: missing beta"),
    ],
)
def test_bad_values_name_the_field(field: str, value: str, message: str) -> None:
    cells = {**to_cells(make_records(START)[0]), field: value}
    with pytest.raises(RecordError, match="^" + message.replace("(", r"\(")):
        decode(cells, "where")


def test_non_finite_floats_are_refused_on_the_way_out() -> None:
    record = {**make_records(START)[0], "prob_best": float("inf")}
    with pytest.raises(RecordError, match="prob_best: inf is not a finite number"):
        to_json(record)
