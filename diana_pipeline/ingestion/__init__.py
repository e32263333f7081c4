"""Kafka → DuckDB, in three parts: the Kafka client (kafka_client), what the sensor asks for
(planning), and the runs that store it exactly once (runs; rebuild re-reads one window)."""

from diana_pipeline.ingestion.kafka_client import (
    KafkaUnavailableError,
    make_consumer,
    produced_span,
    watermarks,
)
from diana_pipeline.ingestion.planning import plan_runs, run_key
from diana_pipeline.ingestion.rebuild import rebuild_window
from diana_pipeline.ingestion.runs import IngestResult, ingest

__all__ = [
    "IngestResult",
    "KafkaUnavailableError",
    "ingest",
    "make_consumer",
    "plan_runs",
    "produced_span",
    "rebuild_window",
    "run_key",
    "watermarks",
]
