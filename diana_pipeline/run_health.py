"""Dead ingestion runs: local run workers have no health check in Dagster, so a run whose
processes were killed (kill -9, a crash, a reboot) would stay STARTED forever and its offsets
would never be stored. Ingestion steps tag their run with their processes; the Kafka sensor
fails STARTED runs whose processes are all gone, and Dagster's run retries re-execute them
(safely: the ledger makes ingestion idempotent)."""

from __future__ import annotations

import os
import socket
import time

import psutil
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

PIDS_TAG = "diana/worker_pids"  # "pid:create_time,pid:create_time"
HOST_TAG = "diana/worker_host"
# A run gets this long to tag itself before an untagged STARTED run counts as dead.
UNTAGGED_GRACE_S = 300.0


def worker_tags() -> dict[str, str]:
    """The process running the step, with its start time. (Not its parent: under the
    in-process executor that is the daemon, which outlives a killed run.)"""
    me = psutil.Process(os.getpid())
    return {
        PIDS_TAG: f"{me.pid}:{me.create_time():.3f}",
        HOST_TAG: socket.gethostname(),
    }


def _alive(pid: int, created: float) -> bool:
    try:
        process = psutil.Process(pid)
        return (
            abs(process.create_time() - created) < 0.01 and process.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.Error:
        return False


def fail_dead_runs(instance: DagsterInstance, job_name: str) -> list[str]:
    """Mark STARTED runs of the job whose worker processes are all gone as failed; returns
    their run ids."""
    failed = []
    host = socket.gethostname()
    records = instance.get_run_records(
        RunsFilter(job_name=job_name, statuses=[DagsterRunStatus.STARTED])
    )
    for record in records:
        run = record.dagster_run
        tags = run.tags
        if tags.get(HOST_TAG, host) != host:
            continue  # another machine's run: not ours to judge
        if PIDS_TAG in tags:
            workers = [entry.split(":") for entry in tags[PIDS_TAG].split(",")]
            dead = not any(_alive(int(pid), float(created)) for pid, created in workers)
        else:
            started = record.start_time or record.create_timestamp.timestamp()
            dead = time.time() - started > UNTAGGED_GRACE_S
        if dead:
            instance.report_run_failed(run, "run worker processes are gone (killed or crashed)")
            # Its step still holds the `duckdb` pool slot; free it, or no writer runs again.
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            failed.append(run.run_id)
    return failed
