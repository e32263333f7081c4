"""The reliability scenarios (reliability/), at a size that fits CI: hostile input against a
real broker, bad configuration through the real entry points, and faults (kill -9, Kafka
and DynamoDB Local stopped) on a private stack while traffic flows."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from diana_pipeline.harness.kafka import KafkaForTests
from diana_pipeline.harness.paths import REPO_ROOT
from reliability import config as reliability_config
from reliability import faults, hostile, load


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
# Past the suite's 600 s: the scenario's own deadline on ingestion catching up (600 s after
# the traffic) must come first, for its account of the runs and the ledger.
@pytest.mark.timeout(1200)
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


# What a credential looks like in a file: AWS key ids, private keys, passwords in URLs, and
# a password, secret, token or key assigned a quoted literal (not a ${VARIABLE}).
CREDENTIAL = re.compile(
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"|[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@"
    r"|(?i:password|secret|token|access_key)[a-z_]*[\"']?\s*[:=]\s*[\"'][^\"'$]{6,}[\"']"
)


def test_no_credentials_in_the_repository() -> None:
    planted = [
        "AKIA" + "ABCDEFGHIJKLMNOP",
        "-----BEGIN RSA " + "PRIVATE KEY-----",
        "postgres://diana:" + "hunter2@db:5432/x",
        'aws_secret_access_key = "' + "wJalrXUtnFEMI/K7MDENG" + '"',
    ]
    assert all(CREDENTIAL.search(text) for text in planted)  # the scan would see them
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    found = []
    for name in filter(None, tracked):
        path = REPO_ROOT / name.decode()
        if not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        found += [f"{name.decode()}: {match.group(0)}" for match in CREDENTIAL.finditer(text)]
    assert len(tracked) > 50
    assert not found, found


@pytest.mark.servers
def test_an_unthrottled_load_is_ingested_exactly_with_the_lag_back_to_zero_and_memory_flat(
    tmp_path: Path,
) -> None:
    result = load.run_load(tmp_path / "stack", events=200_000, batch=50_000, seed=4)
    assert result.sent.sent == 200_000
    assert result.events_stored == result.expected_events
    assert result.offsets_ingested == result.sent.sent
    assert result.lag_at_end == 0
    assert max(s.produced - s.committed for s in result.samples) > 0  # there was a lag
    assert len(result.worker_peaks_mb) >= 4, result.worker_peaks_mb
    assert result.flat, result.worker_peaks_mb


def test_only_sink_writes_and_reads_of_a_stopped_broker_count_as_expected_step_failures() -> None:
    """Pure unit test of the faults scenario's classification (no servers)."""
    outage = [(1000.0, 1020.0)]
    unreachable = "Kafka is unreachable: Local: Broker transport failure"
    assert faults.StepFailure("r", "published_posteriors", "DynamoDB down", 5.0).expected(outage)
    assert faults.StepFailure("r", "events", unreachable, 1010.0).expected(outage)
    assert faults.StepFailure("r", "events", unreachable, 1060.0).expected(outage)
    assert not faults.StepFailure("r", "events", unreachable, 1500.0).expected(outage)
    assert not faults.StepFailure("r", "events", "duckdb lock", 1010.0).expected(outage)
    assert not faults.StepFailure("r", "posteriors", unreachable, 1010.0).expected(outage)
