"""Kafka → DuckDB, in three parts: the Kafka client (kafka_client), what the sensor asks for
(planning), and the runs that store it exactly once (runs; rebuild re-reads one window)."""

from diana_pipeline.ingestion.kafka_client import (
    KafkaUnavailableError,
    consumer_lag,
    make_consumer,
    produced_span,
    watermarks,
)
from diana_pipeline.ingestion.planning import (
    partition_groups,
    plan_runs,
    read_cursor,
    run_key,
    write_cursor,
)
from diana_pipeline.ingestion.rebuild import rebuild_window
from diana_pipeline.ingestion.runs import IngestResult, ingest

__all__ = [
    "IngestResult",
    "KafkaUnavailableError",
    "consumer_lag",
    "ingest",
    "make_consumer",
    "partition_groups",
    "plan_runs",
    "produced_span",
    "read_cursor",
    "rebuild_window",
    "run_key",
    "watermarks",
    "write_cursor",
]
