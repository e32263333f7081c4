"""Kafka's settings as a Dagster resource: the brokers and the events topic that the sensor,
the ingestion runs, traffic_job and the posteriors topic all use."""

from __future__ import annotations

from dagster import ConfigurableResource


class KafkaResource(ConfigurableResource):
    """experiments.yaml `infrastructure.kafka`."""

    bootstrap_servers: str
    topic: str
    consumer_group: str
    topic_partitions: int
