"""Dagster resources: how assets, sensors and jobs reach the configuration and the servers."""

from __future__ import annotations

from pathlib import Path

from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.resources.event_store import EventStoreResource
from diana_pipeline.resources.experiments import ExperimentsResource
from diana_pipeline.resources.kafka import KafkaResource


def pipeline_resources(config: ExperimentsConfig, config_file: Path) -> dict[str, object]:
    """Every resource of the pipeline, set up from `config` (loaded from `config_file`, which
    runs load again: the same file and environment give the same settings)."""
    # Imported here: the IO managers are built on this package's resources (the event store).
    from diana_pipeline.io_managers import (
        ALLOCATION_SINK,
        POSTERIOR_SINK,
        allocation_sink,
        posterior_sink,
    )

    kafka = config.infrastructure.kafka
    return {
        "experiments": ExperimentsResource(config_file=str(config_file)),
        "event_store": EventStoreResource.of(config.infrastructure),
        "kafka": KafkaResource(
            bootstrap_servers=kafka.bootstrap_servers,
            topic=kafka.topic,
            consumer_group=kafka.consumer_group,
            topic_partitions=kafka.topic_partitions,
        ),
        POSTERIOR_SINK: posterior_sink(config),
        ALLOCATION_SINK: allocation_sink(config),
    }


__all__ = [
    "EventStoreResource",
    "ExperimentsResource",
    "KafkaResource",
    "pipeline_resources",
]
