"""The output asset: each window's posterior records, read from DuckDB and handed to the IO
manager of the sink that experiments.yaml names (console, csv or dynamodb), which also
publishes them to a Kafka topic when `output_topic` is set (io_managers/).

A separate asset from `posteriors` so that a sink that is down fails only this step: DuckDB
keeps the posteriors, and re-materialising the window writes the same records."""

from dagster import AssetKey, AssetsDefinition, Failure, MetadataValue, Output, asset

from diana_pipeline.analysis import in_config_order, is_conversion
from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.io_managers import POSTERIOR_SINK
from diana_pipeline.partitions import run_windows
from diana_pipeline.resources import EventStoreResource, ExperimentsResource

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
        # Right after the posteriors, before superiority and allocation: the sink is what
        # people watch, so an ingestion run writes it as soon as it can.
        op_tags={"dagster/priority": "1"},
        description=f"Per window, the posterior records (docs/design.md §5) written to the "
        f"{config.output_sink} sink"
        + (f" and published to Kafka topic {config.output_topic}" if config.output_topic else "")
        + "; re-materialising a window replaces its records.",
        **common,
    )
    def published_posteriors(
        context, experiments: ExperimentsResource, event_store: EventStoreResource
    ) -> Output[list[dict]]:
        settings = experiments.load()
        windows = run_windows(context, settings.partitions)
        starts = [start for start, _ in windows]
        with event_store.open() as store:
            records = in_config_order(settings, store.read_windows("posteriors", starts))
        missing = sorted(set(starts) - {r["window_start"] for r in records})
        if missing:
            raise Failure(
                f"no posteriors in DuckDB for {len(missing)} window(s), first {missing[0]} UTC: "
                "materialise `posteriors` for them first"
            )
        # The latest window's conversion totals (cumulative): what diana-demo watches to know the
        # pipeline has caught up, without opening any sink or DuckDB. The IO manager adds
        # what it wrote where.
        shown = ("test_id", "variant", "exposures_total", "successes_total", "prob_best")
        tests = {test.test_id: test for test in settings.tests}
        latest = [
            {k: r[k] for k in shown}
            for r in records
            if r["window_start"] == starts[-1]
            and (r["test_id"] not in tests or is_conversion(tests[r["test_id"]], r))
        ]
        metadata = {"windows": len(windows), "latest_window": MetadataValue.json(latest)}
        return Output(records, metadata=metadata)

    return published_posteriors
