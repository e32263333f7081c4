"""The code location loads (in process and through workspace.yaml); dagster.yaml is a valid
instance that serialises DuckDB writers; a bad experiments.yaml fails the load by name."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from dagster import DagsterInstance, Definitions

from diana_pipeline.config import load_config
from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline_tests.conftest import run_command


def test_definitions_load_with_the_experiments_resource() -> None:
    from diana_pipeline.definitions import defs

    assert isinstance(defs, Definitions)
    Definitions.validate_loadable(defs)
    assert "experiments" in defs.get_repository_def().get_top_level_resources()
    assert defs.get_job_def("traffic_job").name == "traffic_job"
    experiments = defs.resources["experiments"]
    assert experiments.load() == load_config(REPO_ROOT / "experiments.yaml")


def _validate(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_command("dagster", "definitions", "validate", "-w", "workspace.yaml", env=env)


def test_workspace_validates(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(_dagster_home(tmp_path))}
    env.pop("DIANA_CONFIG", None)
    result = _validate(env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful for code location diana_pipeline" in result.stdout + result.stderr


def test_bad_experiments_file_fails_the_code_location(tmp_path: Path) -> None:
    bad = tmp_path / "experiments.yaml"
    bad.write_text(
        (REPO_ROOT / "experiments.yaml")
        .read_text()
        .replace("output_sink: ${DIANA_OUTPUT_SINK:-console}", "output_sink: parquet")
    )
    env = {**os.environ, "DAGSTER_HOME": str(_dagster_home(tmp_path)), "DIANA_CONFIG": str(bad)}
    result = _validate(env)
    assert result.returncode != 0
    assert "output_sink: Input should be 'console', 'csv' or 'dynamodb', got 'parquet'" in (
        result.stdout + result.stderr
    )


def _dagster_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").symlink_to(REPO_ROOT / "dagster.yaml")
    return home


def test_instance_serialises_duckdb_writers(tmp_path: Path) -> None:
    instance = DagsterInstance.from_config(str(_dagster_home(tmp_path)))
    try:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 1
        assert concurrency.pool_config.pool_granularity.value == "run"
        assert instance.run_coordinator.dequeue_interval_seconds == 1
        assert instance.run_monitoring_enabled
        assert not instance.telemetry_enabled
        # SQLite storage under DAGSTER_HOME.
        assert Path(instance.storage_directory()).is_relative_to(tmp_path / "dagster_home")
    finally:
        instance.dispose()
