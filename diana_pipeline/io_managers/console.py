"""Console sink: the records as `Posterior ► {...}` lines in the run's logs (the Dagster UI
shows them under the run; the terminal shows them under `dagster job execute`).

A log cannot be read back, so load_input reads the same records from DuckDB's `posteriors`
table, the source of truth the records were taken from."""

from __future__ import annotations

from dagster import OutputContext

from diana_pipeline.io_managers.posterior_io_manager import PosteriorIOManager
from diana_pipeline.resources.event_store import EventStoreResource
from diana_pipeline.sinks.console_log import PosteriorLog
from diana_pipeline.sinks.records import Record
from diana_pipeline.windows import WindowSpan


class ConsoleIOManager(PosteriorIOManager):
    """Logs each materialised window's posterior records."""

    event_store: EventStoreResource

    def write_to_sink(
        self, context: OutputContext, records: list[Record], span: WindowSpan
    ) -> dict[str, object]:
        PosteriorLog(context.log).write(records, span)
        return {"sink": "console"}

    def read_from_sink(self, span: WindowSpan) -> list[Record]:
        with self.event_store.open() as store:
            return store.read_window_range("posteriors", span.start, span.end)
