"""Kafka's settings as a Dagster resource: the brokers and the events topic that the sensor,
the ingestion runs and traffic_job use."""

from __future__ import annotations

from confluent_kafka import Consumer
from dagster import ConfigurableResource

from diana_pipeline.config import KafkaSettings
from diana_pipeline.ingestion.kafka_client import make_consumer


class KafkaResource(ConfigurableResource):
    """experiments.yaml `infrastructure.kafka`."""

    bootstrap_servers: str
    topic: str
    consumer_group: str
    topic_partitions: int

    def consumer(self, group: str | None = None) -> Consumer:
        """A consumer of the ingestion's group (or `group`), as ingestion reads: offsets are
        assigned, and committed only once the data is stored."""
        return make_consumer(self, group)

    def settings(self) -> KafkaSettings:
        """The same settings in experiments.yaml's form, for code that takes them so."""
        return KafkaSettings(
            bootstrap_servers=self.bootstrap_servers,
            topic=self.topic,
            consumer_group=self.consumer_group,
            topic_partitions=self.topic_partitions,
        )
