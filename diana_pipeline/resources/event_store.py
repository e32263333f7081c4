"""The DuckDB event store as a Dagster resource: every asset, IO manager and job that reads
or writes the store opens it here, so where it lives, how long a run waits for it and how
much memory a run gives DuckDB are said once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from diana_pipeline.config import Infrastructure
from diana_pipeline.lake import DuckLakeSettings, StoreLocation
from diana_pipeline.store import EventStore

# Counting keeps a hash table per user: without a limit DuckDB's memory grows with the events
# counted (one process peaked at 430 MB for 1M events, 3.1 GB for 10M). With this limit it
# spills and stays flat (375 MB, 416 MB), for 1.5-2x the time (docs/reliability.md, Load).
DEFAULT_MEMORY_LIMIT = "256MB"
# A run waits this long for the store while another run holds it (a backfill of many windows,
# a rebuild of the counting state) before it fails and is retried.
RUN_LOCK_WAIT_S = 900.0


class EventStoreResource(ConfigurableResource):
    """The store (experiments.yaml `infrastructure`: the DuckDB file, or the DuckLake tables)
    and the memory a run's connection may use before DuckDB spills to disk.

    In a run, the first `open()` connects and the connection stays until the run ends: DuckDB
    lets one process write at a time, and a run that kept the file from step to step runs
    its steps back to back, while the run started after it waits for the file (dagster.yaml:
    pool `duckdb` with run granularity lets one more run start). On DuckLake the writer lock
    is held per `open()` instead (below). Outside a run (tests, scripts), each `open()` is its
    own connection."""

    path: str = ""
    # the DuckLake store instead of the file (experiments.yaml `infrastructure.ducklake`)
    ducklake_catalog: str = ""
    ducklake_data_path: str = ""
    memory_limit: str = DEFAULT_MEMORY_LIMIT
    _held: ExitStack | None = PrivateAttr(default=None)
    _store: EventStore | None = PrivateAttr(default=None)

    @classmethod
    def of(cls, infrastructure: Infrastructure) -> EventStoreResource:
        location = infrastructure.store_location
        if isinstance(location, DuckLakeSettings):
            return cls(ducklake_catalog=location.catalog, ducklake_data_path=location.data_path)
        return cls(path=str(location))

    @property
    def location(self) -> StoreLocation:
        if self.ducklake_catalog:
            return DuckLakeSettings(self.ducklake_catalog, self.ducklake_data_path)
        return Path(self.path)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._held = ExitStack()

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._held is not None:
            self._held.close()
        self._held = self._store = None

    @contextmanager
    def open(
        self, memory_limit: str | None = None, appends_only: bool = False
    ) -> Iterator[EventStore]:
        """A writable connection, at this resource's memory limit unless the caller needs a
        narrower one (ingestion holds only a chunk at a time). `appends_only` (parallel
        ingestion runs on DuckLake) gets a connection of its own without the writer lock.

        In a run on DuckLake the connection stays, as for the file, but the writer lock is
        held per `open()` (a step), not per run: the steps of parallel runs and of the
        automation's runs interleave instead of queueing for whole runs. Each step reads its
        inputs from the store under the lock, so the last step to write a window's rows
        computed them from the newest counts."""
        limit = memory_limit or self.memory_limit
        if self._held is None or appends_only:
            with EventStore.open(
                self.location, memory_limit=limit, lock_wait_s=RUN_LOCK_WAIT_S,
                hold_writer_lock=not appends_only,
            ) as store:  # fmt: skip
                yield store
            return
        ducklake = isinstance(self.location, DuckLakeSettings)
        if self._store is None:
            opened = EventStore.open(
                self.location, memory_limit=limit, lock_wait_s=RUN_LOCK_WAIT_S,
                hold_writer_lock=not ducklake,
            )  # fmt: skip
            self._store = self._held.enter_context(opened)
        else:
            self._store.connection.execute(f"SET memory_limit = '{limit}'")
        with self._store.writer_held(RUN_LOCK_WAIT_S):
            yield self._store
