"""Where posterior records go: one IO manager per sink (sinks/), chosen by `output_sink`, each
also publishing to the Kafka topic when `output_topic` is set (posterior_io_manager.py)."""

from __future__ import annotations

from dagster import ConfigurableIOManager

from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.io_managers.console import ConsoleIOManager
from diana_pipeline.io_managers.csv import CsvIOManager
from diana_pipeline.io_managers.dynamodb import DynamoDBIOManager
from diana_pipeline.io_managers.posterior_io_manager import PosteriorIOManager
from diana_pipeline.resources.event_store import EventStoreResource

# The resource key of the sink that the published_posteriors asset writes through.
POSTERIOR_SINK = "posterior_sink"


def posterior_sink(config: ExperimentsConfig) -> ConfigurableIOManager:
    """The IO manager that experiments.yaml's output_sink names, set up from its settings."""
    infrastructure = config.infrastructure
    topic = {
        "kafka_bootstrap_servers": infrastructure.kafka.bootstrap_servers,
        "output_topic": config.output_topic,
    }
    if config.output_sink == "csv":
        return CsvIOManager(directory=str(infrastructure.csv.directory), **topic)
    if config.output_sink == "dynamodb":
        return DynamoDBIOManager(
            endpoint_url=infrastructure.dynamodb.endpoint_url,
            region=infrastructure.dynamodb.region,
            table=infrastructure.dynamodb.table,
            **topic,
        )
    store = EventStoreResource(path=str(infrastructure.duckdb.path))
    return ConsoleIOManager(event_store=store, **topic)


__all__ = [
    "POSTERIOR_SINK",
    "ConsoleIOManager",
    "CsvIOManager",
    "DynamoDBIOManager",
    "PosteriorIOManager",
    "posterior_sink",
]
