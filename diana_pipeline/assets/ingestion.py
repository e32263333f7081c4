"""The `events` asset: a window's valid web events in DuckDB. The Kafka sensor's runs give it
the offset ranges of a micro-batch to ingest; materialised without ranges (a backfill, the
UI), it rebuilds its windows from what Kafka still holds."""

from datetime import datetime

from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    BackfillPolicy,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.ingestion import (
    IngestResult,
    KafkaUnavailableError,
    ingest,
    rebuild_window,
)
from diana_pipeline.markdown import table
from diana_pipeline.partitions import partition_key, run_windows, window_partitions
from diana_pipeline.resources import EventStoreResource, ExperimentsResource, KafkaResource
from diana_pipeline.sinks.records import format_time
from diana_pipeline.store import OffsetRange
from diana_pipeline.windows import aware_utc, from_microseconds

EVENTS = AssetKey("events")
DUCKDB_POOL = "duckdb"


def store_pool(config: ExperimentsConfig) -> str | None:
    """The pool of the steps that write the store: `duckdb` (dagster.yaml: one slot, one
    writer at a time), unless parallel runs share a DuckLake store, whose writers take its
    locks themselves (lake.py) while the runs of different partition groups go side by side."""
    return DUCKDB_POOL if config.ingestion.parallel_runs == 1 else None


class RangeConfig(Config):
    partition: int
    start: int = Field(description="first offset")
    end: int = Field(description="one past the last offset")


class EventsConfig(Config):
    ranges: list[RangeConfig] = Field(
        default_factory=list,
        description="Kafka offset ranges to ingest (a micro-batch of the Kafka sensor); "
        "none: rebuild the run's windows from what Kafka still holds",
    )


def _ranges_table(ranges: list[OffsetRange]) -> str:
    rows = [(r.partition, f"{r.start}-{r.end - 1}", f"{r.size:,}") for r in ranges]
    return table(("partition", "offsets", "messages"), rows, align="rlr")


def build_events(config: ExperimentsConfig) -> AssetsDefinition:
    """The events asset, on the configured windows."""

    @asset(
        key=EVENTS,
        partitions_def=window_partitions(config.partitions),
        pool=store_pool(config),
        backfill_policy=BackfillPolicy.single_run(),
        group_name="ingestion",
        kinds={"kafka", "duckdb"},
        owners=["team:growth"],
        description="Valid web events of one event-time window, in DuckDB (table `events`). "
        "The Kafka sensor's runs ingest new offsets into it; materialising a window without "
        "offset ranges rebuilds it from Kafka.",
    )
    def events(
        context,
        config: EventsConfig,
        experiments: ExperimentsResource,
        kafka: KafkaResource,
        event_store: EventStoreResource,
    ) -> MaterializeResult:
        settings = experiments.load()
        windows = run_windows(context, settings.partitions)
        if config.ranges:
            ranges = [OffsetRange(r.partition, r.start, r.end) for r in config.ranges]
            return _ingest(
                context, settings, kafka, event_store, ranges, [start for start, _ in windows]
            )
        return _rebuild(context, settings, kafka, event_store, windows)

    return events


def _ingest(
    context,
    settings: ExperimentsConfig,
    kafka: KafkaResource,
    event_store: EventStoreResource,
    ranges: list[OffsetRange],
    windows: list[datetime],
) -> MaterializeResult:
    try:
        result = ingest(
            settings, ranges, run_id=context.run.run_id, kafka=kafka, open_store=event_store.open
        )
    except KafkaUnavailableError as exc:
        raise Failure(description=str(exc)) from None
    context.log.info(_summary(kafka.topic, result))
    # Events of windows outside this run's (late or early ones): reported as materialisations
    # of their windows, so that the statistics automation refreshes those windows as well.
    for window, count in sorted(result.counts.events_by_window.items()):
        if window not in windows:
            context.log_event(
                AssetMaterialization(
                    asset_key=EVENTS,
                    partition=partition_key(window),
                    metadata={"events_ingested": count, "run_windows": False},
                )
            )
    counts = result.counts
    return MaterializeResult(
        metadata={
            "events_ingested": counts.events,
            "rejected_in_run": counts.rejected,
            "duplicates_in_run": counts.duplicates,
            "windows_touched": len(counts.events_by_window),
            "offset_ranges": MetadataValue.md(_ranges_table(result.ranges)),
            "consumer_lag": sum(result.lag.values()),
            # What the metrics topic's records carry (run_metrics.py), kept with the run.
            "rejected_by_reason": MetadataValue.json(dict(sorted(counts.rejected_by_kind.items()))),
            "consumer_lag_by_partition": MetadataValue.json(
                {str(p): lag for p, lag in sorted(result.lag.items())}
            ),
            "newest_event_at": (
                format_time(from_microseconds(result.newest_event_us))
                if result.newest_event_us is not None
                else ""
            ),
            "ingest_seconds": round(result.seconds, 3),
        }
    )


def _rebuild(
    context,
    settings: ExperimentsConfig,
    kafka: KafkaResource,
    event_store: EventStoreResource,
    windows: list[tuple[datetime, datetime]],
) -> MaterializeResult:
    added = rejected = scanned = 0
    for start, end in windows:
        try:
            rebuilt = rebuild_window(
                settings,
                aware_utc(start),
                aware_utc(end),
                kafka=kafka,
                open_store=event_store.open,
            )
        except KafkaUnavailableError as exc:
            raise Failure(description=f"cannot rebuild {partition_key(start)}: {exc}") from None
        if not rebuilt.complete:
            context.log.warning(
                f"Kafka no longer holds all of window {partition_key(start)}: its oldest "
                f"message is from {rebuilt.oldest_held:%Y-%m-%d %H:%M:%S}Z. Events already "
                "stored for the window are kept; only what Kafka still holds was re-read."
            )
        added += rebuilt.counts.events
        rejected += rebuilt.counts.rejected
        scanned += rebuilt.scanned
    with event_store.open() as store:
        total = sum(store.count_events(start) for start, _ in windows)
    return MaterializeResult(
        metadata={
            "events_in_windows": total,
            "events_added": added,
            "rejected_added": rejected,
            "messages_scanned": scanned,
        }
    )


def _summary(topic: str, result: IngestResult) -> str:
    counts = result.counts
    return (
        f"{topic}: ingested {len(result.ranges)} range(s) "
        f"({', '.join(map(str, result.ranges)) or 'none'}), skipped {len(result.skipped)} "
        f"already stored; {counts.events:,} events in {len(counts.events_by_window)} window(s), "
        f"{counts.duplicates:,} duplicates, {counts.rejected:,} rejected, {result.lost:,} lost; "
        f"lag {sum(result.lag.values()):,}; {result.seconds:.2f}s"
    )
