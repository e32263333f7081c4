"""The output asset through each real sink: the records of every materialised window reach
the sink, materialising twice leaves the same rows and items, load_input reads back what was
written, a sink that is down fails the run and leaves DuckDB intact, and the optional Kafka
topic gets one keyed JSON record per test, variant and window."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource
from dagster import AssetIn, DagsterInstance, asset, materialize

from diana_pipeline.assets.ingestion import build_events
from diana_pipeline.assets.outputs import PUBLISHED
from diana_pipeline.assets.statistics import STATISTICS, build_statistics
from diana_pipeline.config import ExperimentsConfig, load_config
from diana_pipeline.harness.kafka import KafkaForTests
from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.harness.stack import free_port
from diana_pipeline.resources import pipeline_resources
from diana_pipeline.sinks.console_log import PREFIX
from diana_pipeline.sinks.csv_files import PosteriorCsvFiles
from diana_pipeline.sinks.dynamodb_table import PosteriorTable
from diana_pipeline.sinks.records import decode
from diana_pipeline.store import EventStore
from diana_pipeline_tests.counting.test_rules import FIXTURE, store_events

KEYS = ["2026-11-21-10:00", "2026-11-21-11:00", "2026-11-21-12:00"]
ONE_RUN = {
    "dagster/asset_partition_range_start": KEYS[0],
    "dagster/asset_partition_range_end": KEYS[-1],
}


class Pipeline:
    """The statistics and output assets over a DuckDB store of hand-written events, with the
    sink and settings that the environment variables choose."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        experiments = tmp_path / "experiments.yaml"
        experiments.write_text(
            (REPO_ROOT / "experiments.yaml")
            .read_text()
            .replace("conversion_window: 24h", "conversion_window: 1h")
        )
        monkeypatch.setenv("DIANA_DUCKDB_PATH", str(tmp_path / "events.duckdb"))
        monkeypatch.setenv("DIANA_CSV_DIR", str(tmp_path / "output"))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        self.config: ExperimentsConfig = load_config(experiments)
        self.duckdb = tmp_path / "events.duckdb"
        events = build_events(self.config)
        self.assets = [*build_statistics(self.config)[0], events.to_source_asset()]
        self.resources = pipeline_resources(self.config, experiments)
        with EventStore.open(self.duckdb) as store:
            store_events(store, FIXTURE)
        self.instance = DagsterInstance.ephemeral()

    def run(self, extra: list | None = None, raise_on_error: bool = True, **kwargs: object):
        return materialize(
            [*self.assets, *(extra or [])],
            resources=self.resources,
            selection=[*STATISTICS, PUBLISHED, *[a.key for a in extra or []]],
            instance=self.instance,
            raise_on_error=raise_on_error,
            **kwargs,
        )

    def posteriors(self) -> list[dict]:
        with EventStore.open(self.duckdb) as store:
            return store.read_window_range("posteriors", None, None)


def key(record: dict) -> tuple:
    return (record["test_id"], record["variant"], record["window_start"])


def check_round_trip(pipeline: Pipeline, read_sink) -> None:
    """Live window by window, then a single-run backfill of the three again: the sink holds
    each window once, equal to DuckDB's posteriors; a downstream asset loads the same."""
    for partition in KEYS:
        pipeline.run(partition_key=partition)
    first = sorted(read_sink(), key=key)
    assert len(first) == 3 * 2
    assert first == sorted(pipeline.posteriors(), key=key)
    loaded: list[dict] = []

    @asset(ins={"records": AssetIn(PUBLISHED)}, partitions_def=pipeline.assets[0].partitions_def)
    def reader(records: list[dict]) -> None:
        loaded.extend(records)

    pipeline.run(extra=[reader], tags=ONE_RUN)
    # Re-materialised: recomputed at a new timestamp, the same rows otherwise, none doubled.
    second = sorted(read_sink(), key=key)
    assert len(second) == len(first)
    drop = lambda rows: [{k: v for k, v in r.items() if k != "timestamp"} for r in rows]  # noqa: E731
    assert drop(second) == drop(first)
    assert sorted(loaded, key=key) == second == sorted(pipeline.posteriors(), key=key)


def test_csv_sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = Pipeline(tmp_path, monkeypatch, DIANA_OUTPUT_SINK="csv")
    files = PosteriorCsvFiles(pipeline.config.infrastructure.csv.directory)
    check_round_trip(pipeline, files.read)
    [path] = files.directory.glob("posteriors_*.csv")
    assert path.name == "posteriors_2026-11-21.csv"
    assert len(path.read_text().splitlines()) == 1 + 6


def test_console_sink_logs_one_line_per_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = Pipeline(tmp_path, monkeypatch, DIANA_OUTPUT_SINK="console")
    result = pipeline.run(partition_key=KEYS[1])
    lines = [
        entry.user_message
        for entry in pipeline.instance.all_logs(result.run_id)
        if entry.user_message.startswith(PREFIX)
    ]
    logged = [decode(json.loads(line.removeprefix(PREFIX)), "log") for line in lines]
    assert len(logged) == 2
    window = [r for r in pipeline.posteriors() if str(r["window_start"]) == "2026-11-21 11:00:00"]
    assert sorted(logged, key=key) == sorted(window, key=key)
    # A log cannot be read back: load_input reads DuckDB's posteriors, the records' source.
    again = Pipeline(tmp_path / "again", monkeypatch)
    check_round_trip(again, again.posteriors)


@pytest.mark.servers
def test_dynamodb_sink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dynamodb_endpoint: str
) -> None:
    pipeline = Pipeline(
        tmp_path,
        monkeypatch,
        DIANA_OUTPUT_SINK="dynamodb",
        DIANA_DYNAMODB_ENDPOINT=dynamodb_endpoint,
    )
    settings = pipeline.config.infrastructure.dynamodb
    table = PosteriorTable(settings.endpoint_url, settings.region, settings.table)
    if settings.table in table.client.list_tables()["TableNames"]:
        table.client.delete_table(TableName=settings.table)
    check_round_trip(pipeline, table.read)  # the first write creates the table


def test_a_sink_that_is_down_fails_the_run_and_leaves_duckdb_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = Pipeline(
        tmp_path,
        monkeypatch,
        DIANA_OUTPUT_SINK="dynamodb",
        DIANA_DYNAMODB_ENDPOINT=f"http://127.0.0.1:{free_port()}",
    )
    result = pipeline.run(partition_key=KEYS[0], raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "published_posteriors"
    assert (
        "cannot reach DynamoDB at http://127.0.0.1:"
        in failure.event_specific_data.error.to_string()
    )
    # The statistics before it succeeded and are in DuckDB, ready to be written again.
    assert {str(r["window_start"]) for r in pipeline.posteriors()} == {"2026-11-21 10:00:00"}
    assert len(pipeline.posteriors()) == 2


@pytest.mark.servers
def test_records_are_published_to_the_output_topic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka: KafkaForTests
) -> None:
    topic = f"posteriors-out-{uuid.uuid4().hex[:8]}"
    pipeline = Pipeline(
        tmp_path,
        monkeypatch,
        DIANA_KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        DIANA_OUTPUT_TOPIC=topic,
    )
    pipeline.run(tags=ONE_RUN)
    pipeline.run(partition_key=KEYS[0])
    messages = kafka.read_all(topic)
    assert len(messages) == 6 + 2
    published = [decode(json.loads(value), "kafka") for _, value in messages]
    assert {k.decode() for k, _ in messages} == {
        f"{r['test_id']}/{r['variant']}#{r['window_start'].isoformat()}Z" for r in published
    }
    latest = {key(r): r for r in published}  # what compaction keeps: the last per key
    assert sorted(latest.values(), key=key) == sorted(pipeline.posteriors(), key=key)
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    [described] = admin.describe_configs([ConfigResource("topic", topic)]).values()
    assert described.result()["cleanup.policy"].value == "compact"
