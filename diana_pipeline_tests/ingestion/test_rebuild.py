"""Rebuilding a window from Kafka (the `events` asset without offset ranges), against a real
broker."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from dagster import materialize

from diana_pipeline.config import ExperimentsConfig, load_config
from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.ingestion import ingest
from diana_pipeline.partitions import partition_key
from diana_pipeline.resources import pipeline_resources
from diana_pipeline_tests.ingestion.conftest import all_ranges, produce

pytestmark = pytest.mark.servers


@pytest.mark.parametrize("setup", ["duckdb"], indirect=True)  # its backfill names a file
def test_rebuilding_a_window_from_kafka_gives_the_same_rows(
    setup: tuple[ExperimentsConfig, Path], tmp_path: Path
) -> None:
    config, path = setup
    produce(config, 4000, seed=13)
    [ranges] = all_ranges(config)
    live = ingest(config, ranges, run_id="live")
    [window] = list(live.counts.events_by_window)[:1]
    query = (
        "SELECT event_id, user_id, variant, event_type, event_time FROM events "
        "WHERE window_start = ? ORDER BY 1"
    )
    with duckdb.connect(str(path), read_only=True) as con:
        live_rows = con.execute(query, [window]).fetchall()

    def backfill(store: Path) -> list:
        experiments = REPO_ROOT / "experiments.yaml"
        from diana_pipeline.definitions import events

        env = {
            "DIANA_KAFKA_TOPIC": config.infrastructure.kafka.topic,
            "DIANA_DUCKDB_PATH": str(store),
        }
        with pytest.MonkeyPatch.context() as patch:
            for key, value in {**_kafka_env(config), **env}.items():
                patch.setenv(key, value)
            resources = pipeline_resources(load_config(experiments), experiments)
            result = materialize([events], partition_key=partition_key(window), resources=resources)
        assert result.success
        with duckdb.connect(str(store), read_only=True) as con:
            return con.execute(query, [window]).fetchall()

    # Over the live store: nothing changes. Into an empty store: the same rows come back.
    assert backfill(path) == live_rows
    assert backfill(tmp_path / "rebuilt.duckdb") == live_rows


def _kafka_env(config: ExperimentsConfig) -> dict[str, str]:
    return {"DIANA_KAFKA_BOOTSTRAP_SERVERS": config.infrastructure.kafka.bootstrap_servers}
