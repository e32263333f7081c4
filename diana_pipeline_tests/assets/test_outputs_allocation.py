"""The published_allocation asset through Dagster, with a real Kafka broker: a live refresh
of a bandit test records a version in DuckDB and publishes it to the topic and the file; a
refresh whose weights did not move publishes no new version; new events do; a run of past
windows publishes nothing; a place that is down fails the step, keeps the version, and the
next run sends it."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from diana_pipeline.allocation_follower import read_published
from diana_pipeline.allocations import PUBLISH_LEAD
from diana_pipeline.assets.ingestion import build_events
from diana_pipeline.assets.outputs import PUBLISHED_ALLOCATION
from diana_pipeline.assets.statistics import STATISTICS, build_statistics
from diana_pipeline.config import load_config
from diana_pipeline.events import EventColumns, ValidEvent
from diana_pipeline.harness.kafka import KafkaForTests
from diana_pipeline.harness.stack import free_port
from diana_pipeline.io_managers import ALLOCATION_SINK
from diana_pipeline.partitions import partition_key
from diana_pipeline.resources import pipeline_resources
from diana_pipeline.sinks.allocation_file import AllocationFile
from diana_pipeline.store import EventStore, WriteCounts
from diana_pipeline.windows import utc_now

pytestmark = pytest.mark.servers

EXPERIMENTS = """
infrastructure:
  kafka: {bootstrap_servers: "%(kafka)s"}
  duckdb: {path: "%(dir)s/events.duckdb"}
  csv: {directory: "%(dir)s/output"}
allocation_topic: %(topic)s
partitions: {window: 1h, start: 2026-11-01T00:00:00Z}
tests:
  - test_id: arms
    mode: bandit
    bandit: {burn_in_users: 0, top_two: false, update: run}
    variants:
      - {name: a, allocation: 0.34}
      - {name: b, allocation: 0.33}
      - {name: c, allocation: 0.33}
"""


class BanditPipeline:
    def __init__(self, tmp_path: Path, kafka: KafkaForTests) -> None:
        self.topic = f"alloc-{uuid.uuid4().hex[:8]}"
        experiments = tmp_path / "experiments.yaml"
        text = EXPERIMENTS % {"kafka": kafka.bootstrap_servers, "dir": tmp_path,
                              "topic": self.topic}  # fmt: skip
        experiments.write_text(text)
        self.config = load_config(experiments)
        self.assets = [
            *build_statistics(self.config)[0],
            build_events(self.config).to_source_asset(),
        ]
        self.resources = pipeline_resources(self.config, experiments)
        self.instance = DagsterInstance.ephemeral()
        self.store_path = tmp_path / "events.duckdb"
        self.users = 0

    def add_users(self, converted: dict[str, tuple[int, int]]) -> None:
        """variant → (users, of whom converted), exposed a second ago."""
        now = utc_now() - timedelta(seconds=1)
        window = self.config.partitions.grid.window_start(now)
        events = []
        for variant, (users, conversions) in converted.items():
            for i in range(users):
                self.users += 1
                user = f"u{self.users}"
                events.append(ValidEvent(f"s{self.users}", "ButtonDisplayed", "arms", variant,
                                         user, now, window))  # fmt: skip
                if i < conversions:
                    events.append(ValidEvent(f"c{self.users}", "ButtonClicked", "arms", variant,
                                             user, now, window))  # fmt: skip
        rows = [(0, self.users * 2 + i, e) for i, e in enumerate(events)]
        with EventStore.open(self.store_path) as store:
            store.add_events("web-events", EventColumns.of(rows), WriteCounts())

    def refresh(self, key: str | None = None, raise_on_error: bool = True):
        key = key or partition_key(self.config.partitions.window_start(utc_now()))
        return materialize(
            self.assets,
            resources=self.resources,
            selection=[*STATISTICS, PUBLISHED_ALLOCATION],
            instance=self.instance,
            partition_key=key,
            raise_on_error=raise_on_error,
        )

    def versions(self):
        with EventStore.open(self.store_path) as store:
            return store.allocation_versions("arms")


def test_a_live_refresh_publishes_a_version_everywhere(
    tmp_path: Path, kafka: KafkaForTests
) -> None:
    pipeline = BanditPipeline(tmp_path, kafka)
    pipeline.add_users({"a": (200, 20), "b": (200, 24), "c": (200, 40)})
    pipeline.refresh()
    [first] = pipeline.versions()
    assert first.version == 1 and first.effective_from == first.published_at + PUBLISH_LEAD
    with EventStore.open(pipeline.store_path) as store:
        rows = store.connection.execute(
            "SELECT variant, recommended_allocation FROM allocation WHERE window_start = ?",
            [first.based_on_window],
        ).fetchall()
    assert first.weights == pytest.approx(dict(rows), abs=1e-12)
    assert max(first.weights, key=first.weights.get) == "c"  # 40/200 leads clearly
    assert read_published(kafka.bootstrap_servers, pipeline.topic) == {"arms": first}
    assert AllocationFile(tmp_path / "output").read() == {"arms": first}

    pipeline.refresh()  # nothing new: the same weights, no new version
    assert pipeline.versions() == [first]

    pipeline.add_users({"a": (100, 30), "b": (100, 5), "c": (100, 5)})
    pipeline.refresh()
    second = pipeline.versions()[-1]
    assert second.version == 2 and second.weights != first.weights
    assert read_published(kafka.bootstrap_servers, pipeline.topic)["arms"] == second

    result = pipeline.refresh("2026-11-21-10:00")  # past windows: nothing published
    assert pipeline.versions()[-1] == second
    [event] = result.asset_materializations_for_node("published_allocation")
    assert "past" in event.metadata["note"].value


def test_a_place_that_is_down_fails_the_step_and_the_next_run_sends_the_version(
    tmp_path: Path, kafka: KafkaForTests
) -> None:
    pipeline = BanditPipeline(tmp_path, kafka)
    pipeline.add_users({"a": (200, 20), "b": (200, 24), "c": (200, 40)})
    reachable = pipeline.resources
    sink = reachable[ALLOCATION_SINK]
    settings = {name: getattr(sink, name) for name in type(sink).model_fields}
    down = type(sink)(**{**settings, "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    pipeline.resources = {**reachable, ALLOCATION_SINK: down}
    result = pipeline.refresh(raise_on_error=False)
    assert not result.success
    [failed] = [e for e in result.all_events if e.is_step_failure]
    assert failed.step_key == "published_allocation"
    [recorded] = pipeline.versions()  # recorded before sending: kept
    assert read_published(kafka.bootstrap_servers, pipeline.topic) == {}
    pipeline.resources = reachable
    pipeline.refresh()  # no new weights, but the latest version goes out again
    assert pipeline.versions() == [recorded]
    assert read_published(kafka.bootstrap_servers, pipeline.topic) == {"arms": recorded}
