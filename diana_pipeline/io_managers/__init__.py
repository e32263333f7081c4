"""Where results leave: posterior records through one IO manager per sink (sinks/), chosen by
`output_sink`, each also publishing to the Kafka topic when `output_topic` is set
(posterior_io_manager.py); a bandit's allocations through allocation_io_manager.py."""

from __future__ import annotations

from dagster import ConfigurableIOManager

from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.io_managers.allocation_io_manager import AllocationIOManager
from diana_pipeline.io_managers.console import ConsoleIOManager
from diana_pipeline.io_managers.csv import CsvIOManager
from diana_pipeline.io_managers.dynamodb import DynamoDBIOManager
from diana_pipeline.io_managers.posterior_io_manager import PosteriorIOManager
from diana_pipeline.resources.event_store import EventStoreResource

# The resource keys of the sinks that the published_posteriors and published_allocation
# assets write through.
POSTERIOR_SINK = "posterior_sink"
ALLOCATION_SINK = "allocation_sink"


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
    store = EventStoreResource.of(infrastructure)
    return ConsoleIOManager(event_store=store, **topic)


def allocation_sink(config: ExperimentsConfig) -> AllocationIOManager:
    """The IO manager that publishes bandit allocations, set up from experiments.yaml."""
    infrastructure = config.infrastructure
    dynamodb = infrastructure.dynamodb
    return AllocationIOManager(
        kafka_bootstrap_servers=infrastructure.kafka.bootstrap_servers,
        allocation_topic=config.allocation_topic,
        directory=str(infrastructure.csv.directory),
        dynamodb_endpoint_url=dynamodb.endpoint_url,
        dynamodb_region=dynamodb.region,
        dynamodb_table=dynamodb.allocation_table if config.output_sink == "dynamodb" else None,
    )


__all__ = [
    "ALLOCATION_SINK",
    "POSTERIOR_SINK",
    "AllocationIOManager",
    "ConsoleIOManager",
    "CsvIOManager",
    "DynamoDBIOManager",
    "PosteriorIOManager",
    "allocation_sink",
    "posterior_sink",
]
