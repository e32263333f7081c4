"""The reliability scenarios (reliability/), at a size that fits CI: hostile input against a
real broker, bad configuration through the real entry points, and faults (kill -9, Kafka
and DynamoDB Local stopped) on a private stack while traffic flows."""

from __future__ import annotations

from pathlib import Path

import pytest

from diana_pipeline_tests.kafka_helpers import KafkaForTests
from reliability import config as reliability_config
from reliability import faults, hostile


@pytest.mark.servers
def test_hostile_input_is_rejected_with_its_reason_and_the_good_counts_stay_exact(
    kafka: KafkaForTests, tmp_path: Path
) -> None:
    result = hostile.run_hostile(kafka, tmp_path / "events.duckdb", bad=10_200, good=20_000, seed=3)
    rows = result.by_kind()
    assert [row["kind"] for row in rows] == result.kinds and len(rows) >= 15
    assert sum(int(row["sent"]) for row in rows) >= 10_000  # type: ignore[call-overload]
    missed = {
        row["kind"]: row["sent"] - row["rejected"] for row in rows if row["rejected"] != row["sent"]
    }  # type: ignore[operator]
    assert not missed, f"bad messages without their reason in rejected_events: {missed}"
    assert len(result.rejected) == len(result.bad)
    assert result.events_stored == sum(result.good.events.values())
    assert result.exact


def test_a_bad_config_stops_the_code_location_and_the_command_line_naming_the_field(
    tmp_path: Path,
) -> None:
    cases = ["unknown sink", "unknown nested key", "wrong type", "window start off the grid"]
    for outcome in reliability_config.run_config(tmp_path, cases):
        assert not outcome.code_location_loaded, outcome
        assert outcome.code_location_error is not None, outcome
        assert outcome.stack_exit != 0 and outcome.stack_error.startswith("diana-stack: error:")
        assert outcome.held, outcome


@pytest.mark.servers
def test_after_faults_while_traffic_flows_every_sink_holds_exactly_what_was_sent(
    tmp_path: Path,
) -> None:
    result = faults.run_faults(tmp_path / "stack", eps=400, duration_s=75, kills=5, seed=5)
    happened = [what for _, what in result.faults]
    kills = [what for what in happened if what.startswith("kill -9")]
    assert len(kills) >= 5, happened
    assert "Kafka broker restarted" in happened and "DynamoDB Local restarted" in happened
    assert sum(result.failed_runs.values()) > 0, "the faults should have failed some runs"
    differing = [check for check in result.checks if not check.held]
    assert not differing, f"{differing}\n{faults.render(result)}"
    assert len(result.checks) >= 20
