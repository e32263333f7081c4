"""The event-time windows of experiments.yaml as Dagster partitions."""

from datetime import UTC, datetime, timedelta

from dagster import TimeWindowPartitionsDefinition

from diana_pipeline.config import Partitions

PARTITION_KEY_FORMAT = "%Y-%m-%d-%H:%M"


def window_partitions(partitions: Partitions) -> TimeWindowPartitionsDefinition:
    # end_offset=1: the window in progress is a partition too, so live data has a home.
    return TimeWindowPartitionsDefinition(
        start=partitions.start,
        cron_schedule=partitions.cron_schedule,
        fmt=PARTITION_KEY_FORMAT,
        timezone="UTC",
        end_offset=1,
    )


def partition_key(window_start: datetime) -> str:
    """The partition key of a window start (naive datetimes are UTC)."""
    aware = window_start if window_start.tzinfo else window_start.replace(tzinfo=UTC)
    return aware.strftime(PARTITION_KEY_FORMAT)


def window_range(
    partitions: Partitions, first: datetime, last: datetime, now: datetime
) -> tuple[str, str]:
    """The partition keys of the windows holding `first` and `last`, kept within the windows
    that exist at `now`: from the configured start to the window in progress."""
    newest = partitions.window_start(now)

    def clamp(moment: datetime) -> datetime:
        return min(max(partitions.window_start(moment), partitions.start), newest)

    return partition_key(clamp(first)), partition_key(clamp(last))


def run_windows(context, partitions: Partitions) -> list[tuple[datetime, datetime]]:
    """The windows of a run's partition range (one, or many in a single-run backfill), as
    naive UTC (start, end) pairs."""
    span = context.partition_time_window
    size = timedelta(seconds=partitions.window.total_seconds())
    start = span.start.astimezone(UTC).replace(tzinfo=None)
    end = span.end.astimezone(UTC).replace(tzinfo=None)
    windows = []
    while start < end:
        windows.append((start, start + size))
        start += size
    return windows
