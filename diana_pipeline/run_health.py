"""Dead runs: local run workers have no health check in Dagster, so a run whose process was
killed (kill -9, a crash, a reboot) would stay STARTED forever, holding its `duckdb` pool slot
(no writer would run again) and its windows "in progress" (the automation would never refresh
them). Every run tags itself with its worker process when its resources are set up; the Kafka
sensor fails STARTED runs whose processes are all gone, and Dagster's run retries re-execute
them (safely: the ledger makes ingestion idempotent and every other step replaces its
windows)."""

from __future__ import annotations

import os
import socket
import time

import psutil
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

PIDS_TAG = "diana/worker_pids"  # "pid:create_time,pid:create_time"
HOST_TAG = "diana/worker_host"
# Whose tags these are: a retry copies its parent's tags, whose processes are long gone.
RUN_TAG = "diana/worker_run"
# A run tags itself moments after it starts; one that has not after this long is dead.
UNTAGGED_GRACE_S = 60.0


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


def fail_dead_runs(instance: DagsterInstance) -> list[str]:
    """Mark STARTED runs whose worker processes are all gone as failed; returns their run
    ids."""
    failed = []
    host = socket.gethostname()
    records = instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.STARTED]))
    for record in records:
        run = record.dagster_run
        tags = run.tags
        if tags.get(HOST_TAG, host) != host:
            continue  # another machine's run: not ours to judge
        if PIDS_TAG in tags and tags.get(RUN_TAG) == run.run_id:
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
