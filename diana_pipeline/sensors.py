"""The Kafka sensor: turns new offsets on the events topic into ingestion runs."""

import json

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    JobDefinition,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.ingestion import (
    KafkaUnavailableError,
    make_consumer,
    plan_runs,
    run_key,
    watermarks,
)
from diana_pipeline.resources import ExperimentsResource
from diana_pipeline.run_health import fail_dead_runs

MAX_RUNS_PER_TICK = 20
WAITING = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING]


def build_kafka_sensor(config: ExperimentsConfig, ingest_job: JobDefinition):
    @sensor(
        name="kafka_events_sensor",
        job=ingest_job,
        minimum_interval_seconds=max(1, int(config.ingestion.sensor_interval.total_seconds())),
        default_status=DefaultSensorStatus.RUNNING,
        description="Reads only the end offsets of the events topic and requests an ingestion "
        "run for each new micro-batch of offsets. The cursor holds the next offset per "
        "partition; nothing is committed to Kafka before the data is stored.",
    )
    def kafka_events_sensor(context: SensorEvaluationContext, experiments: ExperimentsResource):
        settings = experiments.load()
        for run_id in fail_dead_runs(context.instance, ingest_job.name):
            context.log.warning(f"ingestion run {run_id} lost its workers; failed it for a retry")
        # Coalesce: while an ingestion run waits in the queue, new offsets wait for the next
        # tick and join one larger run, instead of a run per tick piling up (each costs a
        # process start) and holding the statistics runs back.
        if context.instance.get_run_records(
            RunsFilter(job_name=ingest_job.name, statuses=WAITING), limit=1
        ):
            return SkipReason("an ingestion run is waiting to start; new offsets join the next")
        topic = settings.infrastructure.kafka.topic
        consumer = make_consumer(settings)
        try:
            marks = watermarks(consumer, topic)
        except KafkaUnavailableError as exc:
            return SkipReason(f"{exc}; trying again next tick")
        finally:
            consumer.close()
        cursor = {int(p): o for p, o in json.loads(context.cursor or "{}").items()}
        runs, next_cursor = plan_runs(
            marks, cursor, settings.ingestion.max_batch_messages, MAX_RUNS_PER_TICK
        )
        if not runs:
            return SkipReason(f"no new messages on {topic} (next offsets {next_cursor})")
        requests = [
            RunRequest(
                run_key=run_key(topic, ranges),
                run_config={
                    "ops": {
                        "ingest_ranges": {
                            "config": {
                                "ranges": [
                                    {"partition": r.partition, "start": r.start, "end": r.end}
                                    for r in ranges
                                ]
                            }
                        }
                    }
                },
            )
            for ranges in runs
        ]
        return SensorResult(
            run_requests=requests,
            cursor=json.dumps({str(p): o for p, o in sorted(next_cursor.items())}),
        )

    return kafka_events_sensor
