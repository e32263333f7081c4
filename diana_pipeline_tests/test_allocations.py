"""diana_pipeline.allocations and the store's record of published versions: when a live
refresh publishes a new version (per window or per run), which version is in force at a
moment, the JSON form, and the store refusing weights that would take effect in the past."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from diana_pipeline.allocations import (
    PUBLISH_LEAD,
    AllocationError,
    AllocationVersion,
    configured,
    in_force,
    next_version,
)
from diana_pipeline.config import ExperimentTest, parse_config
from diana_pipeline.store import EventStore

CONFIG = """
partitions: {window: 1h, start: 2026-11-01T00:00:00Z}
tests:
  - test_id: arms
    mode: bandit
    bandit: {update: %s}
    variants:
      - {name: a, allocation: 0.5}
      - {name: b, allocation: 0.25}
      - {name: c, allocation: 0.25}
"""
NOW = datetime(2026, 11, 21, 10, 30)
HOUR = timedelta(hours=1)
W9, W10 = datetime(2026, 11, 21, 9), datetime(2026, 11, 21, 10)


def bandit(update: str) -> tuple[ExperimentTest, object]:
    config = parse_config(CONFIG % update, env={})
    return config.tests[0], config.partitions


def version(number: int, weights: dict[str, float], at: datetime = NOW, based_on=W9):
    return AllocationVersion("arms", number, weights, at + PUBLISH_LEAD, at, based_on)


def test_update_window_publishes_once_per_ended_window() -> None:
    test, partitions = bandit("window")
    rows = {W9: {"a": 0.2, "b": 0.3, "c": 0.5}, W10: {"a": 0.1, "b": 0.1, "c": 0.8}}
    first = next_version(test, partitions, rows, None, NOW)
    # From the window that ended (9:00), not the current one; effective after the lead.
    assert first == version(1, {"a": 0.2, "b": 0.3, "c": 0.5})
    assert next_version(test, partitions, rows, first, NOW + timedelta(minutes=20)) is None
    # The next window ends: its weights become version 2.
    later = NOW + HOUR
    second = next_version(test, partitions, rows, first, later)
    assert second == version(2, {"a": 0.1, "b": 0.1, "c": 0.8}, later, W10)
    # No window has ended yet: nothing to publish.
    assert next_version(test, partitions, {W10: rows[W10]}, None, NOW) is None


def test_update_run_publishes_whenever_the_weights_move() -> None:
    test, partitions = bandit("run")
    rows = {W9: {"a": 0.2, "b": 0.3, "c": 0.5}, W10: {"a": 0.1, "b": 0.1, "c": 0.8}}
    first = next_version(test, partitions, rows, None, NOW)
    assert first == version(1, {"a": 0.1, "b": 0.1, "c": 0.8}, based_on=W10)
    assert next_version(test, partitions, rows, first, NOW + timedelta(seconds=9)) is None
    moved = {W10: {"a": 0.1, "b": 0.2, "c": 0.7}}
    assert next_version(test, partitions, moved, first, NOW).version == 2


def test_the_version_in_force_is_the_highest_whose_time_has_come() -> None:
    test, _ = bandit("run")
    one = version(1, {"a": 0.2, "b": 0.3, "c": 0.5})
    two = version(2, {"a": 0.1, "b": 0.1, "c": 0.8}, NOW + timedelta(minutes=1))
    versions = [configured(test), one, two]
    assert in_force(versions, NOW).version == 0
    assert in_force(versions, one.effective_from).version == 1
    assert in_force(versions, two.effective_from + timedelta(hours=5)).version == 2
    assert configured(test).weights == {"a": 0.5, "b": 0.25, "c": 0.25}


def test_json_round_trip_and_bad_versions() -> None:
    one = version(3, {"a": 0.2, "b": 0.3, "c": 0.5})
    assert AllocationVersion.from_json(one.to_json()) == one
    assert '"effective_from": "2026-11-21T10:30:05.000000Z"' in one.to_json()
    with pytest.raises(AllocationError, match="not a published allocation"):
        AllocationVersion.from_json('{"test_id": "arms"}')
    with pytest.raises(AllocationError, match=r"sum to 0\.9"):
        version(1, {"a": 0.4, "b": 0.5})
    with pytest.raises(AllocationError, match="finite"):
        version(1, {"a": float("nan"), "b": 1.0})


def test_the_store_keeps_versions_and_refuses_the_past(tmp_path: Path) -> None:
    now = datetime.now().replace(microsecond=0) + timedelta(hours=48)  # safely in the future
    one = version(1, {"c": 0.5, "a": 0.2, "b": 0.3}, now)
    two = version(2, {"c": 0.1, "a": 0.1, "b": 0.8}, now + HOUR, None)
    with EventStore.open(tmp_path / "events.duckdb") as store:
        store.add_allocation_version(one)
        store.add_allocation_version(two)
        with pytest.raises(AllocationError, match="published already"):
            store.add_allocation_version(one)
        past = version(3, {"a": 1.0, "b": 0.0, "c": 0.0}, datetime(2026, 1, 1))
        with pytest.raises(AllocationError, match="take effect in the past"):
            store.add_allocation_version(past)
    with EventStore.open(tmp_path / "events.duckdb") as store:
        assert store.allocation_versions("arms") == [one, two]
        # The variant order is kept as published.
        assert list(store.allocation_versions()[0].weights) == ["c", "a", "b"]
        assert store.allocation_versions("other") == []
        assert store.allocation_versions("arms", latest=True) == [two]
