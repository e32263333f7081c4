"""The `events` asset and the ingestion job that the Kafka sensor launches."""

from dagster import (
    AssetKey,
    AssetMaterialization,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
    asset,
    job,
    op,
)
from pydantic import Field

from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.ingestion import (
    IngestResult,
    KafkaUnavailableError,
    ingest,
    rebuild_window,
    window_end,
)
from diana_pipeline.partitions import partition_key, window_partitions
from diana_pipeline.resources import ExperimentsResource
from diana_pipeline.run_health import worker_tags
from diana_pipeline.store import EventStore, OffsetRange

EVENTS = AssetKey("events")
DUCKDB_POOL = "duckdb"


class RangeConfig(Config):
    partition: int
    start: int = Field(description="first offset")
    end: int = Field(description="one past the last offset")


class IngestConfig(Config):
    ranges: list[RangeConfig]


def _ranges_table(ranges: list[OffsetRange]) -> str:
    lines = ["| partition | offsets | messages |", "|---:|---|---:|"]
    lines += [f"| {r.partition} | {r.start}-{r.end - 1} | {r.size:,} |" for r in ranges]
    return "\n".join(lines)


def build_ingestion(config: ExperimentsConfig) -> tuple:
    """The events asset and the ingestion job, on the configured windows."""
    partitions = window_partitions(config.partitions)

    @asset(
        key=EVENTS,
        partitions_def=partitions,
        pool=DUCKDB_POOL,
        group_name="ingestion",
        kinds={"kafka", "duckdb"},
        owners=["team:growth"],
        description="Valid web events of one event-time window, in DuckDB (table `events`). "
        "The Kafka sensor fills it live; materialising a window rebuilds it from Kafka.",
    )
    def events(context, experiments: ExperimentsResource) -> MaterializeResult:
        settings = experiments.load()
        window = context.partition_time_window
        try:
            rebuilt = rebuild_window(settings, window.start, window_end(settings, window.start))
        except KafkaUnavailableError as exc:
            raise Failure(description=f"cannot rebuild {context.partition_key}: {exc}") from None
        if not rebuilt.complete:
            context.log.warning(
                f"Kafka no longer holds all of window {context.partition_key}: its oldest "
                f"message is from {rebuilt.oldest_held:%Y-%m-%d %H:%M:%S}Z. Events already "
                "stored for the window are kept; only what Kafka still holds was re-read."
            )
        with EventStore.open(settings.infrastructure.duckdb.path) as store:
            total = store.count_events(window.start.replace(tzinfo=None))
        return MaterializeResult(
            metadata={
                "events_in_window": total,
                "events_added": rebuilt.counts.events,
                "rejected_added": rebuilt.counts.rejected,
                "messages_scanned": rebuilt.scanned,
                "kafka_holds_whole_window": rebuilt.complete,
            }
        )

    @op(
        pool=DUCKDB_POOL,
        out={},  # reports materialisations of `events` partitions; no output of its own
        description="Ingest exactly the given Kafka offset ranges into DuckDB.",
    )
    def ingest_ranges(
        context: OpExecutionContext, config: IngestConfig, experiments: ExperimentsResource
    ):
        settings = experiments.load()
        # Who runs this step, so that the sensor can tell a live run from a dead one.
        context.instance.add_run_tags(context.run_id, worker_tags())
        ranges = [OffsetRange(r.partition, r.start, r.end) for r in config.ranges]
        try:
            result = ingest(settings, ranges, run_id=context.run_id)
        except KafkaUnavailableError as exc:
            raise Failure(description=str(exc)) from None
        context.log.info(_summary(settings, result))
        for window, count in sorted(result.counts.events_by_window.items()):
            yield AssetMaterialization(
                asset_key=EVENTS,
                partition=partition_key(window),
                metadata={
                    "events_ingested": count,
                    "rejected_in_run": result.counts.rejected,
                    "duplicates_in_run": result.counts.duplicates,
                    "offset_ranges": MetadataValue.md(_ranges_table(result.ranges)),
                    "consumer_lag": sum(result.lag.values()),
                },
            )

    @job(
        description="Ingest Kafka offset ranges into the DuckDB event store (launched by the "
        "kafka_events_sensor).",
    )
    def ingest_job() -> None:
        ingest_ranges()

    return events, ingest_job


def _summary(config: ExperimentsConfig, result: IngestResult) -> str:
    counts = result.counts
    return (
        f"{config.infrastructure.kafka.topic}: ingested {len(result.ranges)} range(s) "
        f"({', '.join(map(str, result.ranges)) or 'none'}), skipped {len(result.skipped)} "
        f"already stored; {counts.events:,} events in {len(counts.events_by_window)} window(s), "
        f"{counts.duplicates:,} duplicates, {counts.rejected:,} rejected, {result.lost:,} lost; "
        f"lag {sum(result.lag.values()):,}; {result.seconds:.2f}s"
    )
