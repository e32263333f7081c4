"""What every posterior IO manager does, whichever sink it writes to: write a run's records to
the sink, then publish them to the Kafka topic when experiments.yaml sets `output_topic`, and
say both in the output's metadata. load_input reads the records of its windows back."""

from __future__ import annotations

from abc import abstractmethod

from dagster import ConfigurableIOManager, Failure, InputContext, OutputContext

from diana_pipeline.partitions import span_of
from diana_pipeline.producer import ProducerError
from diana_pipeline.sinks.kafka_topic import PosteriorTopic
from diana_pipeline.sinks.records import Record
from diana_pipeline.windows import WindowSpan


class PosteriorIOManager(ConfigurableIOManager):
    """A sink for posterior records, and the Kafka topic (`output_topic`) beside it."""

    kafka_bootstrap_servers: str
    output_topic: str | None = None

    @abstractmethod
    def write_to_sink(
        self, context: OutputContext, records: list[Record], span: WindowSpan
    ) -> dict[str, object]:
        """Write the records of the windows in `span`; returns the output metadata that says
        which sink and where in it."""

    @abstractmethod
    def read_from_sink(self, span: WindowSpan) -> list[Record]:
        """The records of the windows in `span`."""

    def handle_output(self, context: OutputContext, obj: list[Record]) -> None:
        span = span_of(context)
        metadata = {"records": len(obj), **self.write_to_sink(context, obj, span)}
        if self.output_topic:
            topic = PosteriorTopic(self.kafka_bootstrap_servers, self.output_topic)
            try:
                metadata["published_to_kafka"] = topic.write(obj, span)
            except ProducerError as exc:
                raise Failure(f"publishing to Kafka topic {self.output_topic}: {exc}") from None
            metadata["kafka_topic"] = self.output_topic
        context.add_output_metadata(metadata)

    def load_input(self, context: InputContext) -> list[Record]:
        return self.read_from_sink(span_of(context))
