"""The DuckDB event store as a Dagster resource: every asset, IO manager and job that reads
or writes the store opens it here, so where it lives and how much memory a run gives DuckDB
are said once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster import ConfigurableResource

from diana_pipeline.store import EventStore

# Counting keeps a hash table per user: without a limit DuckDB's memory grows with the events
# counted (one process peaked at 430 MB for 1M events, 3.1 GB for 10M). With this limit it
# spills and stays flat (375 MB, 416 MB), for 1.5-2x the time (docs/reliability.md, Load).
DEFAULT_MEMORY_LIMIT = "256MB"


class EventStoreResource(ConfigurableResource):
    """The store file (experiments.yaml `infrastructure.duckdb.path`) and the memory a run's
    connection may use before DuckDB spills to disk."""

    path: str
    memory_limit: str = DEFAULT_MEMORY_LIMIT

    @contextmanager
    def open(self, memory_limit: str | None = None) -> Iterator[EventStore]:
        """A writable connection, at this resource's memory limit unless the caller needs a
        narrower one (ingestion holds only a chunk at a time)."""
        with EventStore.open(Path(self.path), memory_limit=memory_limit or self.memory_limit) as s:
            yield s
