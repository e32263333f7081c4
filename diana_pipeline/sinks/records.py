"""The posterior record of docs/design.md §5 as text: the field list, one JSON line, CSV cells, and
the way back with errors that name the field. Shared by every sink (the Kafka topic too) and
diana-analyze, so each writes and reads the same thing.

In memory a record is a dict: strings, naive UTC datetimes, ints and floats. As text,
datetimes are ISO-8601 with a Z and floats use Python's shortest round-trip form, so reading a
record back gives exactly the floats that were written."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal

from diana_pipeline.config import ALL_SEGMENTS, DEFAULT_METRIC
from diana_pipeline.windows import naive_utc

POSTERIOR_FIELDS: tuple[str, ...] = (
    "test_id",
    "variant",
    "window_start",
    "window_end",
    "timestamp",
    "alpha",
    "beta",
    "exposures_inc",
    "successes_inc",
    "exposures_total",
    "successes_total",
    "success_rate_total",
    "mean",
    "ci_low",
    "ci_high",
    "prob_best",
    "expected_loss",
    "p_value_always_valid",
    "lift_cs_low",
    "lift_cs_high",
    # which metric (docs/metrics.md): records written before metrics are the conversion's
    "metric",
    "metric_type",
    "metric_role",
    "value_total",
    "value_squares_total",
    "value_products_total",
    "prob_worse_by_margin",
    # which segment (docs/segments.md): `all` and `all` for the overall records
    "dimension",
    "segment",
    # a bandit test's conversion (docs/bandit.md): the rate weighted over the windows of first
    # exposure, and its standard error; None in A/B mode
    "rate_period_weighted",
    "rate_period_weighted_se",
)
# Added later, so records written before them lack them; None where a figure has no finite
# value (the control's own p-value, the open end of a confidence sequence) or does not apply
# to the metric (the sums of a binary metric, a guardrail's figure of another).
OPTIONAL_FIELDS = frozenset(
    {"p_value_always_valid", "lift_cs_low", "lift_cs_high"}
    | set(POSTERIOR_FIELDS[POSTERIOR_FIELDS.index("metric") :])
)
REQUIRED_FIELDS: tuple[str, ...] = tuple(f for f in POSTERIOR_FIELDS if f not in OPTIONAL_FIELDS)
# A metric of a normal posterior (a mean, a ratio) has no α, β or successes, and no figures
# while it has no posterior (fewer than two users, or no spread yet).
NORMAL_METRICS = frozenset({"revenue", "mean", "ratio"})
NORMAL_OPTIONAL_FIELDS = frozenset(
    {"alpha", "beta", "successes_inc", "successes_total", "success_rate_total", "mean",
     "ci_low", "ci_high", "prob_best", "expected_loss"}
)  # fmt: skip
TEXT_FIELDS = frozenset(
    {"test_id", "variant", "metric", "metric_type", "metric_role", "dimension", "segment"}
)
TIME_FIELDS = frozenset({"window_start", "window_end", "timestamp"})
INT_FIELDS = frozenset({"exposures_inc", "successes_inc", "exposures_total", "successes_total"})
FLOAT_FIELDS = frozenset(POSTERIOR_FIELDS) - TEXT_FIELDS - TIME_FIELDS - INT_FIELDS
POSITIVE_FIELDS = frozenset({"alpha", "beta"})  # Beta parameters

Record = dict[str, object]
_KINDS = {
    **dict.fromkeys(TEXT_FIELDS, "text"),
    **dict.fromkeys(TIME_FIELDS, "an ISO-8601 time"),
    **dict.fromkeys(INT_FIELDS, "a count"),
    **dict.fromkeys(FLOAT_FIELDS, "a finite number"),
    **dict.fromkeys(POSITIVE_FIELDS, "a positive number"),
}


class RecordError(ValueError):
    """A stored posterior record cannot be read back; the message says where and why."""


def finite_or_none(value: float) -> float | None:
    """A figure as a record holds it: None where it has no finite value (the control's own
    p-value, an unbounded end of a confidence sequence, a posterior not defined yet)."""
    return float(value) if math.isfinite(value) else None


def format_time(moment: datetime) -> str:
    """ISO-8601 in UTC with a Z; microseconds only when there are some."""
    return naive_utc(moment).isoformat() + "Z"


def parse_time(text: str) -> datetime:
    """A naive UTC datetime from ISO-8601 (with Z, an offset, or none: then UTC)."""
    return naive_utc(datetime.fromisoformat(text.strip()))


def encode(field: str, value: object) -> str | int | float | None:
    """A field's value for JSON (times as text) and, through str(), for CSV."""
    if value is None and (field in OPTIONAL_FIELDS or field in NORMAL_OPTIONAL_FIELDS):
        return None
    if field in TIME_FIELDS:
        return format_time(value)  # type: ignore[arg-type]
    if field in INT_FIELDS:
        return int(value)  # type: ignore[call-overload]
    if field in FLOAT_FIELDS:
        number = float(value)  # type: ignore[arg-type]
        if not math.isfinite(number):
            raise RecordError(f"{field}: {number} is not a finite number")
        return number
    return str(value)


def to_json(record: Mapping[str, object]) -> str:
    """One record as compact JSON, its fields in docs/design.md's order."""
    return json.dumps({f: encode(f, record.get(f)) for f in POSTERIOR_FIELDS}, ensure_ascii=False)


def to_cells(record: Mapping[str, object]) -> dict[str, str]:
    # repr() of a float is the shortest text that reads back to the same float.
    return {
        f: repr(value) if isinstance(value := encode(f, record.get(f)), float) else _text(value)
        for f in POSTERIOR_FIELDS
    }


def _text(value: object) -> str:
    return "" if value is None else str(value)


def decode(
    raw: Mapping[str, object], where: str, required: Iterable[str] = REQUIRED_FIELDS
) -> Record:
    """A record from text or JSON values. Missing required fields, unknown test ids and values
    of the wrong kind raise RecordError naming `where` and the field."""
    absent = NORMAL_OPTIONAL_FIELDS if raw.get("metric_type") in NORMAL_METRICS else frozenset()
    missing = [f for f in required if raw.get(f) in (None, "") and f not in absent]
    if missing:
        raise RecordError(f"{where}: missing {', '.join(missing)}")
    record: Record = dict.fromkeys(OPTIONAL_FIELDS | absent)
    for field in POSTERIOR_FIELDS:
        value = raw.get(field)
        if value in (None, ""):
            continue
        try:
            if field in TIME_FIELDS:
                record[field] = parse_time(str(value))
            elif field in INT_FIELDS:
                # Through Decimal: exact for text, floats and DynamoDB's numbers alike.
                number = Decimal(str(value))
                if not number.is_finite() or number != number.to_integral_value() or number < 0:
                    raise ValueError
                record[field] = int(number)
            elif field in FLOAT_FIELDS:
                number = float(value)  # type: ignore[arg-type]
                if not math.isfinite(number) or (field in POSITIVE_FIELDS and number <= 0):
                    raise ValueError
                record[field] = number
            else:
                record[field] = str(value)
        except (TypeError, ValueError, ArithmeticError):
            expected = _KINDS[field]
            raise RecordError(f"{where}: {field} should be {expected}, got {value!r}") from None
    return record


def record_key(record: Mapping[str, object]) -> str:
    """What identifies a record: test, variant and window (the Kafka key)."""
    return f"{record['test_id']}/{sort_key(record)}"


def sort_key(record: Mapping[str, object]) -> str:
    """The DynamoDB sort key under the test_id partition key: `variant#window_start` for the
    conversion's overall record (as before metrics), `metric#variant#window_start` for any
    other metric, each prefixed `dimension=segment#` for a segment's record."""
    key = f"{record['variant']}#{format_time(record['window_start'])}"  # type: ignore[arg-type]
    metric = record.get("metric")
    if metric not in (None, "", DEFAULT_METRIC):
        key = f"{metric}#{key}"
    dimension = record.get("dimension")
    if dimension not in (None, "", ALL_SEGMENTS):
        key = f"{dimension}={record['segment']}#{key}"
    return key
