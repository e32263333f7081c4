"""experiments.yaml: the shipped file loads; every bad case fails naming field and problem."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from diana_pipeline.config import ConfigError, load_config, parse_config, parse_duration
from diana_pipeline_tests.conftest import REPO_ROOT

SHIPPED = REPO_ROOT / "experiments.yaml"


def shipped_raw() -> dict[str, Any]:
    return yaml.safe_load(SHIPPED.read_text())


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


def _set(path: str, value: Any):
    """A mutation that sets a dotted path (integers index lists)."""

    def mutate(raw: dict[str, Any]) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node = raw
        for part in parents:
            node = node[part]
        node[last] = value

    return mutate


def _delete(path: str):
    def mutate(raw: dict[str, Any]) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node = raw
        for part in parents:
            node = node[part]
        del node[last]

    return mutate


def _duplicate_test(raw: dict[str, Any]) -> None:
    raw["tests"].append(copy.deepcopy(raw["tests"][0]))


BAD_CASES = {
    "unknown sink": (
        _set("output_sink", "kafka"),
        r"output_sink: Input should be 'console', 'csv' or 'dynamodb', got 'kafka'",
    ),
    "allocations not summing to 1": (
        _set("tests.0.variants.1.allocation", 0.4),
        r"tests\[0\]\.variants: allocations must sum to 1, got 0\.9",
    ),
    "allocation above 1": (
        _set("tests.0.variants.0.allocation", 1.5),
        r"tests\[0\]\.variants\[0\]\.allocation: Input should be less than or equal to 1",
    ),
    "duplicate variant": (
        _set("tests.0.variants.1.name", "control"),
        r"tests\[0\]\.variants: duplicate variant name 'control'",
    ),
    "duplicate test id": (_duplicate_test, r"tests: duplicate test_id 'button-color-test'"),
    "no tests": (_set("tests", []), r"tests: List should have at least 1 item"),
    "tests missing": (_delete("tests"), r"tests: Field required"),
    "one variant": (
        _set("tests.0.variants", [{"name": "control", "allocation": 1.0}]),
        r"tests\[0\]\.variants: List should have at least 2 items",
    ),
    "bad conversion window": (
        _set("tests.0.conversion_window", "a day"),
        r"tests\[0\]\.conversion_window: must be a duration such as 30m, 1h or 7d, got 'a day'",
    ),
    "negative conversion window": (
        _set("tests.0.conversion_window", -5),
        r"tests\[0\]\.conversion_window: must be a positive duration",
    ),
    "window not splitting a day": (
        _set("partitions.window", "7m"),
        r"partitions\.window: must split an hour or a day into equal windows .* got 7m",
    ),
    "negative prior": (
        _set("tests.0.prior.alpha", -1),
        r"tests\[0\]\.prior\.alpha: Input should be greater than 0",
    ),
    "zero prior": (
        _set("tests.0.prior.beta", 0),
        r"tests\[0\]\.prior\.beta: Input should be greater than 0",
    ),
    "unknown top-level key": (_set("output_sinks", "csv"), r"output_sinks: unknown key"),
    "unknown nested key": (
        _set("tests.0.variants.0.weight", 0.5),
        r"tests\[0\]\.variants\[0\]\.weight: unknown key",
    ),
    "window start off the grid": (
        _set("partitions.start", "2026-11-01T00:30:00Z"),
        r"partitions: start 2026-11-01T00:30:00\+00:00 is not on a 1h window boundary",
    ),
    "zero batch": (
        _set("ingestion.max_batch_messages", 0),
        r"ingestion\.max_batch_messages: Input should be greater than or equal to 1",
    ),
    "bad schedule": (
        _set("statistics.schedule", "every five minutes"),
        r"statistics\.schedule: expected a 5-field cron expression",
    ),
    "same exposure and success event": (
        _set("tests.0.success_event", "ButtonDisplayed"),
        r"tests\[0\]: exposure_event and success_event must differ",
    ),
    "bad bootstrap servers": (
        _set("infrastructure.kafka.bootstrap_servers", "localhost"),
        r"infrastructure\.kafka\.bootstrap_servers: expected host:port",
    ),
    "bad dynamodb endpoint": (
        _set("infrastructure.dynamodb.endpoint_url", "127.0.0.1:8000"),
        r"infrastructure\.dynamodb\.endpoint_url: expected http\(s\)://host\[:port\]",
    ),
    "zero topic partitions": (
        _set("infrastructure.kafka.topic_partitions", 0),
        r"infrastructure\.kafka\.topic_partitions: Input should be greater than or equal to 1",
    ),
    "wrong type": (
        _set("tests.0.minimum_sample", "lots"),
        r"tests\[0\]\.minimum_sample: Input should be a valid integer",
    ),
}


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
    config = parse_mutated(_set("partitions.window", window))
    assert config.partitions.cron_schedule == cron


def test_window_start_of_a_moment() -> None:
    from datetime import UTC, datetime

    config = parse_mutated(_set("partitions.window", "15m"))
    moment = datetime(2026, 11, 21, 10, 44, 59, 999000, tzinfo=UTC)
    assert config.partitions.window_start(moment) == datetime(2026, 11, 21, 10, 30, tzinfo=UTC)
