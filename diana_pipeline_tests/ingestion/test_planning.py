"""The sensor's planning (pure): micro-batches cut from the watermarks and the cursor, and
the window keys its requests name."""

from __future__ import annotations

from datetime import datetime

from diana_pipeline.ingestion import plan_runs, read_cursor, write_cursor
from diana_pipeline.partitions import partition_key
from diana_pipeline.store import OffsetRange


def test_plan_runs_caps_batches_and_advances_the_cursor() -> None:
    marks = {0: (0, 250), 1: (100, 130), 2: (0, 0)}
    runs, cursor = plan_runs(marks, {0: 50}, max_batch=100, max_runs=10)
    assert runs == [
        [OffsetRange(0, 50, 150)],
        [OffsetRange(0, 150, 250)],
        [OffsetRange(1, 100, 130)],
    ]
    assert cursor == {0: 250, 1: 130, 2: 0}
    assert plan_runs(marks, cursor, 100, 10) == ([], cursor)


def test_plan_runs_respects_the_run_limit() -> None:
    runs, cursor = plan_runs({0: (0, 1000)}, {}, max_batch=100, max_runs=3)
    assert [r[0].start for r in runs] == [0, 100, 200]
    assert cursor == {0: 300}
    runs, _ = plan_runs({0: (0, 10), 1: (0, 10)}, {}, max_batch=100, max_runs=5)
    assert runs == [[OffsetRange(0, 0, 10), OffsetRange(1, 0, 10)]]


def test_partition_keys_match_the_window() -> None:
    assert partition_key(datetime(2026, 11, 21, 10, 0)) == "2026-11-21-10:00"


def test_the_cursor_belongs_to_its_topic() -> None:
    """A cursor kept for another topic (the experiments file moved to another) does not skip
    this topic's first messages; one from before the topic was kept is taken as this one's."""
    kept = write_cursor("web-events", {0: 2022, 2: 2047})
    assert read_cursor(kept, "web-events") == {0: 2022, 2: 2047}
    assert read_cursor(kept, "web-events-bandit") == {}
    assert read_cursor('{"0": 5, "1": 7}', "web-events") == {0: 5, 1: 7}
    assert read_cursor(None, "web-events") == {}
    runs, _ = plan_runs({0: (0, 10)}, read_cursor(kept, "web-events-bandit"), 100, 5)
    assert runs == [[OffsetRange(0, 0, 10)]]
