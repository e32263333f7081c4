"""Invalid experiments.yaml files, one per way to get it wrong: each case is a change to the
shipped file and the error it must give (a regex, after the file name). The config tests
check the message; the reliability suite hands each file to the pipeline's entry points."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import yaml

from diana_pipeline.harness.paths import SHIPPED_CONFIG

Mutation = Callable[[dict[str, Any]], None]


def shipped_raw() -> dict[str, Any]:
    """The shipped experiments.yaml as parsed YAML, before validation."""
    return yaml.safe_load(SHIPPED_CONFIG.read_text())


def _holder(raw: dict[str, Any], path: str) -> tuple[Any, str | int]:
    """The node that holds a dotted path's last part, and that part (integers index lists)."""
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = raw
    for part in parents:
        node = node[part]
    return node, last


def set_field(path: str, value: Any) -> Mutation:
    """A mutation that sets a dotted path."""

    def mutate(raw: dict[str, Any]) -> None:
        node, last = _holder(raw, path)
        node[last] = value

    return mutate


def delete_field(path: str) -> Mutation:
    """A mutation that deletes a dotted path."""

    def mutate(raw: dict[str, Any]) -> None:
        node, last = _holder(raw, path)
        del node[last]

    return mutate


def duplicate_first_test(raw: dict[str, Any]) -> None:
    raw["tests"].append(copy.deepcopy(raw["tests"][0]))


# case -> (the change, what the error must say)
BAD_CASES: dict[str, tuple[Mutation, str]] = {
    "unknown sink": (
        set_field("output_sink", "kafka"),
        r"output_sink: Input should be 'console', 'csv' or 'dynamodb', got 'kafka'",
    ),
    "allocations not summing to 1": (
        set_field("tests.0.variants.1.allocation", 0.4),
        r"tests\[0\]\.variants: allocations must sum to 1, got 0\.9",
    ),
    "allocation above 1": (
        set_field("tests.0.variants.0.allocation", 1.5),
        r"tests\[0\]\.variants\[0\]\.allocation: Input should be less than or equal to 1",
    ),
    "duplicate variant": (
        set_field("tests.0.variants.1.name", "control"),
        r"tests\[0\]\.variants: duplicate variant name 'control'",
    ),
    "unknown mode": (
        set_field("tests.0.mode", "mab"),
        r"tests\[0\]\.mode: Input should be 'ab' or 'bandit', got 'mab'",
    ),
    "bandit settings in an a/b test": (
        set_field("tests.0.bandit", {"burn_in_users": 50}),
        r"tests\[0\]: bandit settings are given but mode is 'ab'; set mode: bandit",
    ),
    "bandit floor above 1/K": (
        lambda raw: raw["tests"][0].update(
            mode="bandit",
            bandit={"floor": 0.4},
            variants=[
                {"name": n, "allocation": a} for n, a in (("a", 0.4), ("b", 0.3), ("c", 0.3))
            ],
        ),
        r"tests\[0\]: bandit\.floor must be at most 1/K = 0\.3333 for 3 variants, got 0\.4",
    ),
    "duplicate test id": (duplicate_first_test, r"tests: duplicate test_id 'button-color-test'"),
    "no tests": (set_field("tests", []), r"tests: List should have at least 1 item"),
    "tests missing": (delete_field("tests"), r"tests: Field required"),
    "one variant": (
        set_field("tests.0.variants", [{"name": "control", "allocation": 1.0}]),
        r"tests\[0\]\.variants: List should have at least 2 items",
    ),
    "bad conversion window": (
        set_field("tests.0.conversion_window", "a day"),
        r"tests\[0\]\.conversion_window: must be a duration such as 30m, 1h or 7d, got 'a day'",
    ),
    "negative conversion window": (
        set_field("tests.0.conversion_window", -5),
        r"tests\[0\]\.conversion_window: must be a positive duration",
    ),
    "window not splitting a day": (
        set_field("partitions.window", "7m"),
        r"partitions\.window: must split an hour or a day into equal windows .* got 7m",
    ),
    "negative prior": (
        set_field("tests.0.prior.alpha", -1),
        r"tests\[0\]\.prior\.alpha: Input should be greater than or equal to 0\.01",
    ),
    "zero prior": (
        set_field("tests.0.prior.beta", 0),
        r"tests\[0\]\.prior\.beta: Input should be greater than or equal to 0\.01",
    ),
    "unknown top-level key": (set_field("output_sinks", "csv"), r"output_sinks: unknown key"),
    "unknown nested key": (
        set_field("tests.0.variants.0.weight", 0.5),
        r"tests\[0\]\.variants\[0\]\.weight: unknown key",
    ),
    "window start off the grid": (
        set_field("partitions.start", "2026-11-01T00:30:00Z"),
        r"partitions: start 2026-11-01T00:30:00\+00:00 is not on a 1h window boundary",
    ),
    "zero batch": (
        set_field("ingestion.max_batch_messages", 0),
        r"ingestion\.max_batch_messages: Input should be greater than or equal to 1",
    ),
    "bad schedule": (
        set_field("statistics.schedule", "every five minutes"),
        r"statistics\.schedule: expected a 5-field cron expression",
    ),
    "same exposure and success event": (
        set_field("tests.0.success_event", "ButtonDisplayed"),
        r"tests\[0\]: exposure_event and success_event must differ",
    ),
    "bad bootstrap servers": (
        set_field("infrastructure.kafka.bootstrap_servers", "localhost"),
        r"infrastructure\.kafka\.bootstrap_servers: expected host:port",
    ),
    "bad dynamodb endpoint": (
        set_field("infrastructure.dynamodb.endpoint_url", "127.0.0.1:8000"),
        r"infrastructure\.dynamodb\.endpoint_url: expected http\(s\)://host\[:port\]",
    ),
    "zero topic partitions": (
        set_field("infrastructure.kafka.topic_partitions", 0),
        r"infrastructure\.kafka\.topic_partitions: Input should be greater than or equal to 1",
    ),
    "wrong type": (
        set_field("tests.0.minimum_sample", "lots"),
        r"tests\[0\]\.minimum_sample: Input should be a valid integer",
    ),
    "prior below 0.01": (
        set_field("tests.0.prior.alpha", 0.001),
        r"tests\[0\]\.prior\.alpha: Input should be greater than or equal to 0\.01",
    ),
    "alpha of 1": (
        set_field("tests.0.alpha", 1),
        r"tests\[0\]\.alpha: Input should be less than 1",
    ),
    "negative rope": (
        set_field("tests.0.rope", -0.01),
        r"tests\[0\]\.rope: Input should be greater than 0",
    ),
    "expected lift of zero": (
        set_field("tests.0.expected_lift", 0),
        r"tests\[0\]\.expected_lift: Input should be greater than 0",
    ),
    "two primary metrics": (
        set_field(
            "tests.0.metrics",
            [
                {"name": "ctr", "type": "binary", "role": "primary", "event": "ButtonClicked"},
                {"name": "orders", "type": "count", "role": "primary", "event": "Purchase"},
            ],
        ),
        r"tests\[0\]\.metrics: need exactly one primary metric, got 2",
    ),
    "guardrail without margin": (
        set_field(
            "tests.0.metrics",
            [
                {"name": "ctr", "type": "binary", "role": "primary", "event": "ButtonClicked"},
                {"name": "revenue", "type": "revenue", "role": "guardrail", "event": "Purchase"},
            ],
        ),
        r"tests\[0\]\.metrics\[1\]: a guardrail needs margin",
    ),
    "unknown metric type": (
        set_field(
            "tests.0.metrics",
            [{"name": "ctr", "type": "median", "role": "primary", "event": "ButtonClicked"}],
        ),
        r"tests\[0\]\.metrics\[0\]\.type: Input should be 'binary', 'count', 'revenue'",
    ),
    "ratio of a metric the test lacks": (
        set_field(
            "tests.0.metrics",
            [
                {"name": "ctr", "type": "binary", "role": "primary", "event": "ButtonClicked"},
                {"name": "aov", "type": "ratio", "numerator": "revenue", "denominator": "ctr"},
            ],
        ),
        r"tests\[0\]\.metrics: ratio 'aov': 'revenue' is not a count or revenue metric",
    ),
    "metric without its event": (
        set_field("tests.0.metrics", [{"name": "orders", "type": "count", "role": "primary"}]),
        r"tests\[0\]\.metrics\[0\]: a count metric needs event",
    ),
    "metric of the exposure event": (
        set_field(
            "tests.0.metrics",
            [{"name": "views", "type": "count", "role": "primary", "event": "ButtonDisplayed"}],
        ),
        r"tests\[0\]: metric 'views' counts the exposure event 'ButtonDisplayed'",
    ),
    "another metric named conversion": (
        set_field(
            "tests.0.metrics",
            [{"name": "conversion", "type": "count", "role": "primary", "event": "Purchase"}],
        ),
        r"tests\[0\]: metric 'conversion': that name is the binary metric of success_event",
    ),
}
