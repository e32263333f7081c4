"""experiments.yaml: the shipped file loads; every bad case fails naming field and problem."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from diana_pipeline.config import ConfigError, load_config, parse_config, parse_duration
from diana_pipeline.harness.bad_configs import BAD_CASES, set_field, shipped_raw
from diana_pipeline.harness.paths import SHIPPED_CONFIG as SHIPPED


def parse_mutated(mutate: Any, env: dict[str, str] | None = None) -> Any:
    raw = copy.deepcopy(shipped_raw())
    mutate(raw)
    return parse_config(yaml.safe_dump(raw), source="experiments.yaml", env=env or {})


def test_shipped_file_loads_with_button_color_test() -> None:
    config = load_config(SHIPPED, env={})
    assert config.output_sink == "console"
    assert config.partitions.window == timedelta(hours=1)
    assert config.partitions.cron_schedule == "0 * * * *"
    kafka = config.infrastructure.kafka
    assert (kafka.bootstrap_servers, kafka.topic, kafka.topic_partitions) == (
        "127.0.0.1:9092",
        "web-events",
        3,
    )
    assert config.infrastructure.dynamodb.table == "ab_posteriors"
    [test] = config.tests
    assert test.test_id == "button-color-test"
    assert (test.prior.alpha, test.prior.beta) == (1.0, 1.0)
    assert (test.exposure_event, test.success_event) == ("ButtonDisplayed", "ButtonClicked")
    assert [(v.name, v.allocation) for v in test.variants] == [
        ("control", 0.5),
        ("treatment", 0.5),
    ]


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "experiments.yaml"
    target.parent.mkdir()
    target.write_text(SHIPPED.read_text())
    config = load_config(target, env={})
    assert config.infrastructure.duckdb.path == tmp_path / "sub" / ".diana" / "events.duckdb"
    assert config.infrastructure.csv.directory == tmp_path / "sub" / ".diana" / "output"


def test_environment_overrides_infrastructure_addresses() -> None:
    env = {
        "DIANA_KAFKA_BOOTSTRAP_SERVERS": "kafka:19092",
        "DIANA_DYNAMODB_ENDPOINT": "http://dynamodb:8000",
        "DIANA_OUTPUT_SINK": "dynamodb",
    }
    config = parse_config(SHIPPED.read_text(), env=env)
    assert config.infrastructure.kafka.bootstrap_servers == "kafka:19092"
    assert config.infrastructure.dynamodb.endpoint_url == "http://dynamodb:8000"
    assert config.output_sink == "dynamodb"


def test_env_reference_without_default_must_be_set() -> None:
    def use_unset_variable(raw: dict[str, Any]) -> None:
        raw["infrastructure"]["kafka"]["topic"] = "${DIANA_TOPIC}"

    with pytest.raises(
        ConfigError, match=r"infrastructure\.kafka\.topic: .*DIANA_TOPIC is not set"
    ):
        parse_mutated(use_unset_variable)
    assert (
        parse_mutated(use_unset_variable, env={"DIANA_TOPIC": "t"}).infrastructure.kafka.topic
        == "t"
    )


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_config_names_the_field(case: str) -> None:
    mutate, message = BAD_CASES[case]
    with pytest.raises(ConfigError, match=r"^experiments\.yaml: .*" + message):
        parse_mutated(mutate)


def test_every_problem_is_reported_at_once() -> None:
    def two_problems(raw: dict[str, Any]) -> None:
        raw["output_sink"] = "s3"
        raw["tests"][0]["prior"]["alpha"] = -2

    with pytest.raises(ConfigError) as error:
        parse_mutated(two_problems)
    assert "output_sink" in str(error.value)
    assert "tests[0].prior.alpha" in str(error.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"the file is empty"),
        ("tests: [unclosed", r"not valid YAML"),
        ("- a list", r"expected a mapping at the top level"),
    ],
)
def test_unreadable_files(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(text, env={})


def test_missing_file_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the experiments file .*nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("1h30m", timedelta(minutes=90)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        (3600, timedelta(hours=1)),
    ],
)
def test_durations(text: str | int, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("window", "cron"),
    [("15m", "*/15 * * * *"), ("1m", "* * * * *"), ("6h", "0 */6 * * *"), ("1d", "0 0 * * *")],
)
def test_window_cron_schedules(window: str, cron: str) -> None:
    config = parse_mutated(set_field("partitions.window", window))
    assert config.partitions.cron_schedule == cron


def test_window_start_of_a_moment() -> None:
    from datetime import UTC, datetime

    config = parse_mutated(set_field("partitions.window", "15m"))
    moment = datetime(2026, 11, 21, 10, 44, 59, 999000, tzinfo=UTC)
    assert config.partitions.window_start(moment) == datetime(2026, 11, 21, 10, 30, tzinfo=UTC)


def test_a_test_without_metrics_judges_its_conversion() -> None:
    [test] = load_config(SHIPPED, env={}).tests
    [metric] = test.metrics_in_effect
    assert (metric.name, metric.type, metric.role, metric.event) == (
        "conversion",
        "binary",
        "primary",
        "ButtonClicked",
    )
    assert metric.direction == "increase" and metric.margin is None


def test_metrics_of_every_type_and_role_load() -> None:
    metrics = [
        {"name": "ctr", "type": "binary", "role": "primary", "event": "ButtonClicked"},
        {
            "name": "revenue",
            "type": "revenue",
            "role": "guardrail",
            "event": "Purchase",
            "margin": 0.01,
            "winsorize": 0.99,
        },
        {
            "name": "errors",
            "type": "count",
            "role": "guardrail",
            "direction": "decrease",
            "event": "PageError",
            "margin": 0.05,
        },
        {"name": "orders", "type": "count", "event": "Purchase"},
        {"name": "aov", "type": "ratio", "numerator": "revenue", "denominator": "orders"},
    ]
    [test] = parse_mutated(set_field("tests.0.metrics", metrics)).tests
    assert [(m.name, m.type, m.role) for m in test.metrics_in_effect] == [
        ("ctr", "binary", "primary"),
        ("revenue", "revenue", "guardrail"),
        ("errors", "count", "guardrail"),
        ("orders", "count", "secondary"),
        ("aov", "ratio", "secondary"),
    ]
    revenue, errors = test.metrics[1], test.metrics[2]
    assert (revenue.margin, revenue.winsorize) == (0.01, 0.99)
    assert (errors.direction, errors.margin) == ("decrease", 0.05)


def test_loading_metrics_warns_of_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="diana_pipeline.config"):
        revenue = {"name": "revenue", "type": "revenue", "event": "Purchase", "winsorize": 0.99}
        ctr = {"name": "ctr", "type": "binary", "role": "primary", "event": "ButtonClicked"}
        parse_mutated(set_field("tests.0.metrics", [ctr, revenue]))
    assert not caplog.records
