"""diana-state on a store: status says whether the state covers every event, check finds a
corrupted step and names it, rebuild repairs it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from diana_pipeline.harness.paths import SHIPPED_CONFIG
from diana_pipeline.store import EventStore
from diana_pipeline_tests.conftest import run_command
from diana_pipeline_tests.counting.test_rules import FIXTURE, store_events


def state(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_command("diana-state", "--config", str(SHIPPED_CONFIG), *args, env=env)


def test_status_check_and_rebuild(tmp_path: Path) -> None:
    path = tmp_path / "events.duckdb"
    env = {**os.environ, "DIANA_DUCKDB_PATH": str(path)}
    with EventStore.open(path) as store:
        store_events(store, FIXTURE)  # stored without the state, as a store from before it

    before = state(env, "status")
    assert before.returncode == 0, before.stderr
    assert f"{len(FIXTURE)} events" in before.stdout and "not current" in before.stdout

    rebuilt = state(env, "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rebuilt the counting state" in rebuilt.stdout
    assert "state of 8 users" in rebuilt.stdout and "; current" in rebuilt.stdout

    clean = state(env, "check")
    assert clean.returncode == 0, clean.stdout
    assert "equals a recount of every event" in clean.stdout

    with EventStore.open(path) as store:
        store.connection.execute(
            "UPDATE window_steps SET change = change + 1 "
            "WHERE measure = 'successes' AND variant = 'control' AND window_start = "
            "(SELECT min(window_start) FROM window_steps)"
        )
    corrupted = state(env, "check")
    assert corrupted.returncode == 1
    assert "1 window steps differ" in corrupted.stdout
    assert "| button-color-test | successes | control |" in corrupted.stdout

    assert state(env, "rebuild").returncode == 0
    assert state(env, "check").returncode == 0


def test_a_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "DIANA_DUCKDB_PATH": str(tmp_path / "none.duckdb")}
    result = state(env, "status")
    assert result.returncode == 2
    assert "no event store at" in result.stderr
