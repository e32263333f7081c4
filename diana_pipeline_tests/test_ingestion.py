"""Ingestion against a real broker: exact counts with noise, replays change nothing, every
partition drained, the sensor's planning, and rebuilding a window from Kafka."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import duckdb
import pytest
from dagster import materialize

from diana_pipeline import ingestion
from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.harness.kafka import KafkaForTests
from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.ingestion import ingest, make_consumer, plan_runs, watermarks
from diana_pipeline.partitions import partition_key
from diana_pipeline.producer import make_producer
from diana_pipeline.resources import ExperimentsResource
from diana_pipeline.store import EventStore, OffsetRange
from diana_pipeline.traffic import NoiseRates, TrafficRun, build_spec

pytestmark = pytest.mark.servers


def produce(config: ExperimentsConfig, count: int, seed: int, noise: NoiseRates | None = None):
    spec = build_spec(
        config, {"control": 0.35, "treatment": 0.55}, eps=None, count=count, seed=seed, noise=noise
    )
    return TrafficRun(config, spec).run()


def all_ranges(config: ExperimentsConfig, max_batch: int = 10**9) -> list[list[OffsetRange]]:
    consumer = make_consumer(config)
    try:
        marks = watermarks(consumer, config.infrastructure.kafka.topic)
    finally:
        consumer.close()
    return plan_runs(marks, {}, max_batch, 1000)[0]


def snapshot(path: Path) -> tuple:
    with duckdb.connect(str(path), read_only=True) as con:
        return tuple(
            con.execute(f"SELECT * EXCLUDE ({ts}) FROM {table} ORDER BY ALL").fetchall()
            for table, ts in [
                ("events", "ingested_at"),
                ("rejected_events", "rejected_at"),
                ("ingested_ranges", "ingested_at"),
            ]
        )


@pytest.fixture
def setup(kafka: KafkaForTests, tmp_path: Path) -> tuple[ExperimentsConfig, Path]:
    topic = kafka.new_topic(partitions=3)
    env = {**kafka.env_for(topic), "DIANA_DUCKDB_PATH": str(tmp_path / "events.duckdb")}
    from diana_pipeline.config import load_config

    return load_config(REPO_ROOT / "experiments.yaml", env=env), tmp_path / "events.duckdb"


def test_noisy_traffic_lands_exactly(setup: tuple[ExperimentsConfig, Path]) -> None:
    config, path = setup
    noise = NoiseRates(duplicate=0.03, malformed=0.03, orphan_click=0.02, cross_variant=0.02)
    sent = produce(config, 30_000, seed=11, noise=noise)
    results = [
        ingest(config, ranges, run_id="test") for ranges in all_ranges(config, max_batch=7000)
    ]
    valid_unique = sum(sent.events.values())
    assert sum(r.counts.events for r in results) == valid_unique
    assert sum(r.counts.duplicates for r in results) == sent.noise["duplicate deliveries"]
    assert sum(r.counts.rejected for r in results) == sent.noise["malformed messages"]
    assert all(r.lost == 0 for r in results)
    assert results[-1].lag == {0: 0, 1: 0, 2: 0}
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchone() == (
            valid_unique,
            valid_unique,
        )
        by_kind = Counter(
            dict(
                con.execute(
                    "SELECT test_id || '/' || event_type || '/' || variant, count(*) "
                    "FROM events GROUP BY 1"
                ).fetchall()
            )
        )
        assert by_kind == Counter({"/".join(k): n for k, n in sent.events.items()})
        reasons = [row[0] for row in con.execute("SELECT reason FROM rejected_events").fetchall()]
        assert all(reasons) and len(reasons) == sent.noise["malformed messages"]
        assert con.execute("SELECT count(DISTINCT kafka_partition) FROM events").fetchone()[0] == 3
        # Offsets covered once each, and everything on the topic accounted for.
        stored, rejected, duplicates = con.execute(
            "SELECT sum(events), sum(rejected), sum(duplicates) FROM ingested_ranges"
        ).fetchone()
        assert stored + rejected + duplicates == sent.sent


SQL_LOOKALIKES = [
    "x'); DROP TABLE events; --",
    "Robert'); DELETE FROM ingested_ranges WHERE ('1'='1",
    "' OR 1=1 --",
    "\"; UPDATE events SET variant = 'treatment'; --",
    "?",
    "$1",
    "%s %d {0} {{}}",
    "a\\b",  # a backslash: escaped in JSON, so the full validator takes it
    "ユーザー'--",
]


def test_event_fields_that_look_like_sql_are_stored_verbatim(
    setup: tuple[ExperimentsConfig, Path],
) -> None:
    """Event fields reach DuckDB as data (registered arrays, parameters), never as SQL text."""
    config, path = setup
    test = config.tests[0]
    now = datetime.now(UTC)
    stamp = f"{now:%Y-%m-%dT%H:%M:%S}.{now.microsecond // 1000:03d}Z"
    producer = make_producer(config.infrastructure.kafka.bootstrap_servers)
    sent = {}
    for i, text in enumerate(SQL_LOOKALIKES):
        event = {
            "event_id": f"{text}#{i}",
            "event_type": test.exposure_event,
            "test_id": test.test_id,
            "variant": test.variant_names[i % 2],
            "user_id": text,
            "timestamp": stamp,
        }
        sent[event["event_id"]] = text
        producer.produce(config.infrastructure.kafka.topic, json.dumps(event).encode())
    # An unknown test whose name is SQL: rejected, its raw bytes kept as they came.
    unknown = json.dumps({**event, "test_id": "x'; DROP TABLE rejected_events; --"}).encode()
    producer.produce(config.infrastructure.kafka.topic, unknown)
    assert producer.flush(30) == 0
    [ranges] = all_ranges(config)
    result = ingest(config, ranges, run_id="sql")
    assert result.counts.events == len(SQL_LOOKALIKES) and result.counts.rejected == 1
    with duckdb.connect(str(path), read_only=True) as con:
        stored = dict(con.execute("SELECT event_id, user_id FROM events").fetchall())
        assert stored == sent
        assert con.execute("SELECT raw FROM rejected_events").fetchall() == [(unknown,)]
        assert con.execute("SELECT count(*) FROM ingested_ranges").fetchall()[0][0] > 0


def test_the_same_range_twice_changes_nothing(setup: tuple[ExperimentsConfig, Path]) -> None:
    config, path = setup
    produce(config, 5000, seed=12, noise=NoiseRates(malformed=0.05))
    [ranges] = all_ranges(config)
    first = ingest(config, ranges, run_id="first")
    before = snapshot(path)
    second = ingest(config, ranges, run_id="second")
    assert second.ranges == [] and second.skipped == ranges
    assert snapshot(path) == before
    assert first.counts.events > 0


def test_a_run_killed_between_chunks_is_finished_by_its_retry(
    setup: tuple[ExperimentsConfig, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, path = setup
    sent = produce(config, 3_000, seed=5)
    [ranges] = all_ranges(config)
    monkeypatch.setattr(ingestion, "CHUNK", 400)
    monkeypatch.setattr(ingestion, "CONSUME_BATCH", 100)
    real_record_range = EventStore.record_range
    chunks_stored = []

    def dies_at_the_fourth_chunk(self, topic, offset_range, run_id, counts, lost) -> None:
        if len(chunks_stored) == 3:
            raise KeyboardInterrupt("killed")  # like a kill: the open transaction is lost
        chunks_stored.append(offset_range)
        real_record_range(self, topic, offset_range, run_id, counts, lost)

    monkeypatch.setattr(EventStore, "record_range", dies_at_the_fourth_chunk)
    with pytest.raises(KeyboardInterrupt):
        ingest(config, ranges, run_id="killed")
    monkeypatch.setattr(EventStore, "record_range", real_record_range)
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM ingested_ranges").fetchone() == (3,)
        stored = sum(r.size for r in chunks_stored)
        assert con.execute("SELECT count(*) FROM events").fetchone()[0] == stored > 0
    retry = ingest(config, ranges, run_id="retry")
    assert retry.counts.duplicates == 0 and retry.lost == 0
    valid = sum(sent.events.values())
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchone() == (
            valid,
            valid,
        )
        # The ledger's chunks tile every range exactly: no gap, no overlap.
        rows = con.execute(
            "SELECT kafka_partition, start_offset, end_offset FROM ingested_ranges ORDER BY ALL"
        ).fetchall()
    for offset_range in ranges:
        mine = [(s, e) for p, s, e in rows if p == offset_range.partition]
        assert mine[0][0] == offset_range.start and mine[-1][1] == offset_range.end
        assert all(a[1] == b[0] for a, b in pairwise(mine))
    again = ingest(config, ranges, run_id="again")
    assert again.skipped == ranges and again.counts.events == 0


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
        resource = ExperimentsResource(config_file=str(REPO_ROOT / "experiments.yaml"))
        from diana_pipeline.definitions import events

        env = {
            "DIANA_KAFKA_TOPIC": config.infrastructure.kafka.topic,
            "DIANA_DUCKDB_PATH": str(store),
        }
        with pytest.MonkeyPatch.context() as patch:
            for key, value in {**_kafka_env(config), **env}.items():
                patch.setenv(key, value)
            result = materialize(
                [events], partition_key=partition_key(window), resources={"experiments": resource}
            )
        assert result.success
        with duckdb.connect(str(store), read_only=True) as con:
            return con.execute(query, [window]).fetchall()

    # Over the live store: nothing changes. Into an empty store: the same rows come back.
    assert backfill(path) == live_rows
    assert backfill(tmp_path / "rebuilt.duckdb") == live_rows


def _kafka_env(config: ExperimentsConfig) -> dict[str, str]:
    return {"DIANA_KAFKA_BOOTSTRAP_SERVERS": config.infrastructure.kafka.bootstrap_servers}


# ---- planning (pure) ---------------------------------------------------------------------------


def test_plan_runs_caps_batches_and_advances_the_cursor() -> None:
    marks = {0: (0, 250), 1: (100, 130), 2: (0, 0)}
    runs, cursor = plan_runs(marks, {0: 50}, max_batch=100, max_runs=10)
    assert runs == [
        [OffsetRange(0, 50, 150)],
        [OffsetRange(0, 150, 250)],
        [OffsetRange(1, 100, 130)],
    ]
    assert cursor == {0: 250, 1: 130, 2: 0}
    assert plan_runs(marks, cursor, 100, 10) == ([], cursor)


def test_plan_runs_respects_the_run_limit() -> None:
    runs, cursor = plan_runs({0: (0, 1000)}, {}, max_batch=100, max_runs=3)
    assert [r[0].start for r in runs] == [0, 100, 200]
    assert cursor == {0: 300}
    runs, _ = plan_runs({0: (0, 10), 1: (0, 10)}, {}, max_batch=100, max_runs=5)
    assert runs == [[OffsetRange(0, 0, 10), OffsetRange(1, 0, 10)]]


def test_partition_keys_match_the_window() -> None:
    assert partition_key(datetime(2026, 11, 21, 10, 0)) == "2026-11-21-10:00"
