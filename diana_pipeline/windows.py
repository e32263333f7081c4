"""Time and windows, said once: Diana keeps every moment as a naive UTC datetime (or as
microseconds since the epoch, in the event columns), and a window is [start, start + size) on
the grid of experiments.yaml's `partitions`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

# How a window start is written as a Dagster partition key (and accepted by diana-analyze --at).
PARTITION_KEY_FORMAT = "%Y-%m-%d-%H:%M"


def naive_utc(moment: datetime) -> datetime:
    """`moment` in UTC without its zone; a naive datetime is taken to be UTC already."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def aware_utc(moment: datetime) -> datetime:
    """`moment` as an aware UTC datetime; a naive datetime is taken to be UTC."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def utc_now() -> datetime:
    """Now, as naive UTC (the form every table and record holds)."""
    return datetime.now(UTC).replace(tzinfo=None)


_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


def to_microseconds(moment: datetime) -> int:
    """A naive UTC datetime as microseconds since the epoch."""
    return (moment - _EPOCH) // _MICROSECOND


def from_microseconds(microseconds: int) -> datetime:
    """Microseconds since the epoch as a naive UTC datetime."""
    return _EPOCH + timedelta(microseconds=microseconds)


@dataclass(frozen=True)
class WindowGrid:
    """Windows of one size back to back, one of them starting at the origin: the partitions
    of experiments.yaml. Kept in microseconds since the epoch, the form the ingestion's fast
    path and the SQL work in."""

    origin_us: int
    size_us: int

    @classmethod
    def of(cls, origin: datetime, size: timedelta) -> WindowGrid:
        """The grid of windows of `size` through `origin` (a naive origin is UTC)."""
        return cls(to_microseconds(naive_utc(origin)), size // _MICROSECOND)

    def window_start_us(self, moment_us: int) -> int:
        """The start of the window that holds `moment_us`, both in microseconds."""
        # Python's % floors, so moments before the origin fall in the windows before it.
        return moment_us - (moment_us - self.origin_us) % self.size_us

    def window_start(self, moment: datetime) -> datetime:
        """The start of the window that holds `moment`, as naive UTC (naive input is UTC)."""
        return from_microseconds(self.window_start_us(to_microseconds(naive_utc(moment))))


class TimeWindowLike(Protocol):
    """Dagster's TimeWindow, or anything else with an aware start and end."""

    @property
    def start(self) -> datetime: ...

    @property
    def end(self) -> datetime: ...


@dataclass(frozen=True)
class WindowSpan:
    """Window starts in [start, end), as naive UTC; None on a side means unbounded."""

    start: datetime | None = None
    end: datetime | None = None

    @classmethod
    def of(cls, window: TimeWindowLike) -> WindowSpan:
        return cls(naive_utc(window.start), naive_utc(window.end))

    def holds(self, window_start: datetime) -> bool:
        return (self.start is None or window_start >= self.start) and (
            self.end is None or window_start < self.end
        )

    def windows(self, size: timedelta) -> list[tuple[datetime, datetime]]:
        """The (start, end) pairs of the windows of `size` that tile this bounded span."""
        if self.start is None or self.end is None:
            raise ValueError(f"cannot list the windows of an unbounded span ({self})")
        windows = []
        start = self.start
        while start < self.end:
            windows.append((start, start + size))
            start += size
        return windows

    def __str__(self) -> str:
        if self.start is None and self.end is None:
            return "every window"
        return f"windows from {self.start} to {self.end} UTC"


EVERY_WINDOW = WindowSpan()
