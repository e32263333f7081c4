"""The event store resource: a run keeps one connection, and so the file, from its first
step to its end; outside a run each open is its own connection."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dagster import asset, materialize

from diana_pipeline.resources import EventStoreResource

OPEN_FROM_ANOTHER_PROCESS = "import duckdb, sys; duckdb.connect(sys.argv[1]).close()"


def _opens_elsewhere(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", OPEN_FROM_ANOTHER_PROCESS, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_run_holds_the_store_from_its_first_step_to_its_end(tmp_path: Path) -> None:
    path = tmp_path / "events.duckdb"
    seen: list[int] = []
    between_steps: list[subprocess.CompletedProcess] = []

    @asset
    def first(event_store: EventStoreResource) -> None:
        with event_store.open(memory_limit="64MB") as store:
            seen.append(id(store.connection))

    @asset(deps=[first])
    def second(event_store: EventStoreResource) -> None:
        between_steps.append(_opens_elsewhere(path))
        with event_store.open() as store:
            seen.append(id(store.connection))
            limit = store.connection.execute("SELECT current_setting('memory_limit')").fetchone()
            assert limit[0] != "61.0 MiB"  # the resource's own limit again, not the first's

    result = materialize([first, second], resources={"event_store": EventStoreResource(
        path=str(path))})  # fmt: skip
    assert result.success
    assert len(seen) == 2 and seen[0] == seen[1]
    # Between the steps another process could not open the file: the run held it.
    assert between_steps[0].returncode != 0
    assert "lock" in between_steps[0].stderr.lower()
    # After the run, it can.
    after = _opens_elsewhere(path)
    assert after.returncode == 0, after.stderr


def test_outside_a_run_each_open_is_its_own_connection(tmp_path: Path) -> None:
    resource = EventStoreResource(path=str(tmp_path / "events.duckdb"))
    with resource.open() as store:
        store.connection.execute("CREATE TABLE marks (n INTEGER)")
    # Closed again: another process opens the file.
    assert _opens_elsewhere(tmp_path / "events.duckdb").returncode == 0
