"""The Kafka sensor: turns new offsets on the events topic into ingestion runs, each of
which also refreshes the statistics of the windows its messages belong to. The metrics
sensor: publishes a record of each ended run to `metrics_topic` (run_metrics.py)."""

import time
from datetime import UTC, datetime

from dagster import (
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    RunStatusChangeRecordsFilter,
    SensorDefinition,
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
from diana_pipeline.producer import ProducerError
from diana_pipeline.resources import ExperimentsResource, KafkaResource
from diana_pipeline.run_health import (
    RESUMES_TAG,
    cancel_unqueued_runs,
    fail_dead_runs,
    free_slots_of_ended_runs,
    ingestion_runs_given_up,
)
from diana_pipeline.run_metrics import RUN_ENDED, run_kind, run_record
from diana_pipeline.sinks.kafka_topic import MetricsTopic
from diana_pipeline.store import OffsetRange
from diana_pipeline.windows import utc_now

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
        "partition; nothing is committed to Kafka before the data is stored. The offsets of an "
        "ingestion run that gave up (retries ran out, terminated, or never queued) are "
        "requested again.",
    )
    def kafka_events_sensor(
        context: SensorEvaluationContext, experiments: ExperimentsResource, kafka: KafkaResource
    ):
        settings = experiments.load()
        for run_id in fail_dead_runs(context.instance):
            context.log.warning(f"run {run_id} lost its process; failed it for a retry")
        for run_id in cancel_unqueued_runs(context.instance):
            context.log.warning(f"run {run_id} was never queued; cancelled it for a resume")
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


# Runs that ended this long before the metrics sensor's first tick are not published.
METRICS_LOOKBACK_S = 600.0
METRICS_PER_TICK = 100  # run endings read per kind and tick


def build_metrics_sensor(config: ExperimentsConfig) -> list[SensorDefinition]:
    """The metrics sensor when `metrics_topic` is set (none otherwise)."""
    if not config.metrics_topic:
        return []
    topic = config.metrics_topic

    @sensor(
        name="pipeline_metrics_sensor",
        minimum_interval_seconds=max(1, int(config.ingestion.sensor_interval.total_seconds())),
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Publishes one JSON record per ended ingestion run and statistics refresh "
        f"to Kafka topic {topic} (events, rejections by reason, duplicates, consumer lag, "
        "duration, freshness). Its cursor moves only once Kafka has the records: with Kafka "
        "down the tick fails, and the records go out when it is back.",
    )
    def pipeline_metrics_sensor(context: SensorEvaluationContext, kafka: KafkaResource):
        after = int(context.cursor) if context.cursor else None
        since = None if after is not None else time.time() - METRICS_LOOKBACK_S
        endings = []
        complete_up_to = None  # a kind that filled its page: later endings wait a tick
        for event_type in RUN_ENDED:
            page = context.instance.fetch_run_status_changes(
                RunStatusChangeRecordsFilter(
                    event_type=event_type, after_storage_id=after, after_timestamp=since
                ),
                limit=METRICS_PER_TICK,
                ascending=True,
            ).records
            endings += page
            if len(page) == METRICS_PER_TICK:
                last = page[-1].storage_id
                complete_up_to = last if complete_up_to is None else min(complete_up_to, last)
        endings.sort(key=lambda e: e.storage_id)
        if complete_up_to is not None:
            endings = [e for e in endings if e.storage_id <= complete_up_to]
        if not endings:
            return SkipReason("no run ended since the last record")
        runs = {
            run.run_id: run
            for run in context.instance.get_runs(
                RunsFilter(run_ids=list({e.run_id for e in endings}))
            )
        }
        now = utc_now()
        records = [
            run_record(context.instance, runs[e.run_id], now)
            for e in endings
            if e.run_id in runs and run_kind(runs[e.run_id]) is not None
        ]
        if records:
            try:
                MetricsTopic(kafka.bootstrap_servers, topic).write(records)
            except ProducerError as exc:
                # The tick fails and the cursor stays: the same runs are published next tick.
                raise RuntimeError(f"metrics not published to {topic}: {exc}") from None
        context.update_cursor(str(endings[-1].storage_id))
        return SkipReason(f"published {len(records)} record(s) to {topic}")

    return [pipeline_metrics_sensor]
