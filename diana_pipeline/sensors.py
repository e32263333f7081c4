"""The Kafka sensor: turns new offsets on the events topic into ingestion runs, each of
which also refreshes the statistics of the windows its messages belong to."""

from datetime import UTC, datetime

from dagster import (
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

# The documented run tags of a partition range (RunRequest takes a single partition_key).
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.ingestion import (
    KafkaUnavailableError,
    partition_groups,
    plan_runs,
    produced_span,
    read_cursor,
    run_key,
    watermarks,
    write_cursor,
)
from diana_pipeline.partitions import window_range
from diana_pipeline.resources import ExperimentsResource, KafkaResource
from diana_pipeline.run_health import (
    RESUMES_TAG,
    fail_dead_runs,
    free_slots_of_ended_runs,
    ingestion_runs_given_up,
)
from diana_pipeline.store import OffsetRange

MAX_RUNS_PER_TICK = 20
# Which partition group a run ingests, with parallel runs: dagster.yaml lets one run per
# group at a time (tag_concurrency_limits), the groups side by side.
PARTITION_GROUP_TAG = "diana/partition_group"
# Waiting in the queue. Not STARTING: a run whose launch died with the daemon stays STARTING
# until it is failed (run_health.py), and must not hold every later offset back meanwhile.
WAITING = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED]


def build_kafka_sensor(config: ExperimentsConfig, ingest_job: str):
    @sensor(
        name="kafka_events_sensor",
        job_name=ingest_job,
        minimum_interval_seconds=max(1, int(config.ingestion.sensor_interval.total_seconds())),
        default_status=DefaultSensorStatus.RUNNING,
        description="Reads the end offsets of the events topic and requests an ingestion run "
        "for each new micro-batch of offsets, over the windows its first and last messages were "
        "produced in, whose statistics the run refreshes. The cursor holds the next offset per "
        "partition; nothing is committed to Kafka before the data is stored. The offsets of "
        "an ingestion run that gave up (retries ran out, or terminated) are requested again.",
    )
    def kafka_events_sensor(
        context: SensorEvaluationContext, experiments: ExperimentsResource, kafka: KafkaResource
    ):
        settings = experiments.load()
        for run_id in fail_dead_runs(context.instance):
            context.log.warning(f"run {run_id} lost its process; failed it for a retry")
        for run_id in free_slots_of_ended_runs(context.instance):
            context.log.warning(f"run {run_id} ended holding a pool slot; freed it")
        # Coalesce: while an ingestion run waits in the queue, new offsets (of its partition
        # group) wait for the next tick and join one larger run, instead of a run per tick
        # piling up (each costs a process start) and holding the statistics runs back.
        groups = settings.ingestion.parallel_runs
        free = [g for g in range(groups) if not _waiting(context, ingest_job, groups, g)]
        if not free:
            return SkipReason("an ingestion run is waiting to start; new offsets join the next")
        resumes = []
        for run in ingestion_runs_given_up(context.instance, ingest_job):
            context.log.warning(f"run {run.run_id} gave up before storing its offsets; "
                                "requesting them again")  # fmt: skip
            resumes.append(resume_request(run))
        topic = kafka.topic
        cursor = read_cursor(context.cursor, topic)
        consumer = kafka.consumer()
        try:
            try:
                marks = watermarks(consumer, topic)
            except KafkaUnavailableError as exc:
                return SkipReason(f"{exc}; trying again next tick")
            runs: list[tuple[int, list[OffsetRange]]] = []
            next_cursor = dict(cursor)
            for group, group_marks in partition_groups(marks, groups).items():
                if group not in free:
                    continue
                planned, moved = plan_runs(
                    group_marks, cursor, settings.ingestion.max_batch_messages,
                    max(1, MAX_RUNS_PER_TICK // groups),
                )  # fmt: skip
                runs += [(group, ranges) for ranges in planned]
                next_cursor.update({p: moved[p] for p in group_marks})
            if not runs and not resumes:
                return SkipReason(f"no new messages on {topic} (next offsets {next_cursor})")
            spans = [produced_span(consumer, topic, ranges) for _, ranges in runs]
        finally:
            consumer.close()
        now = datetime.now(UTC)
        requests = []
        for (group, ranges), span in zip(runs, spans, strict=True):
            # The run refreshes the statistics of the windows its messages were produced in
            # (where live events belong); events of other windows are reported by the run,
            # and the statistics automation refreshes those.
            first, last = window_range(settings.partitions, *(span or (now, now)), now)
            requests.append(
                RunRequest(
                    run_key=run_key(topic, ranges),
                    run_config={
                        "ops": {
                            "events": {
                                "config": {
                                    "ranges": [
                                        {"partition": r.partition, "start": r.start, "end": r.end}
                                        for r in ranges
                                    ]
                                }
                            }
                        }
                    },
                    tags={
                        ASSET_PARTITION_RANGE_START_TAG: first,
                        ASSET_PARTITION_RANGE_END_TAG: last,
                        **({PARTITION_GROUP_TAG: str(group)} if groups > 1 else {}),
                    },
                )
            )
        return SensorResult(
            run_requests=resumes + requests,
            cursor=write_cursor(topic, next_cursor),
        )

    return kafka_events_sensor


def _waiting(context: SensorEvaluationContext, ingest_job: str, groups: int, group: int) -> bool:
    """An ingestion run (of this partition group, with parallel runs) waits in the queue."""
    tags = {PARTITION_GROUP_TAG: str(group)} if groups > 1 else None
    waiting = RunsFilter(job_name=ingest_job, statuses=WAITING, tags=tags)
    return bool(context.instance.get_run_records(waiting, limit=1))


def resume_request(given_up: DagsterRun) -> RunRequest:
    """A new run over the offsets and windows of an ingestion run that gave up."""
    kept = (ASSET_PARTITION_RANGE_START_TAG, ASSET_PARTITION_RANGE_END_TAG, PARTITION_GROUP_TAG)
    return RunRequest(
        run_key=f"resume/{given_up.run_id}",
        run_config=given_up.run_config,
        tags={
            **{tag: given_up.tags[tag] for tag in kept if tag in given_up.tags},
            RESUMES_TAG: given_up.run_id,
        },
    )
