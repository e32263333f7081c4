"""The CSV sink's files: one per day, header once, a window's rows replaced (never
duplicated), exact round trip, two writers on one day at once, and each bad file."""

from __future__ import annotations

import csv
import multiprocessing
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from diana_pipeline.sinks.csv_files import PosteriorCsvFiles, file_name, read_csv_file
from diana_pipeline.sinks.records import RecordError
from diana_pipeline.windows import WindowSpan
from diana_pipeline_tests.sinks.records_for_tests import make_records

DAY = datetime(2026, 11, 21)
HOUR = timedelta(hours=1)


def span(start: datetime, windows: int = 1) -> WindowSpan:
    return WindowSpan(start, start + windows * HOUR)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_windows_append_then_replace_in_place(tmp_path: Path) -> None:
    files = PosteriorCsvFiles(tmp_path)
    first, second = DAY + 10 * HOUR, DAY + 11 * HOUR
    files.write(make_records(first), span(first))
    files.write(make_records(second), span(second))
    path = tmp_path / "posteriors_2026-11-21.csv"
    assert lines(path)[0].startswith("test_id,variant,window_start,window_end,timestamp,alpha")
    assert len(lines(path)) == 1 + 4
    newer = make_records(first, generation=1)
    files.write(newer, span(first))  # re-materialise the first window
    assert len(lines(path)) == 1 + 4
    assert sum(line.startswith("test_id,") for line in lines(path)) == 1
    assert files.read() == make_records(second) + newer
    assert files.read(span(first)) == newer


def test_a_range_spanning_midnight_writes_each_day_and_clears_stale_windows(
    tmp_path: Path,
) -> None:
    files = PosteriorCsvFiles(tmp_path)
    late, early = DAY + 23 * HOUR, DAY + 24 * HOUR
    files.write(make_records(late, tests=("t1", "t2")), span(late))
    # A backfill of both windows no longer has test t2 (removed from the config): its stale
    # rows in the range go, the new ones land in the file of their own day.
    written = files.write(make_records(late) + make_records(early), span(late, 2))
    assert [p.name for p in written] == [file_name(late.date()), file_name(early.date())]
    assert files.read(span(late)) == make_records(late)
    assert files.read(span(early)) == make_records(early)
    assert files.read(WindowSpan(late, early + HOUR)) == make_records(late) + make_records(early)


def _write_windows(directory: str, minutes: list[int], start_together: object) -> None:
    files = PosteriorCsvFiles(Path(directory))
    start_together.wait()  # type: ignore[attr-defined]
    for minute in minutes:
        start = DAY + minute * timedelta(minutes=1)
        files.write(make_records(start), WindowSpan(start, start + timedelta(minutes=1)))


def test_two_processes_writing_one_day_lose_nothing(tmp_path: Path) -> None:
    # Two processes released at once, each adding its own windows (even and odd minutes) to
    # the same day's file: any update lost to a race would be missing at the end.
    jobs = [list(range(0, 400, 2)), list(range(1, 400, 2))]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(jobs))
    workers = [
        context.Process(target=_write_windows, args=(str(tmp_path), job, barrier)) for job in jobs
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    path = tmp_path / "posteriors_2026-11-21.csv"
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    keys = [(r["test_id"], r["variant"], r["window_start"]) for r in rows]
    assert len(keys) == len(set(keys)) == 400 * 2
    assert sum(line.startswith("test_id,") for line in lines(path)) == 1
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_bad_files_give_one_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    header_only = tmp_path / "header.csv"
    header_only.write_text("test_id,variant,window_start,alpha,beta\n")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("name,value\nx,1\n")
    bad_value = tmp_path / "bad.csv"
    PosteriorCsvFiles(tmp_path).write(make_records(DAY), span(DAY))
    good = tmp_path / "posteriors_2026-11-21.csv"
    bad_value.write_text(good.read_text().replace(",1.0,", ",one,", 1))
    cases = {
        empty: "the file is empty",
        header_only: "has a header but no records",
        wrong: "not a posteriors file, the header lacks test_id, variant, window_start",
        bad_value: "line 2: alpha should be a positive number, got 'one'",
    }
    for path, message in cases.items():
        with pytest.raises(RecordError, match=message):
            read_csv_file(path, required=("test_id", "variant", "window_start", "alpha", "beta"))
    with pytest.raises(FileNotFoundError):
        read_csv_file(tmp_path / "missing.csv")
