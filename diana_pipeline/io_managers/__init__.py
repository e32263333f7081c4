"""Where posterior records go: one IO manager per sink, chosen by `output_sink`."""

from __future__ import annotations

from dagster import ConfigurableIOManager

from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.io_managers.console import ConsoleIOManager
from diana_pipeline.io_managers.csv import CsvIOManager
from diana_pipeline.io_managers.dynamodb import DynamoDBIOManager

# The resource key of the sink that the published_posteriors asset writes through.
POSTERIOR_SINK = "posterior_sink"


def posterior_sink(config: ExperimentsConfig) -> ConfigurableIOManager:
    """The IO manager that experiments.yaml's output_sink names, set up from its settings."""
    infrastructure = config.infrastructure
    if config.output_sink == "csv":
        return CsvIOManager(directory=str(infrastructure.csv.directory))
    if config.output_sink == "dynamodb":
        return DynamoDBIOManager(
            endpoint_url=infrastructure.dynamodb.endpoint_url,
            region=infrastructure.dynamodb.region,
            table=infrastructure.dynamodb.table,
        )
    return ConsoleIOManager(duckdb_path=str(infrastructure.duckdb.path))


__all__ = [
    "POSTERIOR_SINK",
    "ConsoleIOManager",
    "CsvIOManager",
    "DynamoDBIOManager",
    "posterior_sink",
]
