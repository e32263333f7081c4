"""The metrics topic's records (`metrics_topic`, docs/outputs.md): one per ingestion run and
per statistics refresh, made from what the run itself recorded in Dagster (its
materialisations' metadata, its start and end) once it has ended, so that monitoring can
follow the pipeline from Kafka alone. `pipeline_metrics_sensor` (sensors.py) publishes them."""

from __future__ import annotations

from datetime import UTC, datetime

from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus

from diana_pipeline.assets.ingestion import EVENTS
from diana_pipeline.assets.outputs import PUBLISHED
from diana_pipeline.assets.statistics import POSTERIORS, STATISTICS_JOB
from diana_pipeline.jobs import INGEST_JOB
from diana_pipeline.sinks.records import format_time, parse_time

# The jobs whose runs refresh statistics besides runs of the posteriors' own selection (the
# automation's): the schedule's, and ingestion runs over no offsets (a backfill of events).
REFRESH_JOBS = frozenset({INGEST_JOB, STATISTICS_JOB})
# The events asset's materialisation of the run's own ingestion (its other ones report the
# events of windows outside the run's, for the automation) carries this key.
INGESTION_KEY = "rejected_in_run"
# How a run ended, the events that say so (in one index of the event log), and as written.
RUN_ENDED = (
    DagsterEventType.RUN_SUCCESS,
    DagsterEventType.RUN_FAILURE,
    DagsterEventType.RUN_CANCELED,
)
STATUS = {
    DagsterRunStatus.SUCCESS: "success",
    DagsterRunStatus.FAILURE: "failure",
    DagsterRunStatus.CANCELED: "canceled",
}


def run_kind(run: DagsterRun) -> str | None:
    """`ingestion` (a Kafka sensor run: offsets to store, then its windows' statistics),
    `refresh` (statistics only), or None for a run of anything else (traffic, maintenance)."""
    ops = run.run_config.get("ops", {}) if isinstance(run.run_config, dict) else {}
    if run.job_name == INGEST_JOB and ops.get("events", {}).get("config", {}).get("ranges"):
        return "ingestion"
    if run.job_name in REFRESH_JOBS or POSTERIORS in (run.asset_selection or set()):
        return "refresh"
    return None


def run_record(instance: DagsterInstance, run: DagsterRun, now: datetime) -> dict[str, object]:
    """The metrics record of an ended run: its figures as its materialisations recorded them
    (zeros and nulls for what it did not get to)."""
    record = instance.get_run_record_by_id(run.run_id)
    started = record.start_time if record is not None else None
    ended = record.end_time if record is not None else None
    windows: set[str] = set()
    ingestion: dict[str, object] = {}
    published_at: float | None = None
    materialisations = instance.get_records_for_run(
        run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION
    ).records
    for entry in materialisations:
        materialisation = entry.asset_materialization
        if materialisation is None:
            continue
        if materialisation.partition:
            windows.add(materialisation.partition)
        metadata = {key: value.value for key, value in materialisation.metadata.items()}
        if materialisation.asset_key == EVENTS and INGESTION_KEY in metadata:
            ingestion = metadata
        elif materialisation.asset_key == PUBLISHED:
            published_at = max(published_at or 0.0, entry.timestamp)
    newest = str(ingestion.get("newest_event_at") or "") or None
    freshness = None
    if newest is not None and published_at is not None:
        freshness = round(published_at - _epoch(parse_time(newest)), 3)
    return {
        "run_id": run.run_id,
        "kind": run_kind(run),
        "job": run.job_name,
        "status": STATUS.get(run.status, run.status.value.lower()),
        "windows": sorted(windows),
        "events_ingested": int(ingestion.get("events_ingested", 0)),  # type: ignore[call-overload]
        "rejected": int(ingestion.get("rejected_in_run", 0)),  # type: ignore[call-overload]
        "rejected_by_reason": ingestion.get("rejected_by_reason") or {},
        "duplicates": int(ingestion.get("duplicates_in_run", 0)),  # type: ignore[call-overload]
        "consumer_lag": ingestion.get("consumer_lag_by_partition") or {},
        "started_at": _time(started),
        "ended_at": _time(ended),
        "duration_s": round(ended - started, 3) if started and ended else None,
        "newest_event_at": newest,
        "posteriors_published_at": _time(published_at),
        # From the newest event this run stored to the posteriors that count it, published.
        "freshness_s": freshness,
        "recorded_at": format_time(now),
    }


def _epoch(moment: datetime) -> float:
    return moment.replace(tzinfo=UTC).timestamp()


def _time(epoch_s: float | None) -> str | None:
    if epoch_s is None:
        return None
    return format_time(datetime.fromtimestamp(epoch_s, UTC))
