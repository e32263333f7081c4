"""Where a bandit's published allocations go (docs/bandit.md): the compacted Kafka topic
`allocation_topic`, `allocations.json` in the CSV folder, and the DynamoDB table
`ab_allocations` when the sink is DynamoDB. Each run hands over every bandit test's latest
version, so a version that a failed run did not get everywhere is sent again by the next."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableIOManager, Failure, InputContext, OutputContext

from diana_pipeline.allocations import AllocationVersion
from diana_pipeline.producer import ProducerError
from diana_pipeline.sinks.allocation_file import AllocationFile
from diana_pipeline.sinks.allocation_table import AllocationTable
from diana_pipeline.sinks.dynamodb_table import DynamoDBError
from diana_pipeline.sinks.kafka_topic import AllocationTopic


class AllocationIOManager(ConfigurableIOManager):
    """Publishes allocation versions to every place assignment reads them from."""

    kafka_bootstrap_servers: str
    allocation_topic: str
    directory: str  # the CSV folder
    dynamodb_endpoint_url: str | None = None
    dynamodb_region: str = "us-east-1"
    dynamodb_table: str | None = None  # None: the sink is not DynamoDB

    def handle_output(self, context: OutputContext, obj: list[AllocationVersion]) -> None:
        if not obj:
            context.add_output_metadata({"published": 0})
            return
        metadata: dict[str, object] = {"published": len(obj)}
        metadata["file"] = str(AllocationFile(Path(self.directory)).write(obj))
        try:
            AllocationTopic(self.kafka_bootstrap_servers, self.allocation_topic).write(obj)
        except ProducerError as exc:
            raise Failure(f"publishing allocations to {self.allocation_topic}: {exc}") from None
        metadata["kafka_topic"] = self.allocation_topic
        if self.dynamodb_table:
            table = AllocationTable(self.dynamodb_endpoint_url, self.dynamodb_region,
                                    self.dynamodb_table)  # fmt: skip
            try:
                table.ensure_table()
                table.write(obj)
            except DynamoDBError as exc:
                raise Failure(f"publishing allocations: {exc}") from None
            metadata["dynamodb_table"] = self.dynamodb_table
        context.add_output_metadata(metadata)

    def load_input(self, context: InputContext) -> list[AllocationVersion]:
        return list(AllocationFile(Path(self.directory)).read().values())
