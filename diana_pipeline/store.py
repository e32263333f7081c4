"""The DuckDB event store: the source of truth for every number Diana shows.

Tables
  events           one row per event (a duplicate delivery is counted, not stored twice),
                   with its Kafka position, event-time window and ingestion time. An event
                   is a duplicate when an event with its event_id and its timestamp is
                   stored: a redelivery repeats the whole message, timestamp included.
                   Comparing at the same time keeps the check's cost flat as history and
                   the window grow (DuckDB reads only the files and row groups of the
                   batch's span of time).
  rejected_events  one row per rejected Kafka message: raw bytes, position, reason, time
  ingested_ranges  the ledger: every Kafka offset range that was ingested, written in the
                   same transaction as its events, so a range is stored exactly once
  counted_ranges   the ledger ranges that the counting fold has counted (counting/fold.py)
  counted_before   a time before which every ledger range is counted: the fold looks at
                   the ledger since then only
  store_schema     the fingerprint of the schema the store was last set up with
  user_moments, user_rows, window_steps, counting_state
                   the counting state, merged with every batch of new events in the batch's
                   own transaction (counting/state.py)
  variant_increments, posteriors, superiority, allocation
                   the statistics assets' results, one set of rows per window (RESULT_COLUMNS)
  allocation_versions
                   every published allocation of a bandit test (allocations.py), one row per
                   version and variant; never changed once written

DuckDB allows one writing process at a time: a run holds the store from its first use to its
end (resources/event_store.py), the `duckdb` pool (dagster.yaml) lets one more run start
meanwhile, and that run waits for the file. The DuckLake store has a writer lock of the same
kind, and lets parallel ingestion runs append beside its writer (docs/scale.md).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import duckdb
import numpy as np
import pandas as pd

from diana_pipeline import lake
from diana_pipeline.allocations import AllocationError, AllocationVersion
from diana_pipeline.counting import state as counting_state
from diana_pipeline.counting.rules import CountingRules
from diana_pipeline.events import EventColumns, rejection_kind
from diana_pipeline.lake import LOCK_RETRY_S, DuckLakeSettings, StoreLocation
from diana_pipeline.windows import to_microseconds, utc_now

log = logging.getLogger(__name__)

T = TypeVar("T")
COMMIT_ATTEMPTS = 5
CONFLICT_BACKOFF_S = 0.2  # times the attempt: another writer's commit is under way

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id        VARCHAR   NOT NULL,
    event_type      VARCHAR   NOT NULL,
    test_id         VARCHAR   NOT NULL,
    variant         VARCHAR   NOT NULL,
    user_id         VARCHAR   NOT NULL,
    event_time      TIMESTAMP NOT NULL,  -- UTC
    window_start    TIMESTAMP NOT NULL,  -- UTC, the event-time partition
    topic           VARCHAR   NOT NULL,
    kafka_partition INTEGER   NOT NULL,
    kafka_offset    BIGINT    NOT NULL,
    ingested_at     TIMESTAMP NOT NULL,
    event_key       UHUGEINT  NOT NULL,  -- hash_key(event_id): duplicates compare on it
    value           DOUBLE,              -- the event's optional value (value metrics)
    properties      VARCHAR,             -- its optional properties: JSON, sorted keys
    range_start     BIGINT               -- its ledger range's start_offset when that range
                                         -- awaits the counting fold; NULL: counted at once
);
CREATE TABLE IF NOT EXISTS rejected_events (
    topic           VARCHAR   NOT NULL,
    kafka_partition INTEGER   NOT NULL,
    kafka_offset    BIGINT    NOT NULL,
    raw             BLOB,
    reason          VARCHAR   NOT NULL,
    rejected_at     TIMESTAMP NOT NULL,
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);
CREATE TABLE IF NOT EXISTS ingested_ranges (
    topic           VARCHAR   NOT NULL,
    kafka_partition INTEGER   NOT NULL,
    start_offset    BIGINT    NOT NULL,  -- first offset of the range
    end_offset      BIGINT    NOT NULL,  -- one past the last
    run_id          VARCHAR,
    events          BIGINT    NOT NULL,  -- newly stored events
    duplicates      BIGINT    NOT NULL,  -- valid events whose event_id was already stored
    rejected        BIGINT    NOT NULL,
    lost            BIGINT    NOT NULL,  -- offsets Kafka no longer held when read
    ingested_at     TIMESTAMP NOT NULL,
    counted         BOOLEAN,             -- false: its events await the counting fold
    PRIMARY KEY (topic, kafka_partition, start_offset)
);
CREATE TABLE IF NOT EXISTS counted_ranges (  -- ledger ranges the counting fold has counted
    topic           VARCHAR   NOT NULL,
    kafka_partition INTEGER   NOT NULL,
    start_offset    BIGINT    NOT NULL,
    counted_at      TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS counted_before (  -- one row: every ledger range ingested earlier
    ingested_at     TIMESTAMP NOT NULL       -- is counted (counting/fold.py)
);
CREATE TABLE IF NOT EXISTS store_schema (  -- one row: the fingerprint of the schema below
    fingerprint     VARCHAR   NOT NULL,
    written_at      TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS allocation_versions (
    test_id         VARCHAR   NOT NULL,
    version         BIGINT    NOT NULL,
    variant         VARCHAR   NOT NULL,
    weight          DOUBLE    NOT NULL,
    variant_order   INTEGER   NOT NULL,
    effective_from  TIMESTAMP NOT NULL,
    published_at    TIMESTAMP NOT NULL,
    based_on_window TIMESTAMP,
    PRIMARY KEY (test_id, version, variant)
);
"""

# The statistics assets' tables, declared rather than inferred from the first rows written: a
# column that is NULL in every first row (superiority.winner before any test has a winner)
# would otherwise get a type guessed from NULLs, and every later row with a value would fail.
_WINDOW_KEY = {"test_id": "VARCHAR", "variant": "VARCHAR", "window_start": "TIMESTAMP"}
_COUNTS = {
    "exposures_inc": "BIGINT",
    "successes_inc": "BIGINT",
    "exposures_total": "BIGINT",
    "successes_total": "BIGINT",
}
# Anytime-valid figures against the control (NULL: the control's p-value, an open bound).
_ANYTIME = {"p_value_always_valid": "DOUBLE", "lift_cs_low": "DOUBLE", "lift_cs_high": "DOUBLE"}
# Posterior records of every metric (docs/metrics.md): which metric, its sums in its units
# (NULL for binary metrics), a guardrail's P(worse by its margin).
_METRIC = {
    "metric": "VARCHAR",
    "metric_type": "VARCHAR",
    "metric_role": "VARCHAR",
    "value_total": "DOUBLE",
    "value_squares_total": "DOUBLE",
    "value_products_total": "DOUBLE",
    "prob_worse_by_margin": "DOUBLE",
    "dimension": "VARCHAR",  # 'all' for the overall records (docs/segments.md)
    "segment": "VARCHAR",
    "rate_period_weighted": "DOUBLE",  # a bandit's conversion (docs/bandit.md)
    "rate_period_weighted_se": "DOUBLE",
}
RESULT_COLUMNS: dict[str, dict[str, str]] = {
    "variant_increments": {
        "test_id": "VARCHAR",
        "variant": "VARCHAR",
        **_COUNTS,
        "window_start": "TIMESTAMP",
        "window_end": "TIMESTAMP",
    },
    "posteriors": {
        **_WINDOW_KEY,
        "window_end": "TIMESTAMP",
        "timestamp": "TIMESTAMP",  # when the record was computed
        "alpha": "DOUBLE",
        "beta": "DOUBLE",
        **_COUNTS,
        "success_rate_total": "DOUBLE",
        "mean": "DOUBLE",
        "ci_low": "DOUBLE",
        "ci_high": "DOUBLE",
        "prob_best": "DOUBLE",
        "expected_loss": "DOUBLE",
        **_ANYTIME,
        **_METRIC,
    },
    "superiority": {
        **_WINDOW_KEY,
        "prob_best": "DOUBLE",
        "expected_loss": "DOUBLE",
        "prob_beats": "VARCHAR",  # JSON: {other variant: P(this > other)}
        "lift_vs_control_low": "DOUBLE",
        "lift_vs_control_high": "DOUBLE",
        **_ANYTIME,  # running minimum and intersection over the windows so far
        "decision": "VARCHAR",
        "winner": "VARCHAR",  # NULL until a variant wins
        "reason": "VARCHAR",
    },
    "allocation": {
        **_WINDOW_KEY,
        "configured_allocation": "DOUBLE",
        "recommended_allocation": "DOUBLE",
    },
}
RESULTS_SCHEMA = "\n".join(
    f"CREATE TABLE IF NOT EXISTS {table} ("
    + ", ".join(f"{name} {kind}" for name, kind in columns.items())
    + ");"
    for table, columns in RESULT_COLUMNS.items()
)
# Columns added since a table was first declared: a store written before them gains them
# (NULL in the rows it holds) on first open.
RESULTS_COLUMNS_ADDED = "\n".join(
    f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {kind};"
    for table, columns in RESULT_COLUMNS.items()
    for name, kind in columns.items()
    if name in _ANYTIME or name in _METRIC
)

# Stores written before events had event_key kept a PRIMARY KEY on event_id, whose index
# made every insert slower as the table grew; they are rewritten once, on first open.
_MIGRATE_EVENTS = f"""
ALTER TABLE events RENAME TO events_before_key;
{SCHEMA}
INSERT INTO events BY NAME SELECT *, hash_key(event_id) AS event_key FROM events_before_key;
DROP TABLE events_before_key;
"""

# Which incoming events are new: not stored yet at their time, first of their copies in the
# batch (the QUALIFY is left out when the batch has no two equal event_ids, the usual case).
# The stored events are read in the batch's span of event time only, named as constants
# ($first_us, $last_us): DuckDB then skips every other row group and DuckLake every other
# file by their min/max. A join condition alone made it hash all of history (0.43 s for a
# batch over 10M events, 3 ms with the constants); the window's bounds alone made it read
# the whole window, whose keys grew with it (87 ms a batch at 1M events in the window, 485 ms
# at 8M, DuckLake).
_NEW_EVENTS = """
CREATE OR REPLACE TEMP TABLE new_events AS
SELECT * FROM (
    SELECT hash_key(event_id) AS event_key, event_id, event_type, test_id, variant, user_id,
        make_timestamp(event_us) AS event_time, make_timestamp(window_us) AS window_start,
        $topic AS topic, kafka_partition::INTEGER AS kafka_partition,
        kafka_offset::BIGINT AS kafka_offset, CASE WHEN NOT isnan(value) THEN value END AS value,
        {properties} AS properties, $range_start::BIGINT AS range_start
    FROM incoming_events
    WHERE $window_us::BIGINT IS NULL OR window_us = $window_us
) AS incoming
WHERE NOT EXISTS (
    SELECT 1 FROM events
    WHERE events.event_time BETWEEN make_timestamp($first_us) AND make_timestamp($last_us)
      AND events.event_time = incoming.event_time AND events.event_key = incoming.event_key
)
"""
_FIRST_COPIES = """
QUALIFY row_number() OVER (
    PARTITION BY event_time, event_key ORDER BY kafka_partition, kafka_offset) = 1
"""


@dataclass(frozen=True)
class OffsetRange:
    """Offsets [start, end) of one partition."""

    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start

    def __str__(self) -> str:
        return f"{self.partition}:{self.start}-{self.end}"


@dataclass
class WriteCounts:
    """What one write stored, per window for the events."""

    events_by_window: Counter[datetime] = field(default_factory=Counter)
    duplicates: int = 0
    rejected: int = 0
    rejected_by_kind: Counter[str] = field(default_factory=Counter)  # events.rejection_kind

    @property
    def events(self) -> int:
        return sum(self.events_by_window.values())


class StoreFormatError(Exception):
    """The store file is in a storage format this DuckDB cannot read."""


WRITER_LOCK_WAIT_S = 30.0


def _spill_folder(held: ExitStack) -> Path:
    """A folder of its own for a DuckLake connection's spilled data, removed once `held`
    closes it. DuckDB spills into one folder per database (`.tmp` in the working directory
    for an in-memory one, as DuckLake's connections are; `<file>.tmp` for a file), under file
    names that do not differ from one database to the next, and removes that folder when the
    database closes: two processes sharing it lost each other's spilled data, an error or a
    crash (test_lake.py, test_store.py)."""
    folder = Path(tempfile.mkdtemp(prefix="diana-duckdb-"))
    held.callback(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _readers_spill_folder(path: Path) -> Path:
    """Where this process's read-only connections to the file spill. The file's one writer
    spills beside it (`<file>.tmp`), but several processes may read it at once. In one
    process DuckDB keeps one database per file for all its connections, and refuses a
    connection whose settings differ: one folder per process and file, which DuckDB removes
    when the process's last connection to the file closes."""
    file = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"diana-duckdb-{os.getpid()}-{file}"


def _connect(
    path: Path, read_only: bool, timeout_s: float, spill_folder: Path | None
) -> duckdb.DuckDBPyConnection:
    """Open the file, retrying while another process holds DuckDB's lock on it."""
    deadline = time.monotonic() + timeout_s
    waiting = False
    config = {} if spill_folder is None else {"temp_directory": str(spill_folder)}
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=config)
        except duckdb.IOException as exc:
            if "created with an newer version" in str(exc):
                raise StoreFormatError(
                    f"{path} was written by a newer DuckDB than this Diana's {duckdb.__version__} "
                    "(Diana ran DuckDB 2.0 before its scale profile): carry it over with "
                    "docs/operations.md, 'A store written by DuckDB 2.0'"
                ) from None
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            if not waiting:
                log.info("waiting up to %.0f s for %s: another process holds it", timeout_s, path)
                waiting = True
            time.sleep(LOCK_RETRY_S)


# Events and users are compared by a 128-bit hash of their ids, `hash_key(text)`, defined on
# every connection. A DuckLake table's Parquet files would keep a (U)HUGEINT as a DOUBLE,
# rounding the keys (users merged by mistake) and the sums of values: there the keys are
# UUIDs (the same md5) and the sums DECIMAL(38, 0), both exact in Parquet.
_HASH_KEY = "CREATE OR REPLACE TEMP MACRO hash_key(text) AS {}"
_HASH = {False: "md5_number(text)", True: "md5(text)::UUID"}


def _for_ducklake(schema: str) -> str:
    """The schema in DuckLake's terms: its 128-bit types, and no PRIMARY KEY clauses (their
    rows are kept unique by the statements that write them and the one writer)."""
    schema = re.sub(r",([ \t]*--[^\n]*)?\s*PRIMARY KEY \([^)]*\)", r"\1", schema)
    schema = re.sub(r"\bUHUGEINT\b", "UUID    ", schema)
    return re.sub(r"\bHUGEINT\b", "DECIMAL(38, 0)", schema)


# Raised when _migrate learns something new, so that every store runs it once more.
_MIGRATIONS = 1


def _schema_fingerprint(ducklake: bool) -> str:
    text = "\n".join(
        (SCHEMA, counting_state.SCHEMA, RESULTS_SCHEMA, RESULTS_COLUMNS_ADDED, str(_MIGRATIONS))
    )
    return hashlib.sha256(f"{text}{ducklake}".encode()).hexdigest()[:16]


def _schema_is_current(connection: duckdb.DuckDBPyConnection, ducklake: bool) -> bool:
    """The store was set up by this schema: opening it can skip the ~50 statements of
    _create_tables (each costs DuckLake a round trip to its catalog)."""
    try:
        row = connection.execute("SELECT fingerprint FROM store_schema").fetchone()
    except duckdb.CatalogException:
        return False
    return row is not None and row[0] == _schema_fingerprint(ducklake)


def _create_tables(connection: duckdb.DuckDBPyConnection, ducklake: bool) -> None:
    """Create what is missing and bring older stores up to date."""
    in_terms = _for_ducklake if ducklake else str
    connection.execute(in_terms(SCHEMA))
    counting_state.drop_outdated(connection)
    connection.execute(in_terms(counting_state.SCHEMA))
    connection.execute(in_terms(RESULTS_SCHEMA))
    connection.execute(RESULTS_COLUMNS_ADDED)
    _migrate(connection)
    connection.execute("DELETE FROM store_schema")
    connection.execute(
        "INSERT INTO store_schema VALUES (?, ?)", [_schema_fingerprint(ducklake), utc_now()]
    )


def _migrate(connection: duckdb.DuckDBPyConnection) -> None:
    has_key = connection.execute(
        "SELECT count(*) FROM duckdb_columns() "
        "WHERE table_name = 'events' AND column_name = 'event_key' "
        "AND database_name = current_database()"
    ).fetchall()[0][0]
    if not has_key:
        connection.execute("BEGIN TRANSACTION")
        connection.execute(_MIGRATE_EVENTS)
        connection.execute("COMMIT")
    # Stores from before events could carry a value.
    connection.execute("ALTER TABLE events ADD COLUMN IF NOT EXISTS value DOUBLE")
    # ... or properties.
    connection.execute("ALTER TABLE events ADD COLUMN IF NOT EXISTS properties VARCHAR")
    # ... or be left for the counting fold (parallel runs).
    connection.execute("ALTER TABLE events ADD COLUMN IF NOT EXISTS range_start BIGINT")
    connection.execute("ALTER TABLE ingested_ranges ADD COLUMN IF NOT EXISTS counted BOOLEAN")


class EventStore:
    """A connection to the store; use `EventStore.open(location)` as a context manager."""

    def __init__(
        self, connection: duckdb.DuckDBPyConnection, location: StoreLocation | None = None
    ) -> None:
        self.connection = connection
        self.location = location

    @classmethod
    @contextmanager
    def open(
        cls,
        location: StoreLocation,
        read_only: bool = False,
        memory_limit: str | None = None,
        lock_wait_s: float = WRITER_LOCK_WAIT_S,
        hold_writer_lock: bool = True,
    ) -> Iterator[EventStore]:
        """The store file, or the DuckLake tables (docs/scale.md). A writer waits up to
        `lock_wait_s` while another process holds the store: the file (a run, or an outside
        reader such as diana-analyze or a test), or DuckLake's writer lock (lake.py), which
        readers do not need. Without `hold_writer_lock` (DuckLake only) the connection is
        writable but the lock is not taken: the caller takes it with `writer_held()` for
        each piece of work that writes, or, appending as a parallel ingestion run, not at
        all (under `partitions_held`, leaving the counting to the fold)."""
        ducklake = isinstance(location, DuckLakeSettings)
        if not hold_writer_lock and not ducklake:
            raise ValueError("the DuckDB file is held by one writer from open to close")
        with ExitStack() as held:
            if ducklake:
                if not read_only and hold_writer_lock:
                    held.enter_context(lake.writer_lock(location, lock_wait_s))
                connection = lake.connect(location, read_only, _spill_folder(held))
            else:
                if not read_only:
                    location.parent.mkdir(parents=True, exist_ok=True)
                spill = _readers_spill_folder(location) if read_only else None
                connection = _connect(location, read_only, lock_wait_s, spill)
            held.callback(connection.close)  # before the writer lock is let go
            connection.execute(_HASH_KEY.format(_HASH[ducklake]))
            if memory_limit is not None:
                connection.execute(f"SET memory_limit = '{memory_limit}'")
            if not read_only and not _schema_is_current(connection, ducklake):
                with ExitStack() as setting_up:
                    if not hold_writer_lock:  # the tables are set up by one process at a time
                        setting_up.enter_context(lake.writer_lock(location, lock_wait_s))
                    if not _schema_is_current(connection, ducklake):
                        _create_tables(connection, ducklake)
            yield cls(connection, location)

    @contextmanager
    def writer_held(self, wait_s: float = WRITER_LOCK_WAIT_S) -> Iterator[None]:
        """The writer lock of a DuckLake store opened without it, for the work inside (the
        file's connection holds the file already)."""
        if isinstance(self.location, DuckLakeSettings):
            with lake.writer_lock(self.location, wait_s):
                yield
        else:
            yield

    @contextmanager
    def partitions_held(
        self, topic: str, partitions: list[int], wait_s: float = WRITER_LOCK_WAIT_S
    ) -> Iterator[None]:
        """While storing these partitions' offsets, no other process stores any of them (on
        DuckLake, where parallel runs append side by side; the file has one writer anyway)."""
        if isinstance(self.location, DuckLakeSettings):
            with lake.partition_locks(self.location, topic, partitions, wait_s):
                yield
        else:
            yield

    def beside(self) -> duckdb.DuckDBPyConnection | None:
        """A second connection to the open DuckDB file, for work in transactions of its own
        beside this connection's (the caller closes it); None on DuckLake, whose one writer
        commits one transaction at a time."""
        if isinstance(self.location, DuckLakeSettings):
            return None
        connection = self.connection.cursor()
        connection.execute(_HASH_KEY.format(_HASH[False]))
        return connection

    @classmethod
    @contextmanager
    def open_when_free(
        cls, location: StoreLocation, timeout_s: float = 60.0
    ) -> Iterator[EventStore]:
        """Read-only, waiting while a run holds the file (DuckDB lets no other process open
        it while one writes). Raises FileNotFoundError or, after the timeout, DuckDB's
        IOException."""
        if isinstance(location, Path) and not location.exists():
            raise FileNotFoundError(f"no event store at {location}")
        with cls.open(location, read_only=True, lock_wait_s=timeout_s) as store:
            yield store

    # ---- the ledger ---------------------------------------------------------------------------

    def uncovered(self, topic: str, offset_range: OffsetRange) -> list[OffsetRange]:
        """The parts of the range that no ledger row covers yet (all of it, for a new range;
        the rest of it, after a run that stopped between chunks)."""
        rows = self.connection.execute(
            "SELECT start_offset, end_offset FROM ingested_ranges WHERE topic = ? "
            "AND kafka_partition = ? AND end_offset > ? AND start_offset < ? "
            "ORDER BY start_offset",
            [topic, offset_range.partition, offset_range.start, offset_range.end],
        ).fetchall()
        gaps, position = [], offset_range.start
        for start, end in rows:
            if start > position:
                gaps.append(OffsetRange(offset_range.partition, position, start))
            position = max(position, end)
        if position < offset_range.end:
            gaps.append(OffsetRange(offset_range.partition, position, offset_range.end))
        return gaps

    def ingested(self, topic: str, offset_range: OffsetRange) -> bool:
        """Every offset of the range is in the ledger."""
        return not self.uncovered(topic, offset_range)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside is stored together or not at all."""
        self.connection.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    def retried(self, body: Callable[[], T], attempts: int = COMMIT_ATTEMPTS) -> T:
        """body() in a transaction; when DuckLake refuses the commit because another
        writer's commit conflicts with it, rolled back and run again (up to `attempts` in
        all). `body` must start from scratch each time: whatever it counts, it counts inside.
        The locks (lake.py) keep conflicts rare; this keeps them from failing a run."""
        for attempt in range(1, attempts + 1):
            try:
                with self.transaction():
                    return body()
            except duckdb.TransactionException as exc:
                if not lake.is_commit_conflict(exc) or attempt == attempts:
                    raise
                log.warning(
                    "commit conflict, attempt %d of %d; running the transaction again: %s",
                    attempt, attempts, str(exc).splitlines()[-1],
                )  # fmt: skip
                time.sleep(CONFLICT_BACKOFF_S * attempt)
        raise AssertionError("unreachable")

    def record_range(
        self,
        topic: str,
        offset_range: OffsetRange,
        run_id: str | None,
        counts: WriteCounts,
        lost: int,
        counted: bool = True,
    ) -> None:
        """The ledger row of a stored range; `counted=False` when its events were left for
        the counting fold (add_events' range_start)."""
        self.connection.execute(
            "INSERT INTO ingested_ranges (topic, kafka_partition, start_offset, end_offset, "
            "run_id, events, duplicates, rejected, lost, ingested_at, counted) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                topic,
                offset_range.partition,
                offset_range.start,
                offset_range.end,
                run_id,
                counts.events,
                counts.duplicates,
                counts.rejected,
                lost,
                utc_now(),
                counted,
            ],
        )

    # ---- rows ---------------------------------------------------------------------------------

    def add_events(
        self,
        topic: str,
        columns: EventColumns,
        counts: WriteCounts,
        only_window: datetime | None = None,
        rules: CountingRules | None = None,
        range_start: int | None = None,
    ) -> None:
        """Insert the events that are new (see the module's docstring on duplicates); within
        the batch the first position of an event wins. With `only_window`, events of other
        windows are left out. With `rules`, the new events are merged into the counting state
        too (call inside `transaction()`, so that the two are stored together); with
        `range_start` instead, they are marked as the events of that ledger range, for the
        counting fold (counting/fold.py)."""
        if not len(columns):
            return
        # NumPy arrays: DuckDB scans them for a fraction of a DataFrame's cost to build.
        incoming = {
            "kafka_partition": np.array(columns.kafka_partition, dtype=np.int64),
            "kafka_offset": np.array(columns.kafka_offset, dtype=np.int64),
            "event_id": np.array(columns.event_id, dtype=object),
            "event_type": np.array(columns.event_type, dtype=object),
            "test_id": np.array(columns.test_id, dtype=object),
            "variant": np.array(columns.variant, dtype=object),
            "user_id": np.array(columns.user_id, dtype=object),
            "event_us": np.array(columns.event_us, dtype=np.int64),
            "window_us": np.array(columns.window_us, dtype=np.int64),
            "value": np.array(columns.value, dtype=np.float64),
        }
        # DuckDB 1.5 cannot scan an object array that holds only None (a batch of events
        # without properties): such a batch registers no properties column at all.
        properties = "NULL::VARCHAR"
        if any(p is not None for p in columns.properties):
            incoming["properties"] = np.array(columns.properties, dtype=object)
            properties = "properties::VARCHAR"
        window_us = None if only_window is None else to_microseconds(only_window)
        copies = len(set(columns.event_id)) < len(columns)
        times = incoming["event_us"]
        if window_us is not None:
            times = times[incoming["window_us"] == window_us]
        if not len(times):
            return
        self.connection.register("incoming_events", incoming)
        try:
            self.connection.execute(
                _NEW_EVENTS.format(properties=properties) + (_FIRST_COPIES if copies else ""),
                {
                    "topic": topic,
                    "window_us": window_us,
                    "range_start": range_start,
                    "first_us": int(times.min()),
                    "last_us": int(times.max()),
                },
            )
            self.connection.execute(
                "INSERT INTO events BY NAME SELECT *, ? AS ingested_at FROM new_events", [utc_now()]
            )
            per_window = self.connection.execute(
                "SELECT window_start, count(*) FROM new_events GROUP BY window_start"
            ).fetchall()
            if rules is not None:
                new = sum(count for _, count in per_window)
                counting_state.merge_batch(self.connection, rules, "new_events", new)
            self.connection.execute("DROP TABLE new_events")
        finally:
            self.connection.unregister("incoming_events")
        stored = 0
        for window_start, count in per_window:
            counts.events_by_window[window_start] += count
            stored += count
        if window_us is not None:
            considered = sum(1 for w in columns.window_us if w == window_us)
        else:
            considered = len(columns)
        counts.duplicates += considered - stored

    def add_rejected(
        self, topic: str, rows: Iterable[tuple[int, int, bytes | None, str]], counts: WriteCounts
    ) -> None:
        """Insert (partition, offset, raw, reason) rows; a position already stored is skipped."""
        batch = pd.DataFrame(
            [(topic, p, o, raw, reason) for p, o, raw, reason in rows],
            columns=["topic", "kafka_partition", "kafka_offset", "raw", "reason"],
        )
        if batch.empty:
            return
        self.connection.register("incoming_rejected", batch)
        try:
            # The positions not stored yet, found once: inserted, and their reasons counted
            # (no RETURNING: DuckLake lacks it).
            self.connection.execute(
                "CREATE OR REPLACE TEMP TABLE new_rejected AS SELECT * FROM incoming_rejected "
                "AS i WHERE NOT EXISTS (SELECT 1 FROM rejected_events AS r WHERE r.topic = "
                "i.topic AND r.kafka_partition = i.kafka_partition AND r.kafka_offset = "
                "i.kafka_offset)"
            )
            self.connection.execute(
                "INSERT INTO rejected_events SELECT topic, kafka_partition, kafka_offset, raw, "
                "reason, ? FROM new_rejected",
                [utc_now()],
            )
            reasons = self.connection.execute("SELECT reason FROM new_rejected").fetchall()
            self.connection.execute("DROP TABLE new_rejected")
        finally:
            self.connection.unregister("incoming_rejected")
        counts.rejected += len(reasons)
        counts.rejected_by_kind.update(rejection_kind(reason) for (reason,) in reasons)

    # ---- results of the statistics assets -------------------------------------------------------

    RESULT_TABLES = tuple(RESULT_COLUMNS)

    def replace_windows(
        self, table: str, window_starts: list[datetime], rows: list[dict[str, object]]
    ) -> None:
        """Replace the rows of these windows in a results table: re-materialising a window
        never duplicates it."""
        if table not in self.RESULT_TABLES:
            raise ValueError(f"not a results table: {table}")
        frame = pd.DataFrame(rows)
        self.connection.register("incoming_results", frame)

        def replace() -> None:
            self.connection.execute(
                f"DELETE FROM {table} WHERE window_start IN (SELECT unnest(?::TIMESTAMP[]))",
                [window_starts],
            )
            if rows:
                self.connection.execute(
                    f"INSERT INTO {table} BY NAME SELECT * FROM incoming_results"
                )

        try:
            self.retried(replace)
        finally:
            self.connection.unregister("incoming_results")

    def read_windows(self, table: str, window_starts: list[datetime]) -> list[dict[str, object]]:
        if table not in self.RESULT_TABLES:
            raise ValueError(f"not a results table: {table}")
        cursor = self.connection.execute(
            f"SELECT * FROM {table} WHERE window_start IN (SELECT unnest(?::TIMESTAMP[])) "
            "ORDER BY ALL",
            [window_starts],
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def read_window_range(
        self, table: str, start: datetime | None, end: datetime | None
    ) -> list[dict[str, object]]:
        """The rows of the windows starting in [start, end) (None: unbounded on that side);
        nothing when the table was never written."""
        if table not in self.RESULT_TABLES:
            raise ValueError(f"not a results table: {table}")
        exists = self.connection.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? "
            "AND database_name = current_database()",
            [table],
        ).fetchone()[0]
        if not exists:
            return []
        cursor = self.connection.execute(
            f"SELECT * FROM {table} WHERE (?::TIMESTAMP IS NULL OR window_start >= ?) "
            "AND (?::TIMESTAMP IS NULL OR window_start < ?) ORDER BY ALL",
            [start, start, end, end],
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    # ---- published allocations ------------------------------------------------------------------

    def add_allocation_version(self, version: AllocationVersion) -> None:
        """Record a version as published. Refused when it would take effect in the past
        (weights cannot have steered traffic that already came) or its number is taken."""
        if version.effective_from < utc_now():
            raise AllocationError(
                f"{version.test_id} v{version.version}: refusing to publish weights that take "
                f"effect in the past ({version.effective_from} UTC)"
            )
        rows = [
            (version.test_id, version.version, name, weight, order, version.effective_from,
             version.published_at, version.based_on_window)
            for order, (name, weight) in enumerate(version.weights.items())
        ]  # fmt: skip
        taken = self.connection.execute(
            "SELECT count(*) FROM allocation_versions WHERE test_id = ? AND version = ?",
            [version.test_id, version.version],
        ).fetchone()[0]
        if taken:
            raise AllocationError(
                f"{version.test_id}: version {version.version} was published already"
            )
        self.connection.executemany(
            "INSERT INTO allocation_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows
        )

    def allocation_versions(
        self, test_id: str | None = None, latest: bool = False
    ) -> list[AllocationVersion]:
        """The published versions (of one test, or all), oldest first; with `latest`, each
        test's last one only."""
        rows = self.connection.execute(
            "SELECT test_id, version, variant, weight, effective_from, published_at, "
            "based_on_window FROM allocation_versions WHERE (?::VARCHAR IS NULL OR test_id = ?) "
            "QUALIFY NOT ? OR version = max(version) OVER (PARTITION BY test_id) "
            "ORDER BY test_id, version, variant_order",
            [test_id, test_id, latest],
        ).fetchall()
        versions: dict[tuple[str, int], list[tuple]] = {}
        for row in rows:
            versions.setdefault((row[0], row[1]), []).append(row)
        return [
            AllocationVersion(test, number, {r[2]: r[3] for r in parts}, parts[0][4],
                              parts[0][5], parts[0][6])
            for (test, number), parts in versions.items()
        ]  # fmt: skip

    # ---- reading ------------------------------------------------------------------------------

    def count_events(self, window_start: datetime | None = None) -> int:
        if window_start is None:
            return self.connection.execute("SELECT count(*) FROM events").fetchone()[0]
        return self.connection.execute(
            "SELECT count(*) FROM events WHERE window_start = ?", [window_start]
        ).fetchone()[0]

    def ingested_end(self, topic: str) -> dict[int, int]:
        """Per partition, the end of the highest range in the ledger."""
        rows = self.connection.execute(
            "SELECT kafka_partition, max(end_offset) FROM ingested_ranges WHERE topic = ? "
            "GROUP BY kafka_partition",
            [topic],
        ).fetchall()
        return dict(rows)
