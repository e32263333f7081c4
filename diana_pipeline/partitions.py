"""The event-time windows of experiments.yaml as Dagster partitions."""

from datetime import datetime, timedelta

from dagster import (
    AssetExecutionContext,
    InputContext,
    OutputContext,
    TimeWindowPartitionMapping,
    TimeWindowPartitionsDefinition,
)

from diana_pipeline.config import Partitions
from diana_pipeline.windows import EVERY_WINDOW, PARTITION_KEY_FORMAT, WindowSpan, aware_utc

_HISTORY_REACH = timedelta(days=366 * 20)


def window_partitions(partitions: Partitions) -> TimeWindowPartitionsDefinition:
    # end_offset=1: the window in progress is a partition too, so live data has a home.
    return TimeWindowPartitionsDefinition(
        start=partitions.start,
        cron_schedule=partitions.cron_schedule,
        fmt=PARTITION_KEY_FORMAT,
        timezone="UTC",
        end_offset=1,
    )


def cumulative_mapping(partitions: Partitions) -> TimeWindowPartitionMapping:
    """A window's totals depend on the events of every window up to its own (docs/design.md
    §3): a late event changes every later window, and the automation refreshes them all. The
    mapping reaches back further than any history can (a fixed offset is what Dagster offers);
    windows before the first do not exist, and are allowed not to."""
    reach = int(_HISTORY_REACH / partitions.window)
    return TimeWindowPartitionMapping(
        start_offset=-reach, end_offset=0, allow_nonexistent_upstream_partitions=True
    )


def partition_key(window_start: datetime) -> str:
    """The partition key of a window start (naive datetimes are UTC)."""
    return aware_utc(window_start).strftime(PARTITION_KEY_FORMAT)


def window_range(
    partitions: Partitions, first: datetime, last: datetime, now: datetime
) -> tuple[str, str]:
    """The partition keys of the windows holding `first` and `last`, kept within the windows
    that exist at `now`: from the configured start to the window in progress."""
    newest = partitions.window_start(now)

    def clamp(moment: datetime) -> datetime:
        return min(max(partitions.window_start(moment), partitions.start), newest)

    return partition_key(clamp(first)), partition_key(clamp(last))


def span_of(context: InputContext | OutputContext) -> WindowSpan:
    """The windows an IO manager call covers: its partitions' time window (a range, for
    single-run backfills), or every window when the call is not partitioned."""
    if not context.has_asset_partitions:
        return EVERY_WINDOW
    return WindowSpan.of(context.asset_partitions_time_window)


def run_windows(
    context: AssetExecutionContext, partitions: Partitions
) -> list[tuple[datetime, datetime]]:
    """The windows of a run's partition range (one, or many in a single-run backfill), as
    naive UTC (start, end) pairs."""
    return WindowSpan.of(context.partition_time_window).windows(partitions.window)
