"""The statistics assets, materialised in process over a DuckDB store of hand-written events:
live (window by window) equals a single-run backfill of 3 windows, the posteriors follow the
counts, the checks fail on a skewed split and pass on a fair one, and the schedule and the
automation target the right assets."""

from __future__ import annotations

import base64
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    materialize,
)

from diana_pipeline.assets.ingestion import build_events
from diana_pipeline.assets.outputs import PUBLISHED, PUBLISHED_ALLOCATION
from diana_pipeline.assets.statistics import STATISTICS, build_statistics
from diana_pipeline.config import load_config
from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.resources import pipeline_resources
from diana_pipeline.store import EventStore
from diana_pipeline_tests.counting.test_rules import EXPECTED, FIXTURE, WINDOWS, store_events

KEYS = ["2026-11-21-10:00", "2026-11-21-11:00", "2026-11-21-12:00"]


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(
        (REPO_ROOT / "experiments.yaml")
        .read_text()
        .replace("conversion_window: 24h", "conversion_window: 1h")
    )
    monkeypatch.setenv("DIANA_DUCKDB_PATH", str(tmp_path / "events.duckdb"))
    config = load_config(experiments)
    events = build_events(config)
    assets, *_ = build_statistics(config)
    resources = pipeline_resources(config, experiments)
    return config, assets, events, resources, tmp_path / "events.duckdb"


def run(assets, events, resources, **kwargs) -> object:
    result = materialize(
        [*assets, events.to_source_asset()], resources=resources, selection=STATISTICS, **kwargs
    )
    assert result.success
    return result


def table(path: Path, name: str) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        columns = [c[0] for c in con.execute(f"DESCRIBE {name}").fetchall() if c[0] != "timestamp"]
        return con.execute(f"SELECT {', '.join(columns)} FROM {name} ORDER BY ALL").fetchall()


def test_live_windows_equal_a_single_run_backfill(setup) -> None:
    _, assets, events, resources, path = setup
    with EventStore.open(path) as store:
        store_events(store, FIXTURE)
    for key in KEYS:
        result = run(assets, events, resources, partition_key=key)
    [posteriors_event] = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == AssetKey("posteriors")
    ]
    plot = posteriors_event.materialization.metadata["plot"].value
    png = base64.b64decode(plot.split("base64,", 1)[1].rstrip(")"))
    assert png.startswith(b"\x89PNG") and len(png) > 5_000
    live = {
        name: table(path, name)
        for name in ("variant_increments", "posteriors", "superiority", "allocation")
    }
    with duckdb.connect(str(path)) as con:
        for name in live:
            con.execute(f"DELETE FROM {name}")
    one_run = {
        "dagster/asset_partition_range_start": KEYS[0],
        "dagster/asset_partition_range_end": KEYS[-1],
    }
    result = run(assets, events, resources, tags=one_run)
    # One run: four assets, each materialised for the three windows.
    assert len(result.get_asset_materialization_events()) == 4 * len(KEYS)
    assert {name: table(path, name) for name in live} == live

    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute(
            "SELECT window_start, variant, exposures_inc, successes_inc, exposures_total, "
            "successes_total, alpha, beta FROM posteriors ORDER BY ALL"
        ).fetchall()
    for start, variant, n_inc, s_inc, n, s, alpha, beta in rows:
        assert (n_inc, s_inc, n, s) == EXPECTED[start][variant]
        assert (alpha, beta) == (1 + s, 1 + n - s)  # the Beta(1, 1) prior


def test_a_range_with_recount_users_repairs_the_counting_state(setup) -> None:
    """A corrupted step (as if the state had gone wrong) is repaired by materialising the
    range with `recount_users`; without it, the run reads the state as it is."""
    _, assets, events, resources, path = setup
    with EventStore.open(path) as store:
        store_events(store, FIXTURE)
    one_run = {
        "dagster/asset_partition_range_start": KEYS[0],
        "dagster/asset_partition_range_end": KEYS[-1],
    }
    run(assets, events, resources, tags=one_run)  # builds the state from the events
    with duckdb.connect(str(path)) as con:
        con.execute(
            "UPDATE window_steps SET change = change + 5 WHERE measure = 'exposures' "
            "AND variant = 'control' AND window_start = ?",
            [WINDOWS[0]],
        )

    def control_totals() -> list[int]:
        with duckdb.connect(str(path), read_only=True) as con:
            return [
                row[0]
                for row in con.execute(
                    "SELECT exposures_total FROM variant_increments WHERE variant = 'control' "
                    "ORDER BY window_start"
                ).fetchall()
            ]

    expected = [EXPECTED[start]["control"][2] for start in WINDOWS[:3]]
    run(assets, events, resources, tags=one_run)
    assert control_totals() == [total + 5 for total in expected]
    repair = {"ops": {"variant_increments": {"config": {"recount_users": True}}}}
    run(assets, events, resources, tags=one_run, run_config=repair)
    assert control_totals() == expected


def test_checks_fail_on_a_skewed_split_and_pass_on_a_fair_one(setup) -> None:
    _, assets, events, resources, path = setup

    def exposures(control: int, treatment: int) -> list[tuple[str, str, str, str, str]]:
        return [
            (f"c{i}", "ButtonDisplayed", "control", f"uc{i}", "10:10") for i in range(control)
        ] + [(f"t{i}", "ButtonDisplayed", "treatment", f"ut{i}", "10:20") for i in range(treatment)]

    def srm_check(control: int, treatment: int):
        path.unlink(missing_ok=True)
        with EventStore.open(path) as store:
            store_events(store, exposures(control, treatment))
        result = run(assets, events, resources, partition_key=KEYS[0])
        [check] = [
            c
            for c in result.get_asset_check_evaluations()
            if c.check_name == "sample_ratio_mismatch"
        ]
        return check

    fair = srm_check(1000, 1010)
    assert fair.passed
    skewed = srm_check(1000, 1300)
    assert not skewed.passed and skewed.severity == AssetCheckSeverity.ERROR
    slight = srm_check(1000, 1130)  # p between 0.001 and 0.01
    assert not slight.passed and slight.severity == AssetCheckSeverity.WARN


def test_schedule_and_automation_target_the_statistics() -> None:
    from diana_pipeline.definitions import defs

    schedule = defs.get_schedule_def("statistics_schedule")
    assert schedule.default_status == DefaultScheduleStatus.RUNNING
    job = defs.resolve_job_def(schedule.job_name)
    assert set(job.asset_layer.executable_asset_keys) == {
        *STATISTICS,
        PUBLISHED,
        PUBLISHED_ALLOCATION,
    }
    automation = defs.get_sensor_def("statistics_automation")
    assert automation.default_status == DefaultSensorStatus.RUNNING
    repository = defs.get_repository_def()
    for key in [*STATISTICS, PUBLISHED, PUBLISHED_ALLOCATION]:
        spec = repository.asset_graph.get(key)
        assert spec.automation_condition is not None, key
    assert repository.asset_graph.get(AssetKey("variant_increments")).parent_keys == {
        AssetKey("events")
    }
    assert datetime(2026, 11, 21, 10, 0) in WINDOWS
