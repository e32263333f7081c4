"""Jobs. `traffic_job` sends synthetic web events to Kafka:

    dagster job execute -m diana_pipeline.definitions -j traffic_job \\
        -c examples/traffic_job.yaml

`ingest_job` is what the Kafka sensor launches: one run stores a micro-batch of offsets and
refreshes the statistics and the sink of its windows (one run start per batch, not two).
"""

import time

from dagster import (
    AssetSelection,
    Config,
    DefaultScheduleStatus,
    Failure,
    JobDefinition,
    MetadataValue,
    OpExecutionContext,
    Output,
    ScheduleDefinition,
    define_asset_job,
    job,
    op,
)
from pydantic import Field

from diana_pipeline import lake
from diana_pipeline.assets.ingestion import EVENTS
from diana_pipeline.assets.outputs import PUBLISHED, PUBLISHED_ALLOCATION
from diana_pipeline.assets.statistics import STATISTICS
from diana_pipeline.config import ConfigError, ExperimentsConfig
from diana_pipeline.producer import ProducerError
from diana_pipeline.resources import EventStoreResource, ExperimentsResource, KafkaResource
from diana_pipeline.traffic import (
    ExtraEvent,
    NoiseRates,
    PropertySpec,
    TrafficError,
    TrafficRun,
    TrafficSummary,
    build_spec,
)

PROGRESS_LOG_INTERVAL_S = 5.0


class NoiseConfig(Config):
    """Faults to exercise the pipeline's defences; probabilities per visit (per event for
    duplicates)."""

    duplicate_rate: float = Field(0.0, description="events delivered twice (same event_id)")
    orphan_click_rate: float = Field(0.0, description="clicks from users never exposed")
    malformed_rate: float = Field(0.0, description="extra messages that are not valid events")
    cross_variant_rate: float = Field(0.0, description="returning users exposed in another variant")


class TrafficConfig(Config):
    events_per_second: float | None = Field(50.0, description="target rate; null = unthrottled")
    duration_seconds: float | None = Field(
        120.0, description="stop after this long (null: no limit)"
    )
    count: int | None = Field(None, description="stop after this many messages")
    success_probabilities: dict[str, float] = Field(
        default_factory=lambda: {"control": 0.35, "treatment": 0.55},
        description="success probability per variant name",
    )
    tests: list[str] | None = Field(None, description="test ids; null = every test")
    users: int | None = Field(None, description="distinct users; null = a new user per visit")
    repeat_visit_rate: float = Field(0.0, description="share of visits by returning users")
    seed: int | None = Field(None, description="random seed: same seed, same users and outcomes")
    noise: NoiseConfig = Field(default_factory=NoiseConfig)
    extra_events: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="metrics beyond the conversion: event type -> variant -> probability "
        "per visit, e.g. {Purchase: {control: 0.10, treatment: 0.12}}",
    )
    properties: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="segment breakdowns: property -> value -> share of users, e.g. "
        "{device: {desktop: 0.5, mobile: 0.4, tablet: 0.1}}; every exposure carries them",
    )
    property_effects: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="property -> value -> factor on the success probability, e.g. "
        "{device: {mobile: 1.3}}",
    )
    follow_allocation: bool = Field(
        False,
        description="assign new users by the latest allocation published for bandit tests "
        "(docs/bandit.md), not the configured split; users keep their first variant",
    )
    event_values: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="event type -> variant -> mean of its value (lognormal), e.g. "
        "{Purchase: {control: 25, treatment: 27}}",
    )


@op(description="Send synthetic exposure and success events to the events topic.")
def send_traffic(
    context: OpExecutionContext,
    config: TrafficConfig,
    experiments: ExperimentsResource,
    kafka: KafkaResource,
) -> Output[dict]:
    try:
        settings = _sending_to(kafka, experiments.load())
        strays = sorted(set(config.event_values) - set(config.extra_events))
        if strays:
            raise TrafficError(f"event_values for {', '.join(strays)} without its extra_events")
        strays = sorted(set(config.property_effects) - set(config.properties))
        if strays:
            raise TrafficError(f"property_effects for {', '.join(strays)} without its properties")
        spec = build_spec(
            settings,
            config.success_probabilities,
            tests=config.tests,
            eps=config.events_per_second,
            duration_s=config.duration_seconds,
            count=config.count,
            users=config.users,
            repeat_rate=config.repeat_visit_rate,
            seed=config.seed,
            noise=NoiseRates(
                duplicate=config.noise.duplicate_rate,
                orphan_click=config.noise.orphan_click_rate,
                malformed=config.noise.malformed_rate,
                cross_variant=config.noise.cross_variant_rate,
            ),
            extra_events=tuple(
                ExtraEvent(event, rates, config.event_values.get(event))
                for event, rates in config.extra_events.items()
            ),
            properties=tuple(
                PropertySpec(name, weights, config.property_effects.get(name, {}))
                for name, weights in config.properties.items()
            ),
            follow_allocation=config.follow_allocation,
        )
    except (TrafficError, ConfigError) as exc:
        raise Failure(description=str(exc)) from None

    last_log = [time.monotonic()]

    def log_progress(summary: TrafficSummary) -> None:
        if time.monotonic() - last_log[0] >= PROGRESS_LOG_INTERVAL_S:
            last_log[0] = time.monotonic()
            context.log.info(
                f"sent {summary.sent:,} messages in {summary.elapsed_s:.0f}s "
                f"({summary.rate:,.0f}/s), delivered {summary.deliveries.delivered:,}"
            )

    try:
        summary = TrafficRun(settings, spec, on_progress=log_progress).run()
    except ProducerError as exc:
        raise Failure(description=str(exc)) from None
    metadata = {
        "sent": summary.sent,
        "delivered": summary.deliveries.delivered,
        "failed": summary.deliveries.failures,
        "events_per_second": round(summary.rate, 1),
        "elapsed_seconds": round(summary.elapsed_s, 2),
        "summary": MetadataValue.md(summary.table()),
        "details": MetadataValue.json(summary.as_dict()),
    }
    context.log.info(f"done: {summary.sent:,} messages, {summary.rate:,.0f}/s\n{summary.table()}")
    if summary.deliveries.failures:
        raise Failure(
            description=f"{summary.deliveries.failures:,} of {summary.sent:,} messages were not "
            f"delivered: {dict(summary.deliveries.failed)}",
            metadata=metadata,
        )
    return Output(summary.as_dict(), metadata=metadata)


def _sending_to(kafka: KafkaResource, settings: ExperimentsConfig) -> ExperimentsConfig:
    """`settings` with the kafka resource's brokers and topic, which TrafficRun sends to."""
    infrastructure = settings.infrastructure.model_copy(update={"kafka": kafka.settings()})
    return settings.model_copy(update={"infrastructure": infrastructure})


@job(description="Synthetic traffic into Kafka, for demos and pipeline tests.")
def traffic_job() -> None:
    send_traffic()


INGEST_JOB = "ingest_job"
ingest_job = define_asset_job(
    INGEST_JOB,
    selection=AssetSelection.assets(EVENTS, *STATISTICS, PUBLISHED, PUBLISHED_ALLOCATION),
    description="Ingest the Kafka offset ranges of the run's config into DuckDB, then refresh "
    "the statistics and the sink of the run's windows (launched by kafka_events_sensor).",
)


@op(description="Merge the DuckLake store's small files, expire old snapshots, delete the "
    "files no snapshot reads (docs/scale.md).")  # fmt: skip
def maintain_lake(
    context: OpExecutionContext, experiments: ExperimentsResource, event_store: EventStoreResource
) -> Output[dict]:
    keep = experiments.load().infrastructure.ducklake.keep_snapshots
    with event_store.open() as store:
        figures = lake.maintain(store.connection, keep)
    context.log.info(", ".join(f"{count} {what}" for what, count in figures.items()))
    return Output(figures, metadata={what: MetadataValue.int(n) for what, n in figures.items()})


@job(description="Maintenance of the DuckLake event store, on infrastructure.ducklake's "
     "maintenance_schedule (a store in one DuckDB file needs none).")  # fmt: skip
def lake_maintenance_job() -> None:
    maintain_lake()


def lake_maintenance(
    config: ExperimentsConfig,
) -> tuple[list[JobDefinition], list[ScheduleDefinition]]:
    """The maintenance job and its schedule, for a DuckLake store; none for the DuckDB file."""
    if config.infrastructure.event_store != "ducklake":
        return [], []
    schedule = ScheduleDefinition(
        job=lake_maintenance_job,
        cron_schedule=config.infrastructure.ducklake.maintenance_schedule,
        default_status=DefaultScheduleStatus.RUNNING,
    )
    return [lake_maintenance_job], [schedule]
