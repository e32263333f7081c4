"""End to end, as a newcomer runs it: `diana-demo` (the README's demo command, shortened) on a
private stack of real servers, once per output sink. The sink's totals equal exactly what
the traffic produced, P(best) favours the better variant, the data-quality checks passed, and
`diana-stack down` leaves no process behind."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from scipy.stats import chisquare

from diana_pipeline.analysis import SRM_WARN_P
from diana_pipeline.assets.statistics import CHECKS
from diana_pipeline.config import load_config
from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.harness.stack import free_port, private_stack_environment
from diana_pipeline.sinks.console_log import PREFIX
from diana_pipeline.sinks.csv_files import PosteriorCsvFiles
from diana_pipeline.sinks.dynamodb_table import PosteriorTable
from diana_pipeline.sinks.records import Record, decode
from diana_pipeline.store import EventStore
from diana_pipeline.totals import latest_totals
from diana_pipeline_tests.conftest import run_command

pytestmark = pytest.mark.servers


def sink_records(sink: str, env: dict[str, str], dagster_home: Path) -> list[Record]:
    """What the sink itself holds: the files, the table, or the log lines of the runs."""
    config = load_config(REPO_ROOT / "experiments.yaml", env=env)
    if sink == "csv":
        return PosteriorCsvFiles(config.infrastructure.csv.directory).read()
    if sink == "dynamodb":
        settings = config.infrastructure.dynamodb
        return PosteriorTable(settings.endpoint_url, settings.region, settings.table).read()
    instance = DagsterInstance.from_config(str(dagster_home))
    try:
        lines = [
            entry.user_message
            for run in instance.get_runs()
            for entry in instance.all_logs(run.run_id)
            if entry.user_message.startswith(PREFIX)
        ]
    finally:
        instance.dispose()
    return [decode(json.loads(line.removeprefix(PREFIX)), "log line") for line in lines]


def processes_of(home: Path) -> list[psutil.Process]:
    """Every process started for this stack folder: servers, code servers, run workers."""
    found = []
    for process in psutil.process_iter():
        try:
            environment = process.environ()
            command = " ".join(process.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if environment.get("DIANA_HOME") == str(home) or str(home) in command:
            found.append(process)
    return found


def assert_stored_once(env: dict[str, str], sent: int) -> None:
    """Every event sent is in the store exactly once, nothing was rejected."""
    infrastructure = load_config(REPO_ROOT / "experiments.yaml", env=env).infrastructure
    with EventStore.open(infrastructure.store_location, read_only=True) as store:
        assert store.count_events() == sent
        rejected = store.connection.execute("SELECT count(*) FROM rejected_events")
        assert rejected.fetchone() == (0,)


DONE = {AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED}


# The scale profile with two ingestion runs at once (partition groups, the counting fold).
SCALE = {
    "DIANA_STACK_PROFILE": "scale",
    "DIANA_EVENT_STORE": "ducklake",
    "DIANA_PARALLEL_RUNS": "2",
}


@pytest.mark.parametrize(
    ("sink", "profile"),
    [("csv", {}), ("dynamodb", {}), ("console", {}), ("console", SCALE)],
    ids=["csv", "dynamodb", "console", "scale-ducklake"],
)
def test_demo_end_to_end(
    sink: str, profile: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The scale profile's PostgreSQL runs as its own user when the tests run as root: the
    # stack folder must be reachable by it, which pytest's private folders are not.
    home = Path(tempfile.mkdtemp(prefix="diana-e2e-")) / "stack" if profile else tmp_path / "stack"
    home.parent.chmod(0o755)
    env = {**private_stack_environment(home, free_port), "DIANA_OUTPUT_SINK": sink, **profile}
    # This process reads the store too: DuckLake's catalog password is in the stack folder.
    monkeypatch.setenv("DIANA_HOME", str(home))
    dagster_home = home / "dagster_home"
    try:
        demo = run_command(
            "diana-demo",
            # The timeout outlasts the statistics schedule's 5 minutes: a demo that crosses
            # the hour can miss the new hour's refresh until the schedule runs (a race of the
            # sensor's windows and the automation, noted on issue 20 to fix).
            *("--eps", "20", "--duration", "20", "--timeout", "420", "--format", "json"),
            # Any seed does: the sample-ratio check is held to a chi-square computed below
            # from the users sent.
            *("--seed", "8"),
            env=env,
            timeout=720,
        )
        assert demo.returncode == 0, demo.stderr[-4000:]
        if profile:  # this process reads the instance, in PostgreSQL, too
            monkeypatch.setenv("DIANA_POSTGRES_HOST", "127.0.0.1")
            monkeypatch.setenv("DIANA_POSTGRES_PORT", env["DIANA_POSTGRES_PORT"])
            password = (home / "postgres" / "password").read_text().strip()
            monkeypatch.setenv("DIANA_POSTGRES_PASSWORD", password)
        result = json.loads(demo.stdout)
        assert "Dagster UI: http://127.0.0.1:" in demo.stderr
        assert "Stop everything with: make down" in demo.stderr
        assert result["sink"] == sink
        traffic = result["traffic"]
        assert traffic["failed"] == {} and traffic["sent"] == traffic["delivered"] > 300

        # The sink's totals are exactly the users the traffic exposed and converted.
        expected: Counter[tuple[str, str, str]] = Counter()
        for row in traffic["expected_counts"]:
            expected[(row["test_id"], row["variant"], "exposures")] = row["exposed_users"]
            expected[(row["test_id"], row["variant"], "successes")] = row["converted_users"]
        assert latest_totals(sink_records(sink, env, dagster_home)) == expected

        # P(best) favours the better variant (0.55 against 0.35).
        [report] = result["tests"]
        best = {v["variant"]: v["prob_best"] for v in report["variants"]}
        assert best["treatment"] > 0.95 > best["control"]

        # The sample-ratio check's last verdict is the one a chi-square of the users sent
        # gives (computed here with scipy); every evaluation of the other checks passed (a
        # run still in progress has planned ones: those are not evaluations yet).
        exposed = [expected[(t, v, k)] for t, v, k in sorted(expected) if k == "exposures"]
        fair = chisquare(exposed).pvalue >= SRM_WARN_P
        instance = DagsterInstance.from_config(str(dagster_home))
        try:
            for name in CHECKS:
                key = AssetCheckKey(AssetKey("variant_increments"), name)
                history = instance.event_log_storage.get_asset_check_execution_history(
                    key, limit=1000, status=set(AssetCheckExecutionRecordStatus)
                )
                statuses = Counter(record.status for record in history)
                if name == "sample_ratio_mismatch":
                    done = [r for r in history if r.status in DONE]
                    last = max(done, key=lambda r: r.create_timestamp)
                    want = "SUCCEEDED" if fair else "FAILED"
                    assert last.status == AssetCheckExecutionRecordStatus[want], (exposed, last)
                    continue
                assert statuses[AssetCheckExecutionRecordStatus.SUCCEEDED] > 0, name
                assert statuses[AssetCheckExecutionRecordStatus.FAILED] == 0, (name, statuses)
        finally:
            instance.dispose()
        if profile:  # DuckLake's tables, while their catalog's server is up
            assert_stored_once(env, traffic["sent"])
    finally:
        down = run_command("diana-stack", "down", env=env, timeout=180)
    assert down.returncode == 0, down.stderr

    if not profile:  # the file, once the runs let go of it
        assert_stored_once(env, traffic["sent"])

    # Nothing is left running: no server, code server or run worker of this stack.
    deadline = time.monotonic() + 30
    while processes_of(home) and time.monotonic() < deadline:
        time.sleep(1)
    assert processes_of(home) == []
    if profile:
        shutil.rmtree(home.parent, ignore_errors=True)
