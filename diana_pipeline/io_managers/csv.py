"""CSV sink: the records in `posteriors_<date>.csv` files in the configured folder
(sinks/csv_files.py), for offline plots and spreadsheets."""

from __future__ import annotations

from pathlib import Path

from dagster import OutputContext

from diana_pipeline.io_managers.posterior_io_manager import PosteriorIOManager
from diana_pipeline.sinks.csv_files import PosteriorCsvFiles
from diana_pipeline.sinks.records import Record
from diana_pipeline.windows import WindowSpan


class CsvIOManager(PosteriorIOManager):
    """Writes each materialised window's posterior records to posteriors_<date>.csv."""

    directory: str

    def write_to_sink(
        self, context: OutputContext, records: list[Record], span: WindowSpan
    ) -> dict[str, object]:
        files = PosteriorCsvFiles(Path(self.directory)).write(records, span)
        context.log.info(
            "wrote %d posterior records to %s", len(records), ", ".join(map(str, files))
        )
        return {"files": [str(f) for f in files], "sink": "csv"}

    def read_from_sink(self, span: WindowSpan) -> list[Record]:
        return PosteriorCsvFiles(Path(self.directory)).read(span)
