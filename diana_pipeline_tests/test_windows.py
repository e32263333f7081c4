"""Time and windows: naive UTC from any zone, the window grid, and the windows a span covers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from diana_pipeline.windows import (
    EVERY_WINDOW,
    WindowGrid,
    WindowSpan,
    aware_utc,
    from_microseconds,
    naive_utc,
    to_microseconds,
    utc_now,
)

PARIS_WINTER = timezone(timedelta(hours=1))
HOUR = timedelta(hours=1)


def test_naive_utc_converts_an_aware_time_of_another_zone() -> None:
    assert naive_utc(datetime(2026, 11, 21, 11, 30, tzinfo=PARIS_WINTER)) == datetime(
        2026, 11, 21, 10, 30
    )
    assert naive_utc(datetime(2026, 11, 21, 10, 30)) == datetime(2026, 11, 21, 10, 30)


def test_aware_utc_takes_a_naive_time_as_utc_and_converts_other_zones() -> None:
    naive = aware_utc(datetime(2026, 11, 21, 10, 30))
    assert naive.tzinfo is UTC and naive.hour == 10
    paris = aware_utc(datetime(2026, 11, 21, 11, 30, tzinfo=PARIS_WINTER))
    assert paris.tzinfo is UTC and paris.hour == 10


def test_utc_now_is_naive_and_now() -> None:
    before = datetime.now(UTC).replace(tzinfo=None)
    now = utc_now()
    assert now.tzinfo is None and before <= now <= before + timedelta(seconds=5)


def test_microseconds_round_trip_from_the_epoch() -> None:
    assert to_microseconds(datetime(1970, 1, 1, 0, 0, 1, 5)) == 1_000_005
    moment = datetime(2026, 11, 21, 10, 15, 30, 250_000)
    assert from_microseconds(to_microseconds(moment)) == moment


@pytest.mark.parametrize(
    ("moment", "start"),
    [
        (datetime(2026, 11, 21, 10, 44, 59, 999_999), datetime(2026, 11, 21, 10, 30)),
        (datetime(2026, 11, 21, 10, 45), datetime(2026, 11, 21, 10, 45)),
        (datetime(2026, 11, 21, 10, 46, tzinfo=PARIS_WINTER), datetime(2026, 11, 21, 9, 45)),
        # Before the origin: the grid goes on backwards.
        (datetime(2026, 10, 31, 23, 59), datetime(2026, 10, 31, 23, 45)),
    ],
)
def test_window_start_on_a_15_minute_grid(moment: datetime, start: datetime) -> None:
    grid = WindowGrid.of(datetime(2026, 11, 1, tzinfo=UTC), timedelta(minutes=15))
    assert grid.window_start(moment) == start
    assert grid.window_start_us(to_microseconds(naive_utc(moment))) == to_microseconds(start)


def test_a_grid_through_an_origin_off_the_hour() -> None:
    grid = WindowGrid.of(datetime(2026, 11, 1, 0, 30), HOUR)
    assert grid.window_start(datetime(2026, 11, 21, 10, 29)) == datetime(2026, 11, 21, 9, 30)


def test_a_span_lists_its_windows() -> None:
    span = WindowSpan(datetime(2026, 11, 21, 22), datetime(2026, 11, 22, 1))
    assert span.windows(HOUR) == [
        (datetime(2026, 11, 21, 22), datetime(2026, 11, 21, 23)),
        (datetime(2026, 11, 21, 23), datetime(2026, 11, 22, 0)),
        (datetime(2026, 11, 22, 0), datetime(2026, 11, 22, 1)),
    ]
    with pytest.raises(ValueError, match="unbounded"):
        EVERY_WINDOW.windows(HOUR)


def test_a_span_holds_its_starts_and_not_its_end() -> None:
    span = WindowSpan(datetime(2026, 11, 21, 10), datetime(2026, 11, 21, 12))
    assert span.holds(datetime(2026, 11, 21, 10)) and span.holds(datetime(2026, 11, 21, 11))
    assert not span.holds(datetime(2026, 11, 21, 12))
    assert not span.holds(datetime(2026, 11, 21, 9))
    assert EVERY_WINDOW.holds(datetime(1999, 1, 1))
    assert WindowSpan(start=datetime(2026, 11, 21)).holds(datetime(2030, 1, 1))


def test_a_span_of_an_aware_time_window_is_naive_utc() -> None:
    class TimeWindow:
        start = datetime(2026, 11, 21, 11, tzinfo=PARIS_WINTER)
        end = datetime(2026, 11, 21, 13, tzinfo=PARIS_WINTER)

    span = WindowSpan.of(TimeWindow())
    assert span == WindowSpan(datetime(2026, 11, 21, 10), datetime(2026, 11, 21, 12))
    assert str(span) == "windows from 2026-11-21 10:00:00 to 2026-11-21 12:00:00 UTC"
