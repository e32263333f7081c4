"""The scale profile's PostgreSQL, started by the project's stack code: on loopback only,
with a password kept in the stack folder, holding the Dagster instance's storage (runs and
event logs of a real run land there), and stopped by `down`."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg2
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from diana_pipeline.harness.stack import private_stack
from diana_pipeline.local_stack.errors import StackError
from diana_pipeline.local_stack.postgres import SUPERUSER
from diana_pipeline_tests.conftest import run_command

pytestmark = pytest.mark.servers


@pytest.fixture
def reachable_home() -> Iterator[Path]:
    """A stack folder the server's own user can reach when the tests run as root (pytest's
    temporary folders are private to their user; PostgreSQL refuses to run as root)."""
    home = Path(tempfile.mkdtemp(prefix="diana-scale-"))
    home.chmod(0o755)
    yield home / "stack"
    shutil.rmtree(home, ignore_errors=True)


def test_the_scale_profile_keeps_dagsters_storage_in_postgres(
    reachable_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scale = {"DIANA_STACK_PROFILE": "scale"}
    with private_stack(reachable_home, scale, with_dagster=True, with_dynamodb=False) as own:
        port = own.settings.postgres_port
        status = {s.name: s for s in own.stack.status()}
        assert status["postgres"].running
        assert status["postgres"].listening == [f"127.0.0.1:{port}"]
        server = psutil.Process(status["postgres"].pid)
        password_file = own.settings.home / "postgres" / "password"
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        # The instance the webserver and daemon run on: its runs go to PostgreSQL.
        monkeypatch.setenv("DAGSTER_HOME", str(own.settings.dagster_home))
        monkeypatch.setenv("DIANA_POSTGRES_PASSWORD", password_file.read_text().strip())
        monkeypatch.setenv("DIANA_POSTGRES_PORT", str(port))
        monkeypatch.setenv("DIANA_POSTGRES_HOST", "127.0.0.1")
        instance = DagsterInstance.get()
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        # Events sent: the Kafka sensor's ingestion run is recorded there, and succeeds.
        sent = run_command("diana-traffic", "--count", "300", "--unthrottled", env=own.env)
        assert sent.returncode == 0, sent.stderr
        done = RunsFilter(statuses=[DagsterRunStatus.SUCCESS])
        deadline = time.monotonic() + 180
        while not instance.get_runs_count(done):
            assert time.monotonic() < deadline, "no ingestion run succeeded"
            time.sleep(0.5)
        with psycopg2.connect(
            host="127.0.0.1", port=port, dbname="dagster", user=SUPERUSER,
            password=password_file.read_text().strip(),
        ) as connection, connection.cursor() as cursor:  # fmt: skip
            cursor.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'runs'"
            )
            assert cursor.fetchone() == (1,)
            # The instance keeps its connections (instance_storage.py): fifty reads open a
            # few sessions at most, where dagster-postgres's own classes open one each (the
            # daemon's sessions meanwhile count too, hence the margin).
            sessions = "SELECT sessions FROM pg_stat_database WHERE datname = 'dagster'"
            cursor.execute(sessions)
            before = cursor.fetchone()[0]
            for _ in range(50):
                instance.get_runs_count(done)
                instance.event_log_storage.get_concurrency_info("duckdb")
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(sessions)
            assert cursor.fetchone()[0] - before < 25
        instance.dispose()
    assert not server.is_running()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the cluster to another user")
def test_a_folder_the_server_user_cannot_reach_is_one_clear_error(tmp_path: Path) -> None:
    private = tmp_path / "stack"  # under pytest's folder, private to root
    scale = {"DIANA_STACK_PROFILE": "scale"}
    with (
        pytest.raises(StackError, match="who cannot reach"),
        private_stack(private, scale, with_kafka=False, with_dynamodb=False),
    ):
        pass
