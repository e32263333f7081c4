"""CSV sink: posterior records in `posteriors_<date>.csv` (one file per UTC day of the window
start) in the configured folder, for offline plots and spreadsheets.

Re-materialising a window replaces its rows. Writers hold an exclusive lock on the folder and
rewrite a file whole, to a temporary file renamed over the old one, so two runs writing the
same day never lose each other's rows and a reader never sees half a file."""

from __future__ import annotations

import csv
import fcntl
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path

from diana_pipeline.sinks.records import (
    POSTERIOR_FIELDS,
    REQUIRED_FIELDS,
    Record,
    RecordError,
    decode,
    parse_time,
    to_cells,
)
from diana_pipeline.windows import EVERY_WINDOW, WindowSpan

FILE_PATTERN = "posteriors_*.csv"


def file_name(day: date) -> str:
    return f"posteriors_{day.isoformat()}.csv"


def read_csv_file(path: Path, required: Iterable[str] = REQUIRED_FIELDS) -> list[Record]:
    """Every record of one file. A missing, empty or wrongly shaped file raises RecordError
    (OSError for unreadable files) with the file, line and field in the message."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames
        if not header:
            raise RecordError(f"{path}: the file is empty")
        required = list(required)
        absent = [f for f in required if f not in header]
        if absent:
            raise RecordError(
                f"{path}: not a posteriors file, the header lacks {', '.join(absent)}"
            )
        records = [decode(row, f"{path} line {reader.line_num}", required) for row in reader]
    if not records:
        raise RecordError(f"{path}: has a header but no records")
    return records


class PosteriorCsvFiles:
    """The folder of daily posterior files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, records: list[Record], span: WindowSpan) -> list[Path]:
        """Replace the rows of the windows in `span` (or, unbounded, of the records' windows)
        with `records`; returns the files written."""
        bounded = span.start is not None and span.end is not None
        windows = {r["window_start"] for r in records}

        def replaced(window_start: datetime) -> bool:
            return span.holds(window_start) if bounded else window_start in windows

        by_day: dict[date, list[Record]] = defaultdict(list)
        for record in records:
            by_day[record["window_start"].date()].append(record)  # type: ignore[union-attr]
        days = set(by_day) | set(_days(span))
        self.directory.mkdir(parents=True, exist_ok=True)
        written = []
        with self._locked():
            for day in sorted(days):
                path = self.directory / file_name(day)
                kept = [
                    row for row in _raw_rows(path) if not replaced(parse_time(row["window_start"]))
                ]
                new = [to_cells(r) for r in by_day.get(day, [])]
                if kept or new:
                    _replace_file(path, kept + new)
                    written.append(path)
        return written

    def read(self, span: WindowSpan = EVERY_WINDOW) -> list[Record]:
        """The records of the windows in `span`, from every file that may hold them."""
        if span.start is not None and span.end is not None:
            paths = [self.directory / file_name(day) for day in _days(span)]
        else:
            paths = sorted(self.directory.glob(FILE_PATTERN))
        records: list[Record] = []
        for path in paths:  # no lock: files are only ever replaced whole, by rename
            if path.exists():
                records += read_csv_file(path)
        return [r for r in records if span.holds(r["window_start"])]  # type: ignore[arg-type]

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # One exclusive lock on the folder itself (the files are replaced by rename, so they
        # cannot carry it); writes are small, so one lock for every day costs nothing.
        descriptor = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # releases the lock


def _days(span: WindowSpan) -> list[date]:
    if span.start is None or span.end is None:
        return []
    first, last = span.start.date(), (span.end - timedelta(microseconds=1)).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _raw_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _replace_file(path: Path, rows: list[dict[str, str]]) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(descriptor, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=POSTERIOR_FIELDS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            handle.flush()
            os.fsync(handle.fileno())
        Path(temporary).chmod(0o644)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
