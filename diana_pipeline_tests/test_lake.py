"""The DuckLake store against a real PostgreSQL (the project's stack, scale profile): one
writer at a time across processes, readers alongside it, a clear error for a catalog that
cannot be reached, and no password in it."""

from __future__ import annotations

import shutil
import threading
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from diana_pipeline import lake as lake_module
from diana_pipeline.config import load_config
from diana_pipeline.harness.kafka import KafkaForTests
from diana_pipeline.harness.paths import SHIPPED_CONFIG
from diana_pipeline.harness.postgres import PostgresForTests, postgres_for_tests
from diana_pipeline.ingestion import ingest
from diana_pipeline.jobs import lake_maintenance, lake_maintenance_job
from diana_pipeline.lake import DuckLakeSettings, LakeError, maintain
from diana_pipeline.resources import EventStoreResource, ExperimentsResource
from diana_pipeline.store import EventStore
from diana_pipeline_tests.counting.test_rules import CLICK, SHOW, config_with_one_hour_window
from diana_pipeline_tests.counting.test_state import add, stored_steps
from diana_pipeline_tests.ingestion.conftest import all_ranges, produce

pytestmark = pytest.mark.servers


@pytest.fixture
def lake(
    postgres: PostgresForTests, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> DuckLakeSettings:
    env = postgres.new_lake(tmp_path)
    monkeypatch.setenv("DIANA_POSTGRES_PASSWORD", env["DIANA_POSTGRES_PASSWORD"])
    location = load_config(SHIPPED_CONFIG, env=env).infrastructure.store_location
    assert isinstance(location, DuckLakeSettings)
    return location


def test_a_second_writer_waits_for_the_first_and_readers_do_not(lake: DuckLakeSettings) -> None:
    with EventStore.open(lake) as first:
        first.connection.execute("INSERT INTO counting_state VALUES ('written by the first', 0, 0)")
        with (
            pytest.raises(LakeError, match="another process writes"),
            EventStore.open(lake, lock_wait_s=0.5),
        ):
            pass
        with EventStore.open(lake, read_only=True) as reader:
            assert reader.count_events() == 0
        # A writer waiting when the first lets go gets in, and sees what it wrote.
        seen: list[object] = []

        def second_writer() -> None:
            with EventStore.open(lake, lock_wait_s=120) as second:
                seen.append(
                    second.connection.execute("SELECT rules FROM counting_state").fetchone()
                )

        waiting = threading.Thread(target=second_writer)
        waiting.start()
        assert seen == []
    waiting.join(timeout=120)
    assert seen == [("written by the first",)]


def test_a_commit_conflict_is_run_again_and_lands_once(lake: DuckLakeSettings) -> None:
    """Another writer commits a change to the same rows while a transaction is open: DuckLake
    refuses the second commit; `retried` runs the transaction again, on the other's result."""
    with (
        EventStore.open(lake, hold_writer_lock=False) as first,
        EventStore.open(lake, hold_writer_lock=False) as second,
    ):
        second.connection.execute("INSERT INTO counting_state VALUES ('rules', 0, 0)")
        attempts: list[int] = []

        def add_one() -> int:
            attempts.append(len(attempts) + 1)
            second.connection.execute("UPDATE counting_state SET events = events + 1")
            if len(attempts) == 1:  # meanwhile, the other writer commits
                first.connection.execute("UPDATE counting_state SET events = events + 10")
            return len(attempts)

        assert second.retried(add_one) == 2

        def fails() -> None:
            attempts.append(0)
            raise ValueError("not a conflict")

        attempts.clear()
        with pytest.raises(ValueError, match="not a conflict"):
            second.retried(fails)
        assert attempts == [0]  # other errors are not run again
    with EventStore.open(lake, read_only=True) as reader:
        assert reader.connection.execute("SELECT events FROM counting_state").fetchall() == [(11,)]


def test_an_unreachable_catalog_is_one_clear_error_without_the_password(
    postgres: PostgresForTests, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIANA_POSTGRES_PASSWORD", "not-to-be-shown")
    nowhere = DuckLakeSettings("host=127.0.0.1 port=1 dbname=diana user=diana", str(tmp_path))
    for read_only in (False, True):
        refused = pytest.raises(LakeError, match="cannot open the event store")
        with refused as raised, EventStore.open(nowhere, read_only=read_only):
            pass
        assert "not-to-be-shown" not in str(raised.value)


def test_ingestion_while_the_catalog_is_down_fails_clearly_and_its_retry_loses_nothing(
    kafka: KafkaForTests, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server of its own, since it is stopped half-way (the session's serves other tests)."""
    with postgres_for_tests() as server:
        topic = kafka.new_topic(partitions=3)
        env = {**kafka.env_for(topic), **server.new_lake(tmp_path)}
        monkeypatch.setenv("DIANA_POSTGRES_PASSWORD", env["DIANA_POSTGRES_PASSWORD"])
        config = load_config(SHIPPED_CONFIG, env=env)
        sent = produce(config, 3000, seed=5)
        [ranges] = all_ranges(config)
        server.server.process.stop()
        with pytest.raises(LakeError, match=f"port={server.port}.*(refused|failed)"):
            ingest(config, ranges, run_id="while down")
        server.server.up()
        result = ingest(config, ranges, run_id="retry")
        assert result.counts.events == sum(sent.events.values())
        with EventStore.open(config.infrastructure.store_location, read_only=True) as store:
            assert store.count_events() == sum(sent.events.values())
            assert store.ingested(topic, ranges[0]) and store.ingested(topic, ranges[-1])


def test_maintenance_merges_the_small_files_and_every_row_stays(
    lake: DuckLakeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thirty commits of a few dozen events each, as a live stream writes them: the
    maintenance job (in process, as its schedule runs it) merges their files; expiring every
    snapshot then deletes the files none reads. The events and the counting state read the
    same."""
    config = config_with_one_hour_window()
    with EventStore.open(lake) as store:
        for batch in range(30):
            rows = [(f"e{batch}-{i}", SHOW if i % 3 else CLICK, "control", f"u{batch % 7}-{i}",
                     batch + i % 50) for i in range(60)]  # fmt: skip
            add(store, config, rows, offset=batch * 60)
        before = (store.count_events(), stored_steps(store))
    files = list(Path(lake.data_path).rglob("*.parquet"))

    resources = {
        "experiments": ExperimentsResource(config_file=str(SHIPPED_CONFIG)),
        "event_store": EventStoreResource(
            ducklake_catalog=lake.catalog, ducklake_data_path=lake.data_path
        ),
    }
    result = lake_maintenance_job.execute_in_process(resources=resources)
    assert result.success
    assert result.output_for_node("maintain_lake")["files merged"] > 0
    with EventStore.open(lake) as store:
        assert (store.count_events(), stored_steps(store)) == before
        figures = maintain(store.connection, keep=timedelta(0))
        assert figures["files deleted"] > 0
        assert (store.count_events(), stored_steps(store)) == before
    assert len(list(Path(lake.data_path).rglob("*.parquet"))) < len(files)


def test_only_a_ducklake_store_gets_the_maintenance_job() -> None:
    for store, expected in (("duckdb", []), ("ducklake", ["lake_maintenance_job"])):
        config = load_config(SHIPPED_CONFIG, env={"DIANA_EVENT_STORE": store})
        jobs, schedules = lake_maintenance(config)
        assert [job.name for job in jobs] == expected
        assert [s.cron_schedule for s in schedules] == ["0 * * * *"] * len(expected)


def _file_identity(path: Path) -> str:
    found = path.stat()
    return f"{found.st_dev} {found.st_ino} {found.st_size} {found.st_mtime_ns}"


def test_each_extension_is_verified_once_then_loads_without_being_hashed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    root = lake_module.extension_directory.__wrapped__()
    [folder] = (root / f"v{duckdb.__version__}").iterdir()
    for name in lake_module.EXTENSIONS:
        recorded = (folder / f"{name}.verified").read_text()
        assert recorded == _file_identity(folder / f"{name}.duckdb_extension")
    connection = duckdb.connect(
        config={"autoinstall_known_extensions": False, "extension_directory": str(root),
                "allow_unsigned_extensions": True}
    )  # fmt: skip
    for name in ("ducklake", "postgres_scanner"):
        connection.execute(f"LOAD {name}")  # offline, from the packages' files
    connection.close()

    def no_connection(*args: object, **kwargs: object) -> None:  # a fake: nothing may load
        raise AssertionError("an unchanged extension was verified again")

    monkeypatch.setattr(lake_module.duckdb, "connect", no_connection)
    lake_module._check_signatures(root, folder, list(lake_module.EXTENSIONS))


def test_an_altered_extension_file_is_refused_even_where_another_was_verified(
    tmp_path: Path,
) -> None:
    root = lake_module.extension_directory()
    [folder] = (root / f"v{duckdb.__version__}").iterdir()
    own = tmp_path / f"v{duckdb.__version__}" / folder.name
    own.mkdir(parents=True)
    extension = own / "ducklake.duckdb_extension"
    shutil.copy(folder / "ducklake.duckdb_extension", extension)
    # Verified before (its record), then replaced by a file with one byte changed. Loading
    # the intact copy here would put a second copy of the library in this process.
    (own / "ducklake.verified").write_text(_file_identity(extension))
    altered = bytearray(extension.read_bytes())
    altered[len(altered) // 2] ^= 0xFF
    replacement = own / "replacement"
    replacement.write_bytes(altered)
    replacement.replace(extension)
    with pytest.raises(LakeError, match=r"refused the extension ducklake .*signature"):
        lake_module._check_signatures(tmp_path, own, ["ducklake"])
    (own / "ducklake.verified").unlink()  # never verified
    with pytest.raises(LakeError, match="refused the extension ducklake"):
        lake_module._check_signatures(tmp_path, own, ["ducklake"])


def test_each_connection_spills_into_a_folder_of_its_own(
    lake: DuckLakeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two connections started in one working directory, as two runs are. By default both
    spilled into `.tmp` there, and the first one's close removed the folder: the second's
    next read of what it had spilled crashed its process."""
    monkeypatch.chdir(tmp_path)
    with EventStore.open(lake):  # sets the lake up
        pass
    rows = 3_000_000
    spills = (
        f"CREATE TEMP TABLE spilled AS SELECT range AS i, repeat('x', 50) AS s FROM range({rows})"
    )
    with EventStore.open(lake, read_only=True, memory_limit="60MB") as second:
        with EventStore.open(lake, read_only=True, memory_limit="60MB") as first:
            folders = []
            for store in (first, second):
                store.connection.execute(spills)
                setting = "SELECT current_setting('temp_directory')"
                folders.append(Path(store.connection.execute(setting).fetchone()[0]))
            assert folders[0] != folders[1]
            assert all(any(folder.iterdir()) for folder in folders)  # both spilled
            assert not (tmp_path / ".tmp").exists()
        assert not folders[0].exists()
        read = second.connection.execute("SELECT count(*), sum(i) FROM spilled").fetchone()
        assert read == (rows, rows * (rows - 1) // 2)
    assert not folders[1].exists()
