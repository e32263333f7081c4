"""The output assets, whose results leave through IO managers (io_managers/):

- `published_posteriors`: each window's posterior records, read from DuckDB and handed to the
  sink that experiments.yaml names (console, csv or dynamodb), which also publishes them to a
  Kafka topic when `output_topic` is set;
- `published_allocation`: a bandit test's new assignment weights, recorded in DuckDB as
  published and handed to the places assignment reads them from (docs/bandit.md).

Separate assets from the statistics so that a sink that is down fails only this step: DuckDB
keeps the results, and the next run writes them again."""

from datetime import datetime

from dagster import AssetKey, AssetsDefinition, Failure, MetadataValue, Output, asset

from diana_pipeline.allocations import AllocationVersion, next_version
from diana_pipeline.analysis import in_config_order, is_conversion
from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.io_managers import ALLOCATION_SINK, POSTERIOR_SINK
from diana_pipeline.partitions import run_windows
from diana_pipeline.resources import EventStoreResource, ExperimentsResource
from diana_pipeline.sinks.records import TIME_FIELDS, format_time
from diana_pipeline.store import EventStore
from diana_pipeline.windows import utc_now

PUBLISHED = AssetKey("published_posteriors")
PUBLISHED_ALLOCATION = AssetKey("published_allocation")
# The fields of the latest window's records in published_posteriors' metadata.
# test_id, variant, alpha, beta first: the original Diana's `Posterior ► {...}` lines began so.
LATEST_FIELDS = (
    "test_id", "variant", "alpha", "beta", "exposures_total", "successes_total", "mean",
    "ci_low", "ci_high", "prob_best", "expected_loss", "window_start", "timestamp",
)  # fmt: skip


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
        # The latest window's conversion posteriors (cumulative totals): what diana-demo
        # watches to know the pipeline has caught up, and diana-engine prints, without opening
        # any sink or DuckDB. The IO manager adds what it wrote where.
        tests = {test.test_id: test for test in settings.tests}
        latest = [
            {k: format_time(r[k]) if k in TIME_FIELDS else r[k] for k in LATEST_FIELDS}
            for r in records
            if r["window_start"] == starts[-1]
            and (r["test_id"] not in tests or is_conversion(tests[r["test_id"]], r))
        ]
        metadata = {"windows": len(windows), "latest_window": MetadataValue.json(latest)}
        return Output(records, metadata=metadata)

    return published_posteriors


def build_published_allocation(
    config: ExperimentsConfig, allocation: AssetKey, common: dict
) -> AssetsDefinition:
    @asset(
        key=PUBLISHED_ALLOCATION,
        deps=[allocation],
        group_name="outputs",
        kinds={"kafka", "json"} | ({"dynamodb"} if config.output_sink == "dynamodb" else set()),
        io_manager_key=ALLOCATION_SINK,
        description="Bandit tests' assignment weights, published with a version and the moment "
        f"they take effect to Kafka topic {config.allocation_topic}, allocations.json in the "
        "CSV folder" + (" and DynamoDB" if config.output_sink == "dynamodb" else "") + " "
        "(docs/bandit.md). Only a live refresh publishes: weights cannot steer the past.",
        **common,
    )
    def published_allocation(
        context, experiments: ExperimentsResource, event_store: EventStoreResource
    ) -> Output[list[AllocationVersion]]:
        settings = experiments.load()
        bandits = [test for test in settings.tests if test.mode == "bandit"]
        windows = run_windows(context, settings.partitions)
        now = utc_now()
        current = settings.partitions.grid.window_start(now)
        size = windows[-1][1] - windows[-1][0]
        if not bandits:
            return Output([], metadata={"note": "no test in bandit mode"})
        new: list[AllocationVersion] = []
        latest: list[AllocationVersion] = []
        live = windows[-1][0] >= current - size  # the current window or the one just ended
        with event_store.open() as store:
            for test in bandits:
                versions = store.allocation_versions(test.test_id, latest=True)
                last = versions[-1] if versions else None
                if live:
                    version = next_version(
                        test, settings.partitions, _recommended(store, test.test_id, current),
                        last, now,
                    )  # fmt: skip
                    if version is not None:
                        store.add_allocation_version(version)
                        new.append(version)
                        last = version
                if last is not None:
                    latest.append(last)
        shown = [
            {"test_id": v.test_id, "version": v.version, "effective_from": str(v.effective_from),
             "weights": v.weights}
            for v in latest
        ]  # fmt: skip
        metadata = {
            "new_versions": len(new),
            "latest": MetadataValue.json(shown),
        }
        if not live:
            metadata["note"] = "nothing new published: the run's windows are past"
        return Output(latest, metadata=metadata)

    return published_allocation


def _recommended(
    store: EventStore, test_id: str, current: datetime
) -> dict[datetime, dict[str, float]]:
    """The allocation asset's weights of the test's latest two windows up to the current."""
    rows = store.connection.execute(
        "SELECT window_start, variant, recommended_allocation FROM allocation "
        "WHERE test_id = ? AND window_start IN (SELECT DISTINCT window_start FROM allocation "
        "WHERE test_id = ? AND window_start <= ? ORDER BY window_start DESC LIMIT 2)",
        [test_id, test_id, current],
    ).fetchall()
    found: dict[datetime, dict[str, float]] = {}
    for start, variant, weight in rows:
        found.setdefault(start, {})[variant] = weight
    return found
