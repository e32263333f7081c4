"""Console sink: one readable log line per posterior record, `Posterior ► {...}`, in the run's
logs (the Dagster UI shows them under the run; the terminal shows them under `dagster job
execute`).

A log cannot be read back, so load_input reads the same records from DuckDB's `posteriors`
table, the source of truth the records were taken from."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableIOManager, InputContext, OutputContext

from diana_pipeline.io_managers.records import Record, to_json
from diana_pipeline.partitions import span_of
from diana_pipeline.store import EventStore

PREFIX = "Posterior ► "


class ConsoleIOManager(ConfigurableIOManager):
    """Logs each materialised window's posterior records."""

    duckdb_path: str

    def handle_output(self, context: OutputContext, obj: list[Record]) -> None:
        for record in obj:
            context.log.info(PREFIX + to_json(record))
        context.add_output_metadata({"records": len(obj), "sink": "console"})

    def load_input(self, context: InputContext) -> list[Record]:
        span = span_of(context)
        with EventStore.open(Path(self.duckdb_path)) as store:
            return store.read_window_range("posteriors", span.start, span.end)
