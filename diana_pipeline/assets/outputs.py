"""The output asset: each window's posterior records, read from DuckDB and handed to the sink
that experiments.yaml names (console, csv or dynamodb), and to a Kafka topic when
`output_topic` is set.

A separate asset from `posteriors` so that a sink that is down fails only this step: DuckDB
keeps the posteriors, and re-materialising the window writes the same records."""

from dagster import AssetKey, AssetsDefinition, Failure, MetadataValue, Output, asset

from diana_pipeline.analysis import in_config_order
from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.io_managers import POSTERIOR_SINK
from diana_pipeline.partitions import run_windows
from diana_pipeline.posteriors_topic import publish_posteriors
from diana_pipeline.producer import ProducerError
from diana_pipeline.resources import ExperimentsResource
from diana_pipeline.store import EventStore

PUBLISHED = AssetKey("published_posteriors")


def build_published_posteriors(
    config: ExperimentsConfig, posteriors: AssetKey, common: dict
) -> AssetsDefinition:
    kinds = {config.output_sink} | ({"kafka"} if config.output_topic else set())

    @asset(
        key=PUBLISHED,
        deps=[posteriors],
        group_name="outputs",
        kinds=kinds,
        io_manager_key=POSTERIOR_SINK,
        description=f"Per window, the posterior records (design.md §5) written to the "
        f"{config.output_sink} sink"
        + (f" and published to Kafka topic {config.output_topic}" if config.output_topic else "")
        + "; re-materialising a window replaces its records.",
        **common,
    )
    def published_posteriors(context, experiments: ExperimentsResource) -> Output[list[dict]]:
        settings = experiments.load()
        windows = run_windows(context, settings.partitions)
        starts = [start for start, _ in windows]
        with EventStore.open(settings.infrastructure.duckdb.path) as store:
            records = in_config_order(settings, store.read_windows("posteriors", starts))
        missing = sorted(set(starts) - {r["window_start"] for r in records})
        if missing:
            raise Failure(
                f"no posteriors in DuckDB for {len(missing)} window(s), first {missing[0]} UTC: "
                "materialise `posteriors` for them first"
            )
        metadata: dict[str, object] = {
            "windows": len(windows),
            "records": len(records),
            "sink": settings.output_sink,
        }
        if settings.output_topic:
            try:
                metadata["published_to_kafka"] = publish_posteriors(
                    settings.infrastructure.kafka.bootstrap_servers, settings.output_topic, records
                )
            except ProducerError as exc:
                raise Failure(f"publishing to Kafka topic {settings.output_topic}: {exc}") from None
            metadata["kafka_topic"] = settings.output_topic
        # The latest window's totals (cumulative): what diana-demo watches to know the
        # pipeline has caught up, without opening any sink or DuckDB.
        shown = ("test_id", "variant", "exposures_total", "successes_total", "prob_best")
        latest = [r for r in records if r["window_start"] == starts[-1]]
        metadata["latest_window"] = MetadataValue.json([{k: r[k] for k in shown} for r in latest])
        return Output(records, metadata=metadata)

    return published_posteriors
