"""Statistics assets on the event-time windows: increments → posteriors → superiority and
allocation. Results live in DuckDB tables of the same names (one set of rows per window,
replaced on re-materialisation), so a range of windows is computed in one run and a
backfill gives exactly what the live path gave."""

import base64
import json
from collections.abc import Callable
from datetime import datetime

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetKey,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    BackfillPolicy,
    Config,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    ScheduleEvaluationContext,
    asset,
    define_asset_job,
    schedule,
)
from pydantic import Field

from diana_pipeline.analysis import (
    allocation_rows,
    decision_level,
    is_conversion,
    is_overall,
    posterior_records,
    quality_checks,
    superiority_rows,
)
from diana_pipeline.assets.ingestion import EVENTS, store_pool
from diana_pipeline.assets.outputs import (
    PUBLISHED,
    PUBLISHED_ALLOCATION,
    build_published_allocation,
    build_published_posteriors,
)
from diana_pipeline.bandit_analysis import period_weighted, weights_in_force_srm
from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.counting import (
    CountingRules,
    WindowCounts,
    cohort_counts,
    first_exposures_by_version,
    metric_sums,
    quality,
    segment_counts,
    window_counts,
)
from diana_pipeline.counting import state as counting_state
from diana_pipeline.counting.winsorize import winsorized_sums
from diana_pipeline.markdown import table
from diana_pipeline.metric_analysis import metric_records
from diana_pipeline.partitions import (
    cumulative_mapping,
    partition_key,
    run_windows,
    window_partitions,
)
from diana_pipeline.plots import metrics_figure, posterior_figure, segments_figure
from diana_pipeline.resources import EventStoreResource, ExperimentsResource
from diana_pipeline.segments import segment_checks, segment_metric_records, segment_records
from diana_pipeline.store import EventStore
from diana_pipeline.windows import utc_now

INCREMENTS = AssetKey("variant_increments")
POSTERIORS = AssetKey("posteriors")
SUPERIORITY = AssetKey("superiority")
ALLOCATION = AssetKey("allocation")
STATISTICS = [INCREMENTS, POSTERIORS, SUPERIORITY, ALLOCATION]
STATISTICS_JOB = "statistics_job"

# Refresh a window when its upstream window changed (or is about to, in the same tick) since
# it was last refreshed or requested, in any window, late ones included; never twice at once.
# An ingestion run refreshes its own windows after storing their events, so this fires only
# for the others (late events, rebuilds) and for a refresh that failed.
REFRESH = (
    (
        AutomationCondition.any_deps_updated()
        | AutomationCondition.any_deps_match(AutomationCondition.will_be_requested())
    ).since(AutomationCondition.newly_requested() | AutomationCondition.newly_updated())
    & ~AutomationCondition.in_progress()
    & ~AutomationCondition.any_deps_in_progress()
).with_label("upstream window changed since the last refresh")

CHECKS = {
    "sample_ratio_mismatch": "Exposures match the configured allocation (chi-square).",
    "users_in_several_variants": "Few users are seen in more than one variant.",
    "clicks_without_exposure": "Few successes come from users never exposed.",
    "clicks_before_exposure": "Few exposed users clicked only before their exposure.",
    "clicks_in_another_variant": "Few successes are tagged with another variant than the exposure.",
    "successes_within_exposures": "Successes never exceed exposures.",
    "segment_sample_ratio_mismatch": "Each segment's exposures match the allocation.",
    "segments_disagree": "No segment contradicts a clear overall result.",
}


class CountingConfig(Config):
    recount_users: bool = Field(
        False,
        description="first recompute, from all of their events, the counting state of every "
        "user with an event in the run's windows (a repair; the state is otherwise kept "
        "with every stored batch, and `diana-state rebuild` recomputes it all)",
    )


def _picture(name: str, png: bytes) -> MetadataValue:
    return MetadataValue.md(f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})")


def _table(rows: list[dict], columns: list[str]) -> str:
    return table(columns, [[row[c] for c in columns] for row in rows])


def _from_posteriors(
    context,
    config: ExperimentsConfig,
    event_store: EventStoreResource,
    table: str,
    build_rows: Callable[[ExperimentsConfig, list[dict], set[datetime]], list[dict]],
    columns: list[str],
    stored: Callable[[dict], dict] = lambda row: row,
) -> MaterializeResult:
    """Derive a results table for the run's windows (all of them at once) from the stored
    posteriors of every window up to the last of them (the anytime-valid test's running
    minimum reads them all); the latest window's rows go into the metadata."""
    windows = run_windows(context, config.partitions)
    starts = [start for start, _ in windows]
    with event_store.open() as store:
        history = store.read_window_range("posteriors", None, windows[-1][1])
        rows = build_rows(config, history, set(starts))
        store.replace_windows(table, starts, [stored(row) for row in rows])
    latest = [row for row in rows if row["window_start"] == starts[-1]]
    return MaterializeResult(
        metadata={"windows": len(windows), table: MetadataValue.md(_table(latest, columns))}
    )


def _metric_records(
    store: EventStore,
    config: ExperimentsConfig,
    counts: dict[datetime, list[WindowCounts]],
    windows: list[tuple[datetime, datetime]],
    timestamp: datetime,
) -> list[dict]:
    """The posterior records of every test's metrics other than its conversion."""
    if not any(test.other_metrics for test in config.tests):
        return []
    sums = metric_sums(store.connection, config, sorted({m for w in windows for m in w}))
    if any(m.winsorize for test in config.tests for m in test.other_metrics):
        counted = {
            end: {(c.test_id, c.variant): c.exposures_total for c in counts[start]}
            for start, end in windows
        }
        for end, capped in winsorized_sums(store.connection, config, counted).items():
            sums[end].update(capped)
    records = []
    for test in config.tests:
        users = {
            start: {c.variant: (c.exposures_inc, c.exposures_total)
                    for c in rows if c.test_id == test.test_id}
            for start, rows in counts.items()
        }  # fmt: skip
        records += metric_records(test, users, sums, windows, timestamp)
    return records


def _weights_in_force_srm(
    store: EventStore, config: ExperimentsConfig, cutoff: datetime
) -> dict[str, tuple[float, dict[str, object]]]:
    """Each bandit test's sample-ratio check against the weights in force (docs/bandit.md)."""
    rules = CountingRules.of(config)
    return {
        test.test_id: weights_in_force_srm(
            test,
            first_exposures_by_version(store.connection, rules, test.test_id, cutoff),
            store.allocation_versions(test.test_id),
        )
        for test in config.tests
        if test.mode == "bandit"
    }


def _period_weighted(
    store: EventStore, config: ExperimentsConfig, windows: list[tuple[datetime, datetime]]
) -> dict[tuple[datetime, str], dict[str, tuple[float | None, float | None]]]:
    """(window_start, test_id) → variant → the period-weighted rate and its standard error,
    for each bandit test at the end of each of the run's windows."""
    rules = CountingRules.of(config)
    found = {}
    for test in config.tests:
        if test.mode != "bandit":
            continue
        cohorts = cohort_counts(store.connection, rules, test.test_id, [end for _, end in windows])
        for start, end in windows:
            found[(start, test.test_id)] = period_weighted(test, cohorts[end])
    return found


def build_statistics(config: ExperimentsConfig) -> tuple[list, object, object, object]:
    """The four statistics assets and the two output assets, the statistics job, its schedule
    and the automation sensor."""
    partitions = window_partitions(config.partitions)
    common = {
        "partitions_def": partitions,
        "pool": store_pool(config),
        "backfill_policy": BackfillPolicy.single_run(),
        "automation_condition": REFRESH,
        "owners": ["team:growth"],
    }

    @asset(
        key=INCREMENTS,
        deps=[AssetDep(EVENTS, partition_mapping=cumulative_mapping(config.partitions))],
        group_name="statistics",
        kinds={"duckdb", "sql"},
        check_specs=[
            AssetCheckSpec(name, asset=INCREMENTS, description=d) for name, d in CHECKS.items()
        ],
        description="Per window, test and variant: users newly exposed and converted "
        "(exposures_inc, successes_inc) and totals to the window's end, by the counting rules.",
        **common,
    )
    def variant_increments(
        context,
        config: CountingConfig,
        experiments: ExperimentsResource,
        event_store: EventStoreResource,
    ) -> MaterializeResult:
        settings = experiments.load()
        windows = run_windows(context, settings.partitions)
        rows: list[dict] = []
        with event_store.open() as store:
            if config.recount_users:
                rules = CountingRules.of(settings)
                counting_state.ensure_current(store.connection, rules)
                with store.transaction():
                    counting_state.rebuild_users(
                        store.connection, rules, windows[0][0], windows[-1][1]
                    )
            counts = window_counts(store.connection, settings, windows)
            for start, end in windows:
                rows += [
                    {**vars(c), "window_start": start, "window_end": end} for c in counts[start]
                ]
            store.replace_windows("variant_increments", [s for s, _ in windows], rows)
            last_start, last_end = windows[-1]
            latest = [
                WindowCounts(**{k: r[k] for k in WindowCounts.__dataclass_fields__})
                for r in rows
                if r["window_start"] == last_start
            ]
            figures = quality(store.connection, settings, last_end)
            bandit_srm = _weights_in_force_srm(store, settings, last_end)
            segments = (
                segment_counts(store.connection, settings, windows[-1:])
                if any(test.dimensions for test in settings.tests)
                else {last_start: []}
            )
        found = quality_checks(settings, latest, figures, bandit_srm)
        found += segment_checks(settings, latest, segments, last_start)
        checks = [
            AssetCheckResult(
                check_name=check.name,
                passed=check.passed,
                severity=AssetCheckSeverity.ERROR
                if check.severity == "error"
                else AssetCheckSeverity.WARN,
                description=check.description,
                metadata={"figures": MetadataValue.json(check.metadata)},
            )
            for check in found
        ]
        columns = [
            "test_id",
            "variant",
            "exposures_inc",
            "successes_inc",
            "exposures_total",
            "successes_total",
        ]
        return MaterializeResult(
            metadata={
                "windows": len(windows),
                "latest_window": MetadataValue.md(
                    _table([r for r in rows if r["window_start"] == last_start], columns)
                ),
            },
            check_results=checks,
        )

    @asset(
        key=POSTERIORS,
        deps=[INCREMENTS],
        group_name="statistics",
        kinds={"duckdb", "python"},
        description="Per window, test and variant: the Beta posterior to the window's end "
        "(alpha, beta, totals, rate, mean, 95% credible interval, P(best), expected loss).",
        **common,
    )
    def posteriors(
        context, experiments: ExperimentsResource, event_store: EventStoreResource
    ) -> MaterializeResult:
        settings = experiments.load()
        windows = run_windows(context, settings.partitions)
        with event_store.open() as store:
            counts: dict[datetime, list[WindowCounts]] = {start: [] for start, _ in windows}
            for row in store.read_windows("variant_increments", list(counts)):
                counts[row["window_start"]].append(
                    WindowCounts(**{k: row[k] for k in WindowCounts.__dataclass_fields__})
                )
            now = utc_now()
            period = _period_weighted(store, settings, windows)
            records = posterior_records(settings, counts, windows, now, period)
            records += _metric_records(store, settings, counts, windows, now)
            if any(test.dimensions for test in settings.tests):
                segments = segment_counts(store.connection, settings, windows)
                records += segment_records(settings, segments, windows, now)
                cutoffs = sorted({m for w in windows for m in w})
                records += segment_metric_records(
                    settings,
                    segments,
                    lambda d, s: metric_sums(store.connection, settings, cutoffs, segment=(d, s)),
                    windows,
                    now,
                )
            store.replace_windows("posteriors", list(counts), records)
            fields = ("window_start", "test_id", "variant", "prob_best", "p_value_always_valid",
                      "metric", "dimension")  # fmt: skip
            history = [
                dict(zip(fields, row, strict=True))
                for row in store.connection.execute(
                    f"SELECT {', '.join(fields)} FROM posteriors "
                    "WHERE window_start <= ? ORDER BY window_start",
                    [windows[-1][0]],
                ).fetchall()
            ]
        tests = {test.test_id: test for test in settings.tests}
        in_window = [r for r in records if r["window_start"] == windows[-1][0]]
        latest = [r for r in in_window if is_overall(r)]
        # The picture shows the conversions; the table every metric.
        picture = posterior_figure(
            [r for r in latest if is_conversion(tests[r["test_id"]], r)],
            [r for r in history if r["test_id"] in tests and is_conversion(tests[r["test_id"]], r)],
            levels={test.test_id: decision_level(test) for test in settings.tests},
        )
        columns = [
            "test_id",
            "metric",
            "variant",
            "exposures_total",
            "successes_total",
            "mean",
            "ci_low",
            "ci_high",
            "prob_best",
            "expected_loss",
        ]
        metadata = {
            "windows": len(windows),
            "posteriors": MetadataValue.md(_table(latest, columns)),
            "plot": _picture("posteriors", picture),
        }
        others = [r for r in latest if not is_conversion(tests[r["test_id"]], r)]
        if others:
            metadata["metrics_plot"] = _picture("metrics", metrics_figure(others))
        segmented = [r for r in in_window if not is_overall(r)]
        for dimension in sorted({str(r["dimension"]) for r in segmented}):
            rows = [r for r in segmented if r["dimension"] == dimension]
            shown = ["test_id", "segment", "variant", "exposures_total", "successes_total",
                     "mean", "ci_low", "ci_high", "prob_best"]  # fmt: skip
            metadata[f"segments_by_{dimension}"] = MetadataValue.md(_table(rows, shown))
        if segmented:
            metadata["segments_plot"] = _picture("segments", segments_figure(segmented))
        return MaterializeResult(metadata=metadata)

    @asset(
        key=SUPERIORITY,
        deps=[POSTERIORS],
        group_name="statistics",
        kinds={"duckdb", "python"},
        description="Per window and test: P(best), pairwise P(a > b), expected loss, lift over "
        "control with its 95% interval, the anytime-valid p-value and lift confidence "
        "sequence (running over the windows), and the decision with its reason.",
        **common,
    )
    def superiority(
        context, experiments: ExperimentsResource, event_store: EventStoreResource
    ) -> MaterializeResult:
        columns = ["test_id", "variant", "prob_best", "expected_loss", "lift_vs_control_low",
                   "lift_vs_control_high", "p_value_always_valid", "lift_cs_low", "lift_cs_high",
                   "decision", "reason"]  # fmt: skip
        return _from_posteriors(
            context,
            experiments.load(),
            event_store,
            "superiority",
            superiority_rows,
            columns,
            stored=lambda row: {**row, "prob_beats": json.dumps(row["prob_beats"])},
        )

    @asset(
        key=ALLOCATION,
        deps=[POSTERIORS],
        group_name="statistics",
        kinds={"duckdb", "python"},
        description="Per window and test: the Thompson-sampling traffic split recommended for "
        "the next window (P(best) with a floor per variant).",
        **common,
    )
    def allocation(
        context, experiments: ExperimentsResource, event_store: EventStoreResource
    ) -> MaterializeResult:
        columns = ["test_id", "variant", "configured_allocation", "recommended_allocation"]
        return _from_posteriors(
            context, experiments.load(), event_store, "allocation", allocation_rows, columns
        )

    published = build_published_posteriors(config, POSTERIORS, common)
    published_allocation = build_published_allocation(config, ALLOCATION, common)
    selection = AssetSelection.assets(*STATISTICS, PUBLISHED, PUBLISHED_ALLOCATION)
    statistics_job = define_asset_job(
        STATISTICS_JOB,
        selection=selection,
        description="Recompute the statistics of a window (or a range, in one run) and write "
        "its posterior records to the sink.",
    )

    @schedule(
        name="statistics_schedule",
        cron_schedule=config.statistics.schedule,
        job=statistics_job,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description="Refresh the current window's statistics even when no event comes.",
    )
    def statistics_schedule(context: ScheduleEvaluationContext) -> RunRequest:
        current = config.partitions.window_start(context.scheduled_execution_time)
        return RunRequest(partition_key=partition_key(current))

    automation = AutomationConditionSensorDefinition(
        "statistics_automation",
        target=selection,
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=3,
        description="Refreshes the statistics of windows whose events changed outside an "
        "ingestion run's own windows (late events, rebuilds), and retries failed refreshes.",
    )
    return (
        [variant_increments, posteriors, superiority, allocation, published, published_allocation],
        statistics_job,
        statistics_schedule,
        automation,
    )
