"""Dead runs: local run workers have no health check in Dagster, so a run whose process was
killed (kill -9, a crash, a reboot) would stay STARTED forever, holding its `duckdb` pool slot
(no writer would run again) and its windows "in progress" (the automation would never refresh
them). Every run tags itself with its worker process when its resources are set up; the Kafka
sensor fails STARTED runs whose processes are all gone and STARTING runs whose launching code
server is gone, and Dagster's run retries re-execute them (safely: the ledger makes ingestion
idempotent and every other step replaces its windows). A run that was created and never
queued is cancelled. When the retries run out before an ingestion run stored its offsets, or
it was cancelled, the sensor requests those offsets again."""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import UTC, datetime

import psutil
from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from dagster._core.storage.tags import GRPC_INFO_TAG, WILL_RETRY_TAG

PIDS_TAG = "diana/worker_pids"  # "pid:create_time,pid:create_time"
HOST_TAG = "diana/worker_host"
# Whose tags these are: a retry copies its parent's tags, whose processes are long gone.
RUN_TAG = "diana/worker_run"
# A run tags itself moments after it starts; one that has not after this long is dead.
UNTAGGED_GRACE_S = 60.0
# A run being launched by a code server that has died (with the daemon) never starts; after
# this long it is failed instead of waiting out run monitoring's start timeout, during which
# it would hold its place in the `duckdb` pool's queue.
LAUNCH_GRACE_S = 10.0

# A run still NOT_STARTED this long after it was created was never queued, and never will be
# (cancel_unqueued_runs); queueing takes milliseconds.
UNQUEUED_GRACE_S = 120.0

# An ingestion run whose retries ran out without storing its offsets is requested again, as a
# new run (with retries of its own) tagged with the one it resumes, this long after it failed:
# a pause for whatever failed it (Kafka down, a full disk) to pass. Older failures are left.
RESUMES_TAG = "diana/resumes"
# On a given-up run, once looked at: "<its id>:<the run resuming it, or why none is needed>".
RESUMED_TAG = "diana/resumed"
RESUME_AFTER_S = 60.0
GIVEN_UP_LOOKBACK_S = 7 * 24 * 3600.0
# A run Dagster marked "will retry" whose retry has not appeared after this long never gets
# one (the daemon that would launch it was killed at that moment): it is resumed like one
# whose retries ran out.
RETRY_EXPECTED_WITHIN_S = 180.0


def worker_tags(run_id: str) -> dict[str, str]:
    """The process running the run, with its start time. (Not its parent: that is a code
    server, which outlives a killed run.)"""
    me = psutil.Process(os.getpid())
    return {
        PIDS_TAG: f"{me.pid}:{me.create_time():.3f}",
        HOST_TAG: socket.gethostname(),
        RUN_TAG: run_id,
    }


def _alive(pid: int, created: float) -> bool:
    try:
        process = psutil.Process(pid)
        return (
            abs(process.create_time() - created) < 0.01 and process.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.Error:
        return False


def _code_server_alive(socket_path: str) -> bool:
    """Whether a process here serves the code server socket (`dagster api grpc --socket`)."""
    for process in psutil.process_iter(["cmdline"]):
        if socket_path in (process.info["cmdline"] or []):
            return True
    return False


def fail_dead_runs(instance: DagsterInstance) -> list[str]:
    """Mark runs as failed whose worker processes are all gone (STARTED), or whose launching
    code server is gone (STARTING); returns their run ids."""
    failed = []
    host = socket.gethostname()
    records = instance.get_run_records(
        RunsFilter(statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.STARTING])
    )
    for record in records:
        run = record.dagster_run
        tags = run.tags
        if tags.get(HOST_TAG, host) != host:
            continue  # another machine's run: not ours to judge
        if run.status == DagsterRunStatus.STARTING:
            code_server = json.loads(tags.get(GRPC_INFO_TAG, "{}")).get("socket")
            launching_for = time.time() - record.update_timestamp.timestamp()
            dead = (
                code_server is not None
                and launching_for > LAUNCH_GRACE_S
                and not _code_server_alive(code_server)
            )
        elif PIDS_TAG in tags and tags.get(RUN_TAG) == run.run_id:
            workers = [entry.split(":") for entry in tags[PIDS_TAG].split(",")]
            dead = not any(_alive(int(pid), float(created)) for pid, created in workers)
        else:
            started = record.start_time or record.create_timestamp.timestamp()
            dead = time.time() - started > UNTAGGED_GRACE_S
        if dead:
            instance.report_run_failed(
                run,
                "run worker processes are gone (killed or crashed)"
                if run.status == DagsterRunStatus.STARTED
                else "the code server launching this run is gone",
            )
            # Its step still holds the `duckdb` pool slot; free it, or no writer runs again.
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            failed.append(run.run_id)
    return failed


def cancel_unqueued_runs(instance: DagsterInstance) -> list[str]:
    """Cancel runs left NOT_STARTED for over UNQUEUED_GRACE_S; returns their run ids. A run
    is created NOT_STARTED and queued at once by what created it; Dagster's sensor daemon
    resumes a tick cut off between the two, but runs a tick that failed to queue its runs
    again only once (`MAX_FAILURE_RESUBMISSION_RETRIES`): after a second failure in a row (the
    instance's database or the code server unreachable meanwhile) the run is never queued.
    Left alone, an ingestion run of that kind held the Kafka sensor back for good ("waiting to
    start"), with the sensor's cursor already past its offsets; cancelled, it is resumed like
    any run that gave up (ingestion_runs_given_up), and the statistics automation no longer
    sees its windows in progress."""
    created_before = datetime.fromtimestamp(time.time() - UNQUEUED_GRACE_S, UTC)
    records = instance.get_run_records(
        RunsFilter(statuses=[DagsterRunStatus.NOT_STARTED], created_before=created_before)
    )
    for record in records:
        instance.report_run_canceled(
            record.dagster_run,
            f"never queued: created {UNQUEUED_GRACE_S:.0f} s ago or more and still not started "
            "(the tick that requested it failed to queue it)",
        )
    return [record.dagster_run.run_id for record in records]


def free_slots_of_ended_runs(instance: DagsterInstance) -> list[str]:
    """Free the pool slots and queued pool claims of runs that have ended; returns their run
    ids. A run whose worker was killed while its step held or waited for the `duckdb` slot
    is failed by its code server, but its claim stays until run monitoring's
    `free_slots_after_run_end_seconds`, and meanwhile no other writer is let in."""
    storage = instance.event_log_storage
    holders: set[str] = set()
    for pool in storage.get_concurrency_keys():
        info = storage.get_concurrency_info(pool)
        holders |= {slot.run_id for slot in info.claimed_slots}
        holders |= {step.run_id for step in info.pending_steps}
    freed = []
    for run_id in sorted(holders):
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            storage.free_concurrency_slots_for_run(run_id)
            freed.append(run_id)
    return freed


def ingestion_runs_given_up(
    instance: DagsterInstance, job_name: str, step_key: str = "events"
) -> list[DagsterRun]:
    """Ingestion runs that failed and that nothing retries any more (Dagster's retries ran
    out), or were terminated, and whose offsets no run of their retry group stored. The
    sensor's cursor is past those offsets, so unless the sensor requests them again they are
    never ingested (after a Kafka outage longer than the retries last, say). Runs that need
    nothing (their events were stored and a statistics step failed, which the statistics
    automation retries; or someone re-executed them) are tagged, and later ticks skip them."""
    now = time.time()
    records = instance.get_run_records(
        RunsFilter(
            job_name=job_name,
            statuses=[DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED],
            updated_after=datetime.fromtimestamp(now - GIVEN_UP_LOOKBACK_S, UTC),
        )
    )
    given_up = []
    for record in records:
        run = record.dagster_run
        since = now - record.update_timestamp.timestamp()
        if run.tags.get(RESUMED_TAG, "").startswith(f"{run.run_id}:") or since < RESUME_AFTER_S:
            continue
        group = instance.get_run_group(run.run_id)
        family = group[1] if group is not None else [run]
        retried = any(member.parent_run_id == run.run_id for member in family)
        # (no tag: retries are off) A retry on its way is left to Dagster, for a while.
        if run.tags.get(WILL_RETRY_TAG) == "true" and not retried:
            if since < RETRY_EXPECTED_WITHIN_S:
                continue
        elif run.tags.get(WILL_RETRY_TAG) == "true":
            continue  # retried: the retry's own outcome is what counts
        resumed_by = instance.get_run_records(RunsFilter(tags={RESUMES_TAG: run.run_id}), limit=1)
        if resumed_by:
            verdict = resumed_by[0].dagster_run.run_id
        elif retried:
            verdict = "re-executed"
        elif any(
            entry.step_key == step_key
            for member in family
            for entry in instance.all_logs(member.run_id, of_type=DagsterEventType.STEP_SUCCESS)
        ):
            verdict = "stored"
        else:
            given_up.append(run)
            continue
        # Prefixed with the run's own id: a re-execution copies its parent's tags.
        instance.add_run_tags(run.run_id, {RESUMED_TAG: f"{run.run_id}:{verdict}"})
    return given_up
