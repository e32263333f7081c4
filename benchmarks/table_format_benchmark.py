"""Table-format benchmark: the shared event store as DuckLake tables (what Diana uses) beside
Apache Iceberg (pyiceberg, its SQL catalog in the same PostgreSQL), on what the store does
(issue 24 asked for both to be measured before choosing; docs/scale.md says why DuckLake).

Both formats keep their catalog in a private PostgreSQL (scale profile) and their files on
local disk, and store the same stream: batches of 50,000 new events and 1,000 redeliveries
of the batch before's, in time order, in one hourly window. Each batch is checked for
duplicates (the stored events of its span of time), appended and recorded in the ledger,
in one commit:
- DuckLake: Diana's own `EventStore.add_events` and `record_range`, one transaction over the
  events and the ledger table;
- Iceberg: Iceberg commits one table at a time, so the ledger row rides in the append's
  snapshot properties (the way Iceberg's Flink and Kafka Connect sinks keep their offsets);
  the check scans the table with a filter on the batch's span of time (pyiceberg prunes
  files by their statistics) and DuckDB finds the new events in that.
Then: one window read back (events per variant and type), and two writers appending to the
same table at once, each its own batches, counting the commits refused and run again.

    .venv/bin/python -m benchmarks.table_format_benchmark              # docs/benchmarks.md
    .venv/bin/python -m benchmarks.table_format_benchmark --batches 10 --no-write
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import ClassVar

import duckdb
import numpy as np
import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThanOrEqual
from sqlalchemy.engine import URL

from benchmarks.backfill_benchmark import best_of, progress
from benchmarks.duplicate_check_benchmark import BATCH, REDELIVERED, WINDOW, batch
from diana_pipeline.events import EventColumns
from diana_pipeline.harness.docs import BENCHMARKS_PAGE, write_section
from diana_pipeline.harness.postgres import PostgresForTests, postgres_for_tests
from diana_pipeline.local_stack.postgres import SUPERUSER
from diana_pipeline.markdown import table
from diana_pipeline.store import EventStore, OffsetRange, StoreLocation, WriteCounts
from diana_pipeline.windows import from_microseconds

TOPIC = "web"
WRITERS = 2  # appending at once to one table


def stored_columns(columns: EventColumns) -> pa.Table:
    """The rows Diana stores for a batch, as DuckDB builds them (its key: the md5's bytes)."""
    connection = duckdb.connect()
    incoming = {
        name: np.array(getattr(columns, name))
        for name in ("kafka_partition", "kafka_offset", "event_id", "event_type", "test_id",
                     "variant", "user_id", "event_us", "window_us")
    }  # fmt: skip
    connection.register("incoming", incoming)
    rows = connection.sql(
        "SELECT unhex(md5(event_id)) AS event_key, event_id, event_type, test_id, variant, "
        "user_id, make_timestamp(event_us) AS event_time, make_timestamp(window_us) AS "
        f"window_start, '{TOPIC}' AS topic, kafka_partition::INTEGER AS kafka_partition, "
        "kafka_offset::BIGINT AS kafka_offset, NULL::DOUBLE AS value, "
        "NULL::VARCHAR AS properties FROM incoming"
    ).to_arrow_table()
    # DuckDB hands NumPy's strings over as dictionaries, which Iceberg has no type for.
    plain = [
        pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
        for f in rows.schema
    ]
    return rows.cast(pa.schema(plain))


class IcebergStore:
    """The events as one Iceberg table, the ledger in its snapshots' properties."""

    def __init__(self, postgres: PostgresForTests, folder: Path) -> None:
        database = postgres.new_lake(folder)["DIANA_DUCKLAKE_DATABASE"]
        self.catalog = SqlCatalog(
            "diana",
            uri=URL.create(
                "postgresql+psycopg2",
                username=SUPERUSER,
                password=postgres.password,
                host="127.0.0.1",
                port=postgres.port,
                database=database,
            ).render_as_string(hide_password=False),
            warehouse=f"file://{folder}/warehouse",
        )
        self.catalog.create_namespace("diana")
        schema = stored_columns(batch(0, 1)).schema
        self.table = self.catalog.create_table("diana.events", schema=schema)

    def add_batch(self, columns: EventColumns, offset_range: OffsetRange) -> int:
        """Check, append and record one batch in one commit; returns the duplicates found."""
        table = self.catalog.load_table("diana.events")  # what another writer committed
        first, last = min(columns.event_us), max(columns.event_us)
        in_span = And(
            GreaterThanOrEqual("event_time", from_microseconds(first).isoformat()),
            LessThanOrEqual("event_time", from_microseconds(last).isoformat()),
        )
        stored = table.scan(row_filter=in_span, selected_fields=("event_time", "event_key"))
        connection = duckdb.connect()
        connection.register("stored", stored.to_arrow())
        connection.register("incoming", stored_columns(columns))
        new = connection.sql(
            "SELECT * FROM incoming AS i WHERE NOT EXISTS (SELECT 1 FROM stored AS s "
            "WHERE s.event_time = i.event_time AND s.event_key = i.event_key) "
            "QUALIFY row_number() OVER (PARTITION BY event_time, event_key "
            "ORDER BY kafka_partition, kafka_offset) = 1"
        ).to_arrow_table()
        ledger = {"diana.range": f"{TOPIC}:{offset_range}", "diana.events": str(new.num_rows)}
        table.append(new, snapshot_properties=ledger)
        return len(columns) - new.num_rows

    def read_window(self) -> list[tuple]:
        rows = self.table.refresh().scan(
            row_filter=EqualTo("window_start", WINDOW.isoformat()),
            selected_fields=("variant", "event_type"),
        )
        connection = duckdb.connect()
        connection.register("window_events", rows.to_arrow())
        return connection.sql(
            "SELECT variant, event_type, count(*) FROM window_events GROUP BY ALL ORDER BY ALL"
        ).fetchall()

    def close(self) -> None:
        pass


class LakeStore:
    """Diana's DuckLake store, as ingestion writes it: each writer (thread) keeps its store
    open, as a run does, beside the others (partition groups: no writer lock)."""

    def __init__(self, location: StoreLocation) -> None:
        self.location = location
        self.opened = ExitStack()
        self.mine = threading.local()

    def store(self) -> EventStore:
        if not hasattr(self.mine, "store"):
            self.mine.store = self.opened.enter_context(
                EventStore.open(self.location, hold_writer_lock=False)
            )
        return self.mine.store

    def close(self) -> None:
        self.opened.close()

    def add_batch(self, columns: EventColumns, offset_range: OffsetRange) -> int:
        store = self.store()

        def body() -> WriteCounts:
            counts = WriteCounts()
            store.add_events(TOPIC, columns, counts)
            store.record_range(TOPIC, offset_range, "benchmark", counts, lost=0)
            return counts

        return store.retried(body).duplicates

    def read_window(self) -> list[tuple]:
        return (
            self.store()
            .connection.execute(
                "SELECT variant, event_type, count(*) FROM events WHERE window_start = ? "
                "GROUP BY ALL ORDER BY ALL",
                [WINDOW],
            )
            .fetchall()
        )


def offsets(columns: EventColumns, partition: int = 0) -> OffsetRange:
    return OffsetRange(partition, columns.kafka_offset[0], columns.kafka_offset[-1] + 1)


def one_writer(store: IcebergStore | LakeStore, batches: int) -> list[float]:
    """Seconds per batch, the batches one after the other."""
    seconds = []
    for number in range(batches):
        columns = batch(number, batches)
        started = time.perf_counter()
        duplicates = store.add_batch(columns, offsets(columns))
        seconds.append(time.perf_counter() - started)
        assert duplicates == (REDELIVERED if number else 0), duplicates
    return seconds


class RetriedCommits(logging.Handler):
    """Counts the commits a format refused and ran again, from its own log line: Diana's
    store (`EventStore.retried`) and pyiceberg each retry a conflicting commit themselves."""

    LINES: ClassVar[dict[str, str]] = {
        "diana_pipeline.store": "commit conflict",
        "pyiceberg.table": "concurrent update",
    }

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += self.LINES.get(record.name, "\0") in record.getMessage()

    def __enter__(self) -> RetriedCommits:
        for name in self.LINES:
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        for name in self.LINES:
            logging.getLogger(name).removeHandler(self)


def writers_at_once(add: Callable[[EventColumns, OffsetRange], int], batches: int) -> int:
    """WRITERS threads appending their own batches (a partition each) at once; how many of
    their commits were refused and run again."""

    def write(writer: int) -> None:
        for number in range(batches):
            columns = batch(number, batches)
            columns.event_id = [f"w{writer}-{e}" for e in columns.event_id]
            add(columns, offsets(columns, partition=writer))

    with RetriedCommits() as retried:
        threads = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return retried.count


def figures(label: str, store_of: Callable[[str], IcebergStore | LakeStore], batches: int):
    progress(f"{label}: {batches} batches, one writer")
    store = store_of("one")
    seconds = one_writer(store, batches)
    read = best_of(3, store.read_window)
    assert sum(n for *_, n in store.read_window()) == batches * BATCH
    store.close()
    progress(f"{label}: {WRITERS} writers at once")
    shared = store_of("shared")
    retried = writers_at_once(shared.add_batch, batches)
    assert sum(n for *_, n in shared.read_window()) == WRITERS * batches * BATCH
    shared.close()
    return (
        label,
        f"{statistics.median(seconds) * 1000:.0f}",
        f"{seconds[-1] * 1000:.0f}",
        f"{read * 1000:.0f}",
        retried,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=40, help="of 50,000 events each")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="diana-bench-") as folder:
        Path(folder).chmod(0o755)  # the scale profile's PostgreSQL runs as its own user
        progress("starting a private PostgreSQL (scale profile)")
        with postgres_for_tests() as postgres:
            os.environ["DIANA_POSTGRES_PASSWORD"] = postgres.password

            def lake(name: str) -> LakeStore:
                return LakeStore(postgres.new_lake_location(Path(folder) / f"lake-{name}"))

            def iceberg(name: str) -> IcebergStore:
                return IcebergStore(postgres, Path(folder) / f"iceberg-{name}")

            rows = [
                figures("DuckLake (Diana's store)", lake, args.batches),
                figures("Iceberg (pyiceberg)", iceberg, args.batches),
            ]
    rendered = table(
        ["format", "ms per batch (median)", "ms, the last batch",
         "ms to read the window", f"commits retried, {WRITERS} writers at once"],
        rows,
        align="lrrrr",
    )  # fmt: skip
    print(rendered)
    if not args.no_write:
        write_section(
            BENCHMARKS_PAGE,
            "table-format-benchmark",
            "The shared store's format: DuckLake beside Iceberg",
            "python -m benchmarks.table_format_benchmark "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            f"{args.batches} batches of {BATCH:,} new events and {REDELIVERED:,} "
            "redeliveries, in time order in one hourly window, each checked for duplicates, "
            "appended and recorded in the ledger in one commit; both catalogs in the same "
            "private PostgreSQL, the files on local disk. DuckLake: Diana's store (one "
            "transaction over the events and the ledger table, each writer's store kept "
            "open, as a run keeps it). Iceberg: pyiceberg, the ledger in the append's snapshot "
            "properties, the check a scan of the batch's span of time. The window read "
            f"back: events per variant and type, best of 3. {WRITERS} writers at once: "
            "threads appending their own batches (a partition each) to one table; each "
            "format runs a refused commit again itself.",
            rendered,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
