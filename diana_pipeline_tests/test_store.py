"""The DuckDB store on its own: duplicates, idempotent writes, all-or-nothing transactions."""

from __future__ import annotations

import gzip
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from diana_pipeline.events import EventColumns, ValidEvent
from diana_pipeline.store import EventStore, OffsetRange, StoreFormatError, WriteCounts

WINDOW = datetime(2026, 11, 21, 10, 0)
LATER = datetime(2026, 11, 21, 11, 0)
FIXTURES = Path(__file__).parent / "fixtures"


def event(event_id: str, user: str = "u") -> ValidEvent:
    return ValidEvent(event_id, "ButtonDisplayed", "t", "control", user, WINDOW, WINDOW)


def test_duplicates_within_and_across_batches_are_stored_once(tmp_path: Path) -> None:
    with EventStore.open(tmp_path / "s.duckdb") as store:
        counts = WriteCounts()
        store.add_events(
            "web",
            EventColumns.of([(0, 5, event("a")), (0, 6, event("b")), (1, 2, event("a"))]),
            counts,
        )
        assert (counts.events, counts.duplicates) == (2, 1)
        store.add_events("web", EventColumns.of([(2, 9, event("b")), (2, 10, event("c"))]), counts)
        assert (counts.events, counts.duplicates) == (3, 2)
        assert counts.events_by_window == {WINDOW: 3}
        # The first position of a duplicated event_id is the one kept.
        row = store.connection.execute(
            "SELECT kafka_partition, kafka_offset FROM events WHERE event_id = 'a'"
        ).fetchone()
        assert row == (0, 5)
        assert store.count_events() == 3 and store.count_events(WINDOW) == 3


def test_a_redelivery_is_found_at_its_time_and_a_new_time_is_a_new_event(
    tmp_path: Path,
) -> None:
    def at(event_id: str, minute: int) -> ValidEvent:
        moment = WINDOW.replace(minute=minute)
        return ValidEvent(event_id, "ButtonDisplayed", "t", "control", "u", moment, WINDOW)

    with EventStore.open(tmp_path / "s.duckdb") as store:
        counts = WriteCounts()
        store.add_events("web", EventColumns.of([(0, 1, at("a", 1))]), counts)
        store.add_events("web", EventColumns.of([(0, 2, at("b", 30))]), counts)
        # One batch spanning the window: the redelivery of "a" (the batch's earliest time)
        # is found; "b" sent again with another timestamp is another event.
        batch = [(0, 3, at("c", 59)), (0, 4, at("a", 1)), (0, 5, at("b", 40))]
        store.add_events("web", EventColumns.of(batch), counts)
        assert (counts.events, counts.duplicates) == (4, 1)
        stored = store.connection.execute(
            "SELECT event_id, minute(event_time) FROM events ORDER BY ALL"
        ).fetchall()
        assert stored == [("a", 1), ("b", 30), ("b", 40), ("c", 59)]


def test_rejections_are_stored_once_per_position(tmp_path: Path) -> None:
    with EventStore.open(tmp_path / "s.duckdb") as store:
        counts = WriteCounts()
        store.add_rejected(
            "web", [(0, 1, b"junk", "not JSON: x"), (0, 2, None, "empty message (no value)")],
            counts,
        )  # fmt: skip
        store.add_rejected(
            "web", [(0, 1, b"junk", "not JSON: x"), (0, 3, b"[]", "not JSON: y")], counts
        )
        assert counts.rejected == 3
        # Counted by kind as stored: the second copy of offset 1 is not.
        assert counts.rejected_by_kind == {"not_json": 2, "empty": 1}
        raw, reason = store.connection.execute(
            "SELECT raw, reason FROM rejected_events WHERE kafka_offset = 1"
        ).fetchone()
        assert (raw, reason) == (b"junk", "not JSON: x")


def test_a_failed_transaction_stores_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with EventStore.open(path) as store:
        with pytest.raises(RuntimeError), store.transaction():
            counts = WriteCounts()
            store.add_events("web", EventColumns.of([(0, 0, event("a"))]), counts)
            store.record_range("web", OffsetRange(0, 0, 1), "run", counts, 0)
            raise RuntimeError("killed mid-write")
        assert store.count_events() == 0
        assert not store.ingested("web", OffsetRange(0, 0, 1))
    with EventStore.open(path) as store, store.transaction():
        counts = WriteCounts()
        store.add_events("web", EventColumns.of([(0, 0, event("a"))]), counts)
        store.record_range("web", OffsetRange(0, 0, 1), "run", counts, 0)
    with EventStore.open(path, read_only=True) as store:
        assert store.count_events() == 1
        assert store.ingested("web", OffsetRange(0, 0, 1))
        assert store.ingested_end("web") == {0: 1}


def test_a_writer_waits_while_another_process_holds_the_file(tmp_path: Path) -> None:
    """Opening the store while another process holds it waits for the holder (a raw
    connection fails at once), and gets in once the holder lets go: no fixed sleeps, the
    holder releases when told."""
    path = tmp_path / "events.duckdb"
    with EventStore.open(path):
        pass
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_UNTIL_TOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    released = threading.Event()
    opened: list[tuple[bool, int]] = []

    def open_store() -> None:
        with EventStore.open(path) as store:
            opened.append((released.is_set(), store.count_events()))

    try:
        assert holder.stdout.readline().strip() == "holding"  # type: ignore[union-attr]
        with pytest.raises(duckdb.IOException, match="lock"):
            duckdb.connect(str(path)).close()  # what a run met before: a failure
        opener = threading.Thread(target=open_store)
        opener.start()
        released.set()  # before the holder is told: the opener cannot get in earlier
        holder.stdin.write("release\n")  # type: ignore[union-attr]
        holder.stdin.flush()  # type: ignore[union-attr]
        opener.join(timeout=120)
        assert opened == [(True, 0)]  # it waited, then opened
        with EventStore.open_when_free(path) as reader:
            assert reader.count_events() == 0
    finally:
        holder.stdin.close()  # type: ignore[union-attr]
        holder.wait(timeout=30)


HOLD_UNTIL_TOLD = """
import sys, duckdb
connection = duckdb.connect(sys.argv[1], read_only=True)
print("holding", flush=True)
sys.stdin.readline()
connection.close()
"""


def test_readers_of_the_file_in_two_processes_spill_apart(tmp_path: Path) -> None:
    """Two processes reading the file at once. By default both spilled into `<file>.tmp`,
    and the first to close removed the folder: the other's next read of what it had spilled
    crashed its process."""
    path = tmp_path / "events.duckdb"
    with EventStore.open(path):
        pass
    rows = 3_000_000
    spills = (
        f"CREATE TEMP TABLE spilled AS SELECT range AS i, repeat('x', 50) AS s FROM range({rows})"
    )
    with EventStore.open(path, read_only=True, memory_limit="60MB") as reader:
        reader.connection.execute(spills)
        own = Path(reader.connection.execute(SPILL_FOLDER).fetchone()[0])
        assert any(own.iterdir())  # it spilled
        other = subprocess.run(
            [sys.executable, "-c", SPILL_AND_CLOSE, str(path), spills, SPILL_FOLDER],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert Path(other.stdout.strip()) != own
        assert any(own.iterdir())
        read = reader.connection.execute("SELECT count(*), sum(i) FROM spilled").fetchone()
        assert read == (rows, rows * (rows - 1) // 2)
    assert not own.exists()


SPILL_FOLDER = "SELECT current_setting('temp_directory')"
SPILL_AND_CLOSE = """
import sys
from pathlib import Path
from diana_pipeline.store import EventStore
with EventStore.open(Path(sys.argv[1]), read_only=True, memory_limit="60MB") as store:
    store.connection.execute(sys.argv[2])
    print(store.connection.execute(sys.argv[3]).fetchone()[0])
"""


def test_a_store_from_before_event_key_is_migrated_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    old = duckdb.connect(str(path))
    old.execute(
        "CREATE TABLE events (event_id VARCHAR NOT NULL PRIMARY KEY, event_type VARCHAR NOT NULL,"
        " test_id VARCHAR NOT NULL, variant VARCHAR NOT NULL, user_id VARCHAR NOT NULL,"
        " event_time TIMESTAMP NOT NULL, window_start TIMESTAMP NOT NULL,"
        " topic VARCHAR NOT NULL, kafka_partition INTEGER NOT NULL,"
        " kafka_offset BIGINT NOT NULL, ingested_at TIMESTAMP NOT NULL)"
    )
    old.execute(
        "INSERT INTO events VALUES ('a', 'ButtonDisplayed', 't', 'control', 'u', ?, ?, 'web',"
        " 0, 0, ?)",
        [WINDOW, WINDOW, WINDOW],
    )
    old.close()
    with EventStore.open(path) as store:
        counts = WriteCounts()
        store.add_events("web", EventColumns.of([(0, 1, event("a")), (0, 2, event("b"))]), counts)
        # "a" is already in its window: a duplicate, found through the migrated key.
        assert (counts.events, counts.duplicates) == (1, 1)
        later = ValidEvent("a", "ButtonDisplayed", "t", "control", "u", LATER, LATER)
        store.add_events("web", EventColumns.of([(0, 3, later)]), counts)
        assert counts.events == 2  # the same id at another time is another event
        assert store.count_events() == 3
        nullable = store.connection.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'events' AND is_nullable"
        ).fetchall()
        # added to the migrated table; optional anyway
        assert nullable == [("value",), ("properties",), ("range_start",)]


def test_an_events_value_is_stored_and_its_absence_is_null(tmp_path: Path) -> None:
    priced = ValidEvent("p", "Purchase", "t", "control", "u", WINDOW, WINDOW, 12.5)
    with EventStore.open(tmp_path / "s.duckdb") as store:
        store.add_events(
            "web", EventColumns.of([(0, 1, event("a")), (0, 2, priced)]), WriteCounts()
        )
        rows = store.connection.execute(
            "SELECT event_id, value FROM events ORDER BY event_id"
        ).fetchall()
    assert rows == [("a", None), ("p", 12.5)]


def test_only_window_keeps_the_other_windows_out(tmp_path: Path) -> None:
    later = ValidEvent("z", "ButtonDisplayed", "t", "control", "u", LATER, LATER)
    with EventStore.open(tmp_path / "s.duckdb") as store:
        counts = WriteCounts()
        rows = EventColumns.of([(0, 1, event("a")), (0, 2, later), (0, 3, event("a"))])
        store.add_events("web", rows, counts, only_window=LATER)
        assert (counts.events, counts.duplicates) == (1, 0)
        assert counts.events_by_window == {LATER: 1}


def superiority_row(window: datetime, winner: str | None) -> dict[str, object]:
    return {
        "test_id": "t",
        "variant": "treatment",
        "window_start": window,
        "prob_best": 0.97,
        "expected_loss": 0.0001,
        "prob_beats": '{"control": 0.97}',
        "lift_vs_control_low": 0.01,
        "lift_vs_control_high": 0.2,
        "decision": "winner" if winner else "keep testing",
        "winner": winner,
        "reason": "why",
    }


def test_a_results_column_null_in_every_first_row_takes_values_later(tmp_path: Path) -> None:
    """A window without a winner is written first, as in every live test's first hour."""
    path = tmp_path / "s.duckdb"
    with EventStore.open(path) as store:
        store.replace_windows("superiority", [WINDOW], [superiority_row(WINDOW, None)])
        store.replace_windows("superiority", [LATER], [superiority_row(LATER, "treatment")])
        rows = store.read_window_range("superiority", None, None)
    assert [(r["window_start"], r["winner"]) for r in rows] == [
        (WINDOW, None),
        (LATER, "treatment"),
    ]


def test_a_store_in_a_newer_storage_format_is_one_clear_error(tmp_path: Path) -> None:
    """Diana ran DuckDB 2.0, whose files DuckDB 1.5 cannot read. The fixture is a store file
    DuckDB 2.0.0 wrote (one empty table), gzipped."""
    path = tmp_path / "newer.duckdb"
    path.write_bytes(gzip.decompress((FIXTURES / "written-by-duckdb-2.0.duckdb.gz").read_bytes()))
    with pytest.raises(StoreFormatError, match=r"docs/operations\.md"), EventStore.open(path):
        pass
