"""DynamoDB sink: the records in the table `ab_posteriors` for dashboards
(sinks/dynamodb_table.py); the first write creates the table."""

from __future__ import annotations

from dagster import OutputContext

from diana_pipeline.io_managers.posterior_io_manager import PosteriorIOManager
from diana_pipeline.sinks.dynamodb_table import PosteriorTable
from diana_pipeline.sinks.records import Record
from diana_pipeline.windows import WindowSpan


class DynamoDBIOManager(PosteriorIOManager):
    """Puts each materialised window's posterior records into the DynamoDB table."""

    endpoint_url: str | None
    region: str
    table: str

    def _table(self) -> PosteriorTable:
        return PosteriorTable(self.endpoint_url, self.region, self.table)

    def write_to_sink(
        self, context: OutputContext, records: list[Record], span: WindowSpan
    ) -> dict[str, object]:
        table = self._table()
        table.ensure_table()
        written = table.write(records, span)
        context.log.info(
            "put %d posterior records into %s on %s", written, table.name, table.endpoint
        )
        return {"table": table.name, "endpoint": table.endpoint, "sink": "dynamodb"}

    def read_from_sink(self, span: WindowSpan) -> list[Record]:
        return self._table().read(span)
