"""The `experiments.yaml` model: infrastructure, output sink, time windows and tests.

Loading validates everything up front, so the pipeline never starts half-configured:
a bad file raises `ConfigError` naming the field and the problem, e.g.
``experiments.yaml: tests[0].variants: allocations must sum to 1, got 0.9``.

String values may refer to environment variables as ``${NAME}`` or ``${NAME:-default}``
so that one file serves the local stack and docker compose.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from diana_pipeline.lake import DuckLakeSettings, StoreLocation, is_url, names_password
from diana_pipeline.windows import WindowGrid, aware_utc

CONFIG_ENV_VAR = "DIANA_CONFIG"
DEFAULT_CONFIG_FILE = "experiments.yaml"
log = logging.getLogger(__name__)

OutputSink = Literal["console", "csv", "dynamodb"]
OUTPUT_SINKS: tuple[str, ...] = ("console", "csv", "dynamodb")

_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_DURATION_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Allocations are written by people as decimals (0.34, 0.33, 0.33); allow rounding slack.
_ALLOCATION_TOLERANCE = 1e-6


class ConfigError(ValueError):
    """`experiments.yaml` is missing or invalid; the message names the field."""


def parse_duration(value: Any) -> timedelta:
    """Parse '30s', '15m', '1h', '7d', '1h30m' (or a number of seconds) into a timedelta."""
    if isinstance(value, timedelta):
        duration = value
    elif isinstance(value, bool):
        raise ValueError(f"must be a duration such as 30m, 1h or 7d, got {value!r}")
    elif isinstance(value, (int, float)):
        duration = timedelta(seconds=value)
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if "".join(number + unit for number, unit in parts) != text:
            raise ValueError(f"must be a duration such as 30m, 1h or 7d, got {value!r}")
        duration = sum((int(n) * _DURATION_UNITS[u] for n, u in parts), timedelta())
    else:
        raise ValueError(f"must be a duration such as 30m, 1h or 7d, got {value!r}")
    if duration <= timedelta(0):
        raise ValueError(f"must be a positive duration, got {value!r}")
    return duration


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _cron(value: str) -> str:
    if len(value.split()) != 5 or not re.fullmatch(r"[\d*/,\- ]+", value):
        raise ValueError(f"expected a 5-field cron expression such as */5 * * * *, got {value!r}")
    return value


Cron = Annotated[str, AfterValidator(_cron)]


class _Strict(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Strict):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = Field("web-events", min_length=1)
    consumer_group: str = Field("diana-ingestion", min_length=1)
    topic_partitions: int = Field(3, ge=1, le=1000)

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value


class DuckDBSettings(_Strict):
    path: Path = Path(".diana/events.duckdb")


class DynamoDBSettings(_Strict):
    endpoint_url: str | None = "http://127.0.0.1:8000"
    region: str = Field("us-east-1", min_length=1)
    table: str = Field("ab_posteriors", pattern=r"^[A-Za-z0-9_.-]{3,255}$")
    # A bandit's published allocations (docs/bandit.md), when the sink is DynamoDB.
    allocation_table: str = Field("ab_allocations", pattern=r"^[A-Za-z0-9_.-]{3,255}$")

    @field_validator("endpoint_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        # Empty means "the real AWS endpoint for the region".
        if value in (None, ""):
            return None
        if not re.match(r"^https?://[^/:]+(:\d+)?/?$", value):
            raise ValueError(f"expected http(s)://host[:port], got {value!r}")
        return value.rstrip("/")


class DuckLakeConfig(_Strict):
    """The shared event store (docs/scale.md): a libpq connection string for its catalog
    (the password comes from $DIANA_POSTGRES_PASSWORD, never from this file) and where its
    Parquet files go (a folder, relative to this file, or an s3:// URL)."""

    catalog: str = Field("host=127.0.0.1 port=5432 dbname=diana user=diana", min_length=1)
    data_path: str = Field(".diana/lake", min_length=1)
    # lake_maintenance_job: on this cron, small files are merged, snapshots older than
    # keep_snapshots forgotten (the time travel left) and the files no snapshot reads deleted.
    maintenance_schedule: Cron = "0 * * * *"
    keep_snapshots: Duration = timedelta(days=1)

    @field_validator("catalog")
    @classmethod
    def _no_password(cls, catalog: str) -> str:
        if names_password(catalog):
            raise ValueError("keep the password out of the file: set DIANA_POSTGRES_PASSWORD")
        return catalog


class CsvSettings(_Strict):
    directory: Path = Path(".diana/output")


class Infrastructure(_Strict):
    kafka: KafkaSettings = KafkaSettings()
    # duckdb: one file, one writer at a time; ducklake: tables shared through PostgreSQL
    event_store: Literal["duckdb", "ducklake"] = "duckdb"
    duckdb: DuckDBSettings = DuckDBSettings()
    ducklake: DuckLakeConfig = DuckLakeConfig()
    dynamodb: DynamoDBSettings = DynamoDBSettings()
    csv: CsvSettings = CsvSettings()

    @property
    def store_location(self) -> StoreLocation:
        """Where EventStore.open finds the store."""
        if self.event_store == "ducklake":
            return DuckLakeSettings(self.ducklake.catalog, self.ducklake.data_path)
        return self.duckdb.path


class Partitions(_Strict):
    """Event-time windows: the partitions of every Dagster asset."""

    window: Duration = timedelta(hours=1)
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)

    @field_validator("window")
    @classmethod
    def _divides_a_day(cls, window: timedelta) -> timedelta:
        seconds = int(window.total_seconds())
        minute_ok = seconds % 60 == 0 and seconds < 3600 and 3600 % seconds == 0
        hour_ok = seconds % 3600 == 0 and seconds <= 86400 and 86400 % seconds == 0
        if not (minute_ok or hour_ok):
            raise ValueError(
                "must split an hour or a day into equal windows "
                f"(e.g. 5m, 15m, 30m, 1h, 2h, 6h, 1d), got {_format_duration(window)}"
            )
        return window

    @field_validator("start")
    @classmethod
    def _utc(cls, start: datetime) -> datetime:
        return aware_utc(start)

    @model_validator(mode="after")
    def _start_on_a_boundary(self) -> Partitions:
        # Windows follow the cron grid (whole hours, midnights): the first must start on it.
        midnight = self.start.replace(hour=0, minute=0, second=0, microsecond=0)
        offset = (self.start - midnight).total_seconds()
        if offset % self.window.total_seconds():
            raise ValueError(
                f"start {self.start.isoformat()} is not on a {_format_duration(self.window)} "
                "window boundary"
            )
        return self

    @property
    def grid(self) -> WindowGrid:
        return WindowGrid.of(self.start, self.window)

    def window_start(self, moment: datetime) -> datetime:
        """The start of the window that holds `moment`, as aware UTC like `start` (naive
        datetimes are UTC)."""
        return aware_utc(self.grid.window_start(moment))

    @property
    def cron_schedule(self) -> str:
        """The cron expression whose ticks are the window boundaries."""
        seconds = int(self.window.total_seconds())
        if seconds < 3600:
            return f"*/{seconds // 60} * * * *" if seconds > 60 else "* * * * *"
        if seconds < 86400:
            return f"0 */{seconds // 3600} * * *" if seconds > 3600 else "0 * * * *"
        return "0 0 * * *"


class Ingestion(_Strict):
    """How the Kafka sensor drains the topic into DuckDB."""

    sensor_interval: Duration = timedelta(seconds=5)
    # Messages per ingestion run (a micro-batch); more make several runs.
    max_batch_messages: int = Field(200_000, ge=1)
    # A message larger than this is rejected as oversized.
    max_event_bytes: int = Field(16_384, ge=256)
    # Event timestamps later than now + this are rejected as out of range.
    max_clock_skew: Duration = timedelta(hours=1)
    # Rebuilding a window from Kafka also reads messages produced this long after it ended.
    max_lateness: Duration = timedelta(hours=1)
    # Ingestion runs at once, each on its own group of partitions (partition % parallel_runs):
    # more than one needs the DuckLake store (docs/scale.md, Parallel ingestion).
    parallel_runs: int = Field(1, ge=1, le=64)


class Statistics(_Strict):
    """How the statistics assets refresh and decide."""

    # The current window's statistics are rematerialised on this cron even with no events.
    schedule: Cron = "*/5 * * * *"
    # Every variant keeps at least this share of traffic in the bandit's allocation.
    thompson_floor: float = Field(0.01, ge=0, lt=0.5, allow_inf_nan=False)


class Prior(_Strict):
    # The statistics are exact (to 1e-6) from 0.01 up; smaller priors are refused there too.
    alpha: float = Field(1.0, ge=0.01, allow_inf_nan=False)
    beta: float = Field(1.0, ge=0.01, allow_inf_nan=False)


class Variant(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    allocation: float = Field(ge=0, le=1, allow_inf_nan=False)


# How a metric sums a user's events (docs/metrics.md):
#   binary   did `event` at least once from exposure within the conversion window (Beta)
#   count    how many `event`s (Gamma-Poisson)
#   revenue  the sum of their `value`s, 0 without any (normal approximation); `mean` is
#            the same metric under its other name
#   ratio    sum of one metric over sum of another, per variant (delta method)
DEFAULT_METRIC = "conversion"  # a test's conversion, unless its metrics name it otherwise
ALL_SEGMENTS = "all"  # the dimension and segment of the overall rows
MetricType = Literal["binary", "count", "revenue", "mean", "ratio"]
SUMMED = ("count", "revenue", "mean")  # the metrics a ratio may divide


class Metric(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    type: MetricType
    # primary: decides (exactly one per test); guardrail: may block a winner; secondary:
    # shown, never decides.
    role: Literal["primary", "guardrail", "secondary"] = "secondary"
    direction: Literal["increase", "decrease"] = "increase"  # which way is good
    event: str | None = Field(None, min_length=1)  # binary, count, revenue
    numerator: str | None = Field(None, min_length=1)  # ratio: names of count or revenue
    denominator: str | None = Field(None, min_length=1)  # metrics of the same test
    # Guardrails: how much worse (relative) the variant may be before it blocks a winner.
    margin: float | None = Field(None, gt=0, lt=1, allow_inf_nan=False)
    # Revenue: each user's total capped at this quantile of all counted users' (outliers;
    # counting/winsorize.py).
    winsorize: float | None = Field(None, gt=0.5, lt=1, allow_inf_nan=False)

    @model_validator(mode="after")
    def _fields_of_its_type(self) -> Metric:
        if self.type == "ratio":
            if self.event is not None:
                raise ValueError("a ratio metric takes numerator and denominator, not event")
            if self.numerator is None or self.denominator is None:
                raise ValueError("a ratio metric needs numerator and denominator (metric names)")
            if self.numerator == self.denominator:
                raise ValueError(f"numerator and denominator are both {self.numerator!r}")
        else:
            if self.event is None:
                raise ValueError(f"a {self.type} metric needs event (the event it counts)")
            if self.numerator is not None or self.denominator is not None:
                raise ValueError("only a ratio metric takes numerator and denominator")
        if self.role == "guardrail" and self.margin is None:
            raise ValueError("a guardrail needs margin (e.g. 0.01: 1% worse blocks a winner)")
        if self.role != "guardrail" and self.margin is not None:
            raise ValueError(f"margin applies to guardrails only, not to a {self.role} metric")
        if self.winsorize is not None and self.type not in ("revenue", "mean"):
            raise ValueError(f"winsorize applies to revenue metrics only, not to {self.type}")
        return self


class Bandit(_Strict):
    """How a test in bandit mode moves its traffic (docs/bandit.md)."""

    # The configured allocation holds until every variant has this many exposed users.
    burn_in_users: int = Field(100, ge=0)
    # Least traffic share per variant once the weights move (at most 1/K).
    floor: float = Field(0.01, ge=0, lt=0.5, allow_inf_nan=False)
    # Top-two Thompson sampling: the leader half the time, else the best of the others.
    top_two: bool = True
    # When new weights take effect: at each window's start, or after every ingestion run.
    update: Literal["window", "run"] = "window"


class ExperimentTest(_Strict):
    test_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    prior: Prior = Prior()
    exposure_event: str = Field("ButtonDisplayed", min_length=1)
    success_event: str = Field("ButtonClicked", min_length=1)
    conversion_window: Duration = timedelta(hours=24)
    # Expected loss (in absolute conversion rate) small enough that a wrong pick doesn't matter.
    threshold_of_caring: float = Field(0.001, gt=0, lt=1, allow_inf_nan=False)
    # Exposures each variant needs before any decision is shown.
    minimum_sample: int = Field(100, ge=1)
    # The anytime-valid test (docs/statistics.md): a winner must also reject every other arm
    # at `alpha` (Bonferroni over the K − 1 comparisons it wins); "no meaningful difference"
    # when every lift's confidence sequence lies inside ±rope (relative).
    alpha: float = Field(0.05, gt=0, lt=1, allow_inf_nan=False)
    rope: float = Field(0.01, gt=0, lt=1, allow_inf_nan=False)
    # The relative lift the test is powered for: it tunes the test's mixture.
    expected_lift: float = Field(0.05, gt=0, le=5, allow_inf_nan=False)
    variants: list[Variant] = Field(min_length=2)
    # Empty: one primary binary metric, `conversion`, of success_event (today's files).
    metrics: list[Metric] = []
    # Segment breakdowns (docs/segments.md): event properties whose value on a user's first
    # exposure puts them in a segment; at most max_segments values each, the rest (other).
    dimensions: list[Annotated[str, Field(pattern=r"^[a-z0-9_]{1,64}$")]] = []
    max_segments: int = Field(20, ge=1, le=1000)
    # ab: the configured allocation throughout; bandit: the allocation asset's weights after
    # burn-in (docs/bandit.md), with the `bandit` settings.
    mode: Literal["ab", "bandit"] = "ab"
    bandit: Bandit = Bandit()

    @field_validator("variants")
    @classmethod
    def _variants(cls, variants: list[Variant]) -> list[Variant]:
        _reject_duplicates([v.name for v in variants], "variant name")
        total = sum(v.allocation for v in variants)
        if abs(total - 1.0) > _ALLOCATION_TOLERANCE:
            raise ValueError(f"allocations must sum to 1, got {total:g}")
        return variants

    @model_validator(mode="after")
    def _bandit_settings(self) -> ExperimentTest:
        if "bandit" in self.model_fields_set and self.mode != "bandit":
            raise ValueError("bandit settings are given but mode is 'ab'; set mode: bandit")
        if self.bandit.floor > 1.0 / len(self.variants):
            raise ValueError(
                f"bandit.floor must be at most 1/K = {1.0 / len(self.variants):.4g} for "
                f"{len(self.variants)} variants, got {self.bandit.floor:g}"
            )
        return self

    @model_validator(mode="after")
    def _distinct_events(self) -> ExperimentTest:
        if self.exposure_event == self.success_event:
            raise ValueError(
                f"exposure_event and success_event must differ, both are {self.exposure_event!r}"
            )
        return self

    @field_validator("dimensions")
    @classmethod
    def _dimensions(cls, dimensions: list[str]) -> list[str]:
        _reject_duplicates(dimensions, "dimension")
        if ALL_SEGMENTS in dimensions:
            raise ValueError(f"{ALL_SEGMENTS!r} names the overall rows; choose another dimension")
        return dimensions

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, metrics: list[Metric]) -> list[Metric]:
        if not metrics:
            return metrics
        _reject_duplicates([m.name for m in metrics], "metric name")
        primaries = [m.name for m in metrics if m.role == "primary"]
        if len(primaries) != 1:
            raise ValueError(f"need exactly one primary metric, got {len(primaries)}")
        types = {m.name: m.type for m in metrics}
        for metric in metrics:
            for part in (metric.numerator, metric.denominator):
                if part is not None and types.get(part) not in SUMMED:
                    raise ValueError(
                        f"ratio {metric.name!r}: {part!r} is not a count or revenue metric "
                        "of this test"
                    )
        return metrics

    @model_validator(mode="after")
    def _metrics_apart_from_exposure(self) -> ExperimentTest:
        for metric in self.metrics:
            if metric.event == self.exposure_event:
                raise ValueError(
                    f"metric {metric.name!r} counts the exposure event {metric.event!r}"
                )
        return self

    @model_validator(mode="after")
    def _conversion_named_once(self) -> ExperimentTest:
        conversion = self.conversion_metric
        for metric in self.metrics:
            if metric.name == conversion.name and metric is not conversion:
                raise ValueError(
                    f"metric {metric.name!r}: that name is the binary metric of success_event "
                    f"{self.success_event!r}, which every test reports; choose another"
                )
        return self

    @property
    def metrics_in_effect(self) -> list[Metric]:
        """The test's metrics; without `metrics:`, the primary binary `conversion`."""
        return self.metrics or [self.conversion_metric]

    @property
    def conversion_metric(self) -> Metric:
        """The binary metric of success_event, which every test reports (the Beta posterior,
        the bandit's allocation and the quality checks read it): the one listed, or
        `conversion` (primary without `metrics:`, secondary beside them)."""
        for metric in self.metrics:
            if metric.type == "binary" and metric.event == self.success_event:
                return metric
        role = "secondary" if self.metrics else "primary"
        return Metric(name=DEFAULT_METRIC, type="binary", role=role, event=self.success_event)

    @property
    def reported_metrics(self) -> list[Metric]:
        """Every metric a record is written for: the conversion first, then the others."""
        return [self.conversion_metric, *self.other_metrics]

    @property
    def other_metrics(self) -> list[Metric]:
        """The metrics counted from their sums (counting/metric_sums.py)."""
        conversion = self.conversion_metric
        return [metric for metric in self.metrics if metric is not conversion]

    @property
    def variant_names(self) -> list[str]:
        return [v.name for v in self.variants]

    @property
    def allocation(self) -> list[float]:
        return [v.allocation for v in self.variants]


class ExperimentsConfig(_Strict):
    infrastructure: Infrastructure = Infrastructure()
    output_sink: OutputSink = "console"
    # Also publish every posterior record to this Kafka topic; None (or empty): don't.
    output_topic: str | None = None
    # One JSON record per ingestion run and statistics refresh (docs/outputs.md); None (or
    # empty): none. The original design named it metrics_out.
    metrics_topic: str | None = None
    # Where bandit tests' allocations are published (compacted, key test_id; docs/bandit.md).
    allocation_topic: str = "allocations_out"
    partitions: Partitions = Partitions()
    ingestion: Ingestion = Ingestion()
    statistics: Statistics = Statistics()
    tests: list[ExperimentTest] = Field(min_length=1)

    @field_validator("output_topic", "metrics_topic", "allocation_topic")
    @classmethod
    def _topic_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value in (None, "") and info.field_name != "allocation_topic":
            return None
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", value):
            raise ValueError(f"a Kafka topic name (letters, digits, '.', '_', '-'), got {value!r}")
        return value

    @model_validator(mode="after")
    def _parallel_runs_need_ducklake(self) -> ExperimentsConfig:
        if self.ingestion.parallel_runs > 1 and self.infrastructure.event_store != "ducklake":
            raise ValueError(
                f"ingestion.parallel_runs: {self.ingestion.parallel_runs} runs at once need "
                "infrastructure.event_store: ducklake (the DuckDB file has one writer at a time)"
            )
        return self

    @field_validator("tests")
    @classmethod
    def _unique_tests(cls, tests: list[ExperimentTest]) -> list[ExperimentTest]:
        _reject_duplicates([t.test_id for t in tests], "test_id")
        return tests

    def test(self, test_id: str) -> ExperimentTest:
        for candidate in self.tests:
            if candidate.test_id == test_id:
                return candidate
        raise KeyError(test_id)


def _reject_duplicates(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"duplicate {what} {name!r}")
        seen.add(name)


def _format_duration(duration: timedelta) -> str:
    seconds = int(duration.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _format_location(location: tuple[str | int, ...]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _describe(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind in ("literal_error", "enum"):
        return f"{message}, got {error['input']!r}"
    return message


def _interpolate_env(node: Any, location: tuple[str | int, ...], env: dict[str, str]) -> Any:
    """Replace ${NAME} and ${NAME:-default} in every string value."""
    if isinstance(node, dict):
        return {k: _interpolate_env(v, (*location, k), env) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate_env(v, (*location, i), env) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{_format_location(location)}: environment variable {name} is not set "
            "and has no default (write ${" + name + ":-value})"
        )

    return _ENV_REFERENCE.sub(substitute, node)


def parse_config(
    text: str, source: str = DEFAULT_CONFIG_FILE, env: dict[str, str] | None = None
) -> ExperimentsConfig:
    """Validate the YAML text of an experiments file; relative paths stay relative."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if raw is None:
        raise ConfigError(f"{source}: the file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    raw = _interpolate_env(raw, (), dict(os.environ) if env is None else env)
    try:
        return ExperimentsConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{_format_location(e['loc'])}: {_describe(e)}" for e in exc.errors()]
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


def _beside(base: Path, location: str) -> str:
    """A local path relative to the experiments file; a URL as it is."""
    if is_url(location):
        return location
    return str(base / location)


def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The experiments file to use: the argument, else $DIANA_CONFIG, else ./experiments.yaml."""
    return Path(path or os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_FILE).resolve()


def load_config(
    path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None
) -> ExperimentsConfig:
    """Load and validate the experiments file; relative paths resolve against its folder."""
    resolved = config_path(path)
    try:
        text = resolved.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the experiments file {resolved}: {exc.strerror or exc} "
            f"(pass --config or set {CONFIG_ENV_VAR})"
        ) from None
    config = parse_config(text, source=str(resolved), env=env)
    base = resolved.parent
    infrastructure = config.infrastructure
    return config.model_copy(
        update={
            "infrastructure": infrastructure.model_copy(
                update={
                    "duckdb": DuckDBSettings(path=base / infrastructure.duckdb.path),
                    "ducklake": infrastructure.ducklake.model_copy(
                        update={"data_path": _beside(base, infrastructure.ducklake.data_path)}
                    ),
                    "csv": CsvSettings(directory=base / infrastructure.csv.directory),
                }
            )
        }
    )
