"""Which windows an IO manager call covers: the time window of the partitions being written or
read (a range, for single-run backfills), or everything when the call is not partitioned."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from dagster import InputContext, OutputContext


@dataclass(frozen=True)
class WindowSpan:
    """Window starts in [start, end), as naive UTC; None on a side means unbounded."""

    start: datetime | None = None
    end: datetime | None = None

    def holds(self, window_start: datetime) -> bool:
        return (self.start is None or window_start >= self.start) and (
            self.end is None or window_start < self.end
        )

    def __str__(self) -> str:
        if self.start is None and self.end is None:
            return "every window"
        return f"windows from {self.start} to {self.end} UTC"


EVERY_WINDOW = WindowSpan()


def span_of(context: InputContext | OutputContext) -> WindowSpan:
    if not context.has_asset_partitions:
        return EVERY_WINDOW
    window = context.asset_partitions_time_window
    return WindowSpan(_naive_utc(window.start), _naive_utc(window.end))


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)
