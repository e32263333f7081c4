"""The event-time windows of experiments.yaml as Dagster partitions."""

from datetime import UTC, datetime

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
