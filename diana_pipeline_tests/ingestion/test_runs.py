"""Ingestion runs against a real broker: exact counts with noise, fields that look like SQL
stored as data, replays change nothing, and a run killed between chunks is finished by its
retry."""

from __future__ import annotations

import gc
import json
import threading
from collections import Counter
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import duckdb
import pytest

from diana_pipeline.config import ExperimentsConfig, load_config
from diana_pipeline.counting import CountingRules
from diana_pipeline.counting import state as counting_state
from diana_pipeline.harness.kafka import KafkaForTests
from diana_pipeline.harness.paths import SHIPPED_CONFIG
from diana_pipeline.harness.postgres import PostgresForTests
from diana_pipeline.ingestion import (
    ingest,
    kafka_client,
    make_consumer,
    partition_groups,
    plan_runs,
    runs,
    watermarks,
)
from diana_pipeline.producer import make_producer
from diana_pipeline.store import EventStore, OffsetRange, StoreLocation
from diana_pipeline.traffic import NoiseRates
from diana_pipeline_tests.ingestion.conftest import all_ranges, produce, reading

pytestmark = pytest.mark.servers


def snapshot(path: StoreLocation) -> tuple:
    with reading(path) as con:
        return tuple(
            con.execute(f"SELECT * EXCLUDE ({ts}) FROM {table} ORDER BY ALL").fetchall()
            for table, ts in [
                ("events", "ingested_at"),
                ("rejected_events", "rejected_at"),
                ("ingested_ranges", "ingested_at"),
            ]
        )


def test_noisy_traffic_lands_exactly(setup: tuple[ExperimentsConfig, StoreLocation]) -> None:
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
    with reading(path) as con:
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
    setup: tuple[ExperimentsConfig, StoreLocation],
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
    with reading(path) as con:
        stored = dict(con.execute("SELECT event_id, user_id FROM events").fetchall())
        assert stored == sent
        assert con.execute("SELECT raw FROM rejected_events").fetchall() == [(unknown,)]
        assert con.execute("SELECT count(*) FROM ingested_ranges").fetchall()[0][0] > 0


def test_values_are_stored_exactly_and_bad_ones_kept_with_their_reason(
    setup: tuple[ExperimentsConfig, StoreLocation],
) -> None:
    """#21: an event's optional value lands in `events.value` as sent (NULL when absent); a
    value that is no finite number within ±1e12 rejects its message, raw bytes and reason."""
    config, path = setup
    test = config.tests[0]
    now = datetime.now(UTC)
    base = {
        "event_type": "Purchase",
        "test_id": test.test_id,
        "variant": test.variant_names[0],
        "user_id": "buyer",
        "timestamp": f"{now:%Y-%m-%dT%H:%M:%S}.{now.microsecond // 1000:03d}Z",
    }
    good = {"v1": 24.9, "v2": 0, "v3": -1e12, "v4": None, "v5": 1234567.891}
    bad = {"b1": ("9.99", "got str"), "b2": (True, "got bool"), "b3": (2e12, "out of range")}
    producer = make_producer(config.infrastructure.kafka.bootstrap_servers)
    for event_id, value in good.items():
        event = {**base, "event_id": event_id, "value": value}
        producer.produce(config.infrastructure.kafka.topic, json.dumps(event).encode())
    producer.produce(  # no value at all
        config.infrastructure.kafka.topic, json.dumps({**base, "event_id": "v6"}).encode()
    )
    for event_id, (value, _) in bad.items():
        event = {**base, "event_id": event_id, "value": value}
        producer.produce(config.infrastructure.kafka.topic, json.dumps(event).encode())
    assert producer.flush(30) == 0
    [ranges] = all_ranges(config)
    result = ingest(config, ranges, run_id="values")
    assert (result.counts.events, result.counts.rejected) == (6, 3)
    with reading(path) as con:
        stored = dict(con.execute("SELECT event_id, value FROM events").fetchall())
        reasons = [
            (json.loads(raw)["event_id"], reason)
            for raw, reason in con.execute("SELECT raw, reason FROM rejected_events").fetchall()
        ]
    assert stored == {**good, "v6": None}
    rejected = dict(reasons)
    assert len(reasons) == len(rejected) and rejected.keys() == bad.keys()
    for event_id, (_, expected) in bad.items():
        assert rejected[event_id].startswith("field value") and expected in rejected[event_id]


def test_properties_are_stored_with_sorted_keys_and_bad_ones_kept_with_their_reason(
    setup: tuple[ExperimentsConfig, StoreLocation],
) -> None:
    """#22: an event's optional properties land in `events.properties` as JSON with sorted
    keys (NULL when absent or empty); bad properties reject the message with the reason."""
    config, path = setup
    test = config.tests[0]
    now = datetime.now(UTC)
    base = {
        "event_type": test.exposure_event,
        "test_id": test.test_id,
        "variant": test.variant_names[0],
        "user_id": "someone",
        "timestamp": f"{now:%Y-%m-%dT%H:%M:%S}.{now.microsecond // 1000:03d}Z",
    }
    good = {"p1": {"device": "mobile", "country": "DE"}, "p2": {}, "p3": None}
    bad = {"b1": ["mobile"], "b2": {"Device": "mobile"}, "b3": {"device": 7}}
    producer = make_producer(config.infrastructure.kafka.bootstrap_servers)
    for event_id, properties in {**good, **bad}.items():
        event = {**base, "event_id": event_id, "properties": properties}
        producer.produce(config.infrastructure.kafka.topic, json.dumps(event).encode())
    assert producer.flush(30) == 0
    [ranges] = all_ranges(config)
    result = ingest(config, ranges, run_id="properties")
    assert (result.counts.events, result.counts.rejected) == (3, 3)
    with reading(path) as con:
        stored = dict(con.execute("SELECT event_id, properties FROM events").fetchall())
        reasons = dict(
            (json.loads(raw)["event_id"], reason)
            for raw, reason in con.execute("SELECT raw, reason FROM rejected_events").fetchall()
        )
    assert stored == {"p1": '{"country":"DE","device":"mobile"}', "p2": None, "p3": None}
    assert reasons["b1"] == "field properties must be an object, got list"
    assert reasons["b2"].startswith("properties key 'Device' must be")
    assert reasons["b3"] == "properties.device must be a string, got int"


def test_the_same_range_twice_changes_nothing(
    setup: tuple[ExperimentsConfig, StoreLocation],
) -> None:
    config, path = setup
    produce(config, 5000, seed=12, noise=NoiseRates(malformed=0.05))
    [ranges] = all_ranges(config)
    first = ingest(config, ranges, run_id="first")
    before = snapshot(path)
    second = ingest(config, ranges, run_id="second")
    assert second.ranges == [] and second.skipped == ranges
    assert snapshot(path) == before
    assert first.counts.events > 0


def test_a_run_paces_the_cycle_collector_and_gives_the_pace_back_when_it_fails(
    kafka: KafkaForTests, tmp_path: Path
) -> None:
    topic = kafka.new_topic(partitions=1)
    env = {**kafka.env_for(topic), "DIANA_DUCKDB_PATH": str(tmp_path / "events.duckdb")}
    config = load_config(SHIPPED_CONFIG, env=env)
    before = gc.get_threshold()
    paced_at = []

    def store_that_is_down(memory_limit: str | None = None, appends_only: bool = False):
        paced_at.append(gc.get_threshold()[0])
        raise RuntimeError("the store is down")

    with pytest.raises(RuntimeError, match="the store is down"):
        ingest(config, [OffsetRange(0, 0, 10)], open_store=store_that_is_down)
    assert paced_at == [runs.COLLECT_EVERY] and before[0] != runs.COLLECT_EVERY
    assert gc.get_threshold() == before


def small_chunks(monkeypatch: pytest.MonkeyPatch, fold_every: int) -> None:
    """Chunks of 400 messages, read 100 at a time, folded every `fold_every` chunks."""
    monkeypatch.setattr(runs, "CHUNK", 400)
    monkeypatch.setattr(runs, "FOLD_EVERY", fold_every)
    monkeypatch.setattr(kafka_client, "CONSUME_BATCH", 100)


def test_a_run_killed_between_chunks_is_finished_by_its_retry(
    setup: tuple[ExperimentsConfig, StoreLocation], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, path = setup
    sent = produce(config, 3_000, seed=5)
    [ranges] = all_ranges(config)
    small_chunks(monkeypatch, fold_every=2)
    real_record_range = EventStore.record_range
    chunks_stored = []

    def dies_at_the_fourth_chunk(self, topic, offset_range, run_id, counts, lost, **kw) -> None:
        if len(chunks_stored) == 3:
            raise KeyboardInterrupt("killed")  # like a kill: the open transaction is lost
        chunks_stored.append(offset_range)
        real_record_range(self, topic, offset_range, run_id, counts, lost, **kw)

    monkeypatch.setattr(EventStore, "record_range", dies_at_the_fourth_chunk)
    with pytest.raises(KeyboardInterrupt):
        ingest(config, ranges, run_id="killed")
    monkeypatch.setattr(EventStore, "record_range", real_record_range)
    with reading(path) as con:
        assert con.execute("SELECT count(*) FROM ingested_ranges").fetchone() == (3,)
        stored = sum(r.size for r in chunks_stored)
        assert con.execute("SELECT count(*) FROM events").fetchone()[0] == stored > 0
        # Folded after its second chunk (on the file, beside the writer: the third too if
        # it was stored before that fold began); the rest awaits the next fold.
        assert con.execute("SELECT count(*) FROM counted_ranges").fetchone()[0] in (2, 3)
    retry = ingest(config, ranges, run_id="retry")
    assert retry.counts.duplicates == 0 and retry.lost == 0
    valid = sum(sent.events.values())
    with reading(path) as con:
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
    # The retry's folds counted the killed run's last chunk with its own: every chunk once,
    # the state current without a rebuild and equal to a full recount.
    rules = CountingRules.of(config)
    with reading(path) as con:
        assert con.execute("SELECT count(*) FROM counted_ranges").fetchone() == (len(rows),)
        assert counting_state.rebuilds(con) == 0
        assert counting_state.is_current(con, rules)
        assert counting_state.differences(con, rules) == []


def test_a_chunk_that_fails_beside_a_fold_is_stored_again_once_the_fold_is_over(
    setup: tuple[ExperimentsConfig, StoreLocation], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the file a fold runs beside the writer and may hold the memory a chunk needs: the
    chunk is stored again once the fold is over. DuckLake folds between chunks: the error is
    the run's (and its retry's work)."""
    config, path = setup
    sent = produce(config, 2_000, seed=6)
    [ranges] = all_ranges(config)
    small_chunks(monkeypatch, fold_every=1)
    real_add_events = EventStore.add_events
    calls = []

    def out_of_memory_once(self, *args, **kwargs) -> None:
        calls.append(1)
        if len(calls) == 2:  # the second chunk, after the first one's fold began
            raise duckdb.OutOfMemoryException("failed to pin block (a fault put here)")
        real_add_events(self, *args, **kwargs)

    monkeypatch.setattr(EventStore, "add_events", out_of_memory_once)
    if isinstance(path, Path):
        ingest(config, ranges, run_id="once")
    else:
        with pytest.raises(duckdb.OutOfMemoryException):
            ingest(config, ranges, run_id="once")
        ingest(config, ranges, run_id="retry")
    rules = CountingRules.of(config)
    with reading(path) as con:
        assert con.execute("SELECT count(*) FROM events").fetchone()[0] == sum(sent.events.values())
        assert counting_state.is_current(con, rules)
        assert counting_state.differences(con, rules) == []


def test_parallel_runs_and_overlapping_retries_store_and_count_exactly(
    kafka: KafkaForTests,
    postgres: PostgresForTests,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DuckLake, six partitions, two runs at once: each group's run and a retry of it over
    the same offsets run side by side, in small chunks (many interleaved commits), while a
    writer folds what they append. Every offset is stored once, every valid event once, and
    the counting state equals a recount."""
    topic = kafka.new_topic(partitions=6)
    env = {**kafka.env_for(topic), "DIANA_PARALLEL_RUNS": "2", **postgres.new_lake(tmp_path)}
    monkeypatch.setenv("DIANA_POSTGRES_PASSWORD", env["DIANA_POSTGRES_PASSWORD"])
    config = load_config(SHIPPED_CONFIG, env=env)
    sent = produce(config, 6_000, seed=9, noise=NoiseRates(duplicate=0.05, malformed=0.02))
    monkeypatch.setattr(runs, "CHUNK", 500)
    monkeypatch.setattr(kafka_client, "CONSUME_BATCH", 100)
    consumer = make_consumer(config.infrastructure.kafka)
    try:
        marks = watermarks(consumer, topic)
    finally:
        consumer.close()
    group_ranges = [
        plan_runs(group, {}, 10**9, 1)[0][0] for group in partition_groups(marks, 2).values()
    ]
    rules = CountingRules.of(config)
    location = config.infrastructure.store_location
    ingesting = threading.Barrier(4)
    done = threading.Event()
    failures: list[BaseException] = []
    folds = 0

    def run(ranges: list[OffsetRange], run_id: str) -> None:
        try:
            ingesting.wait(timeout=60)
            ingest(config, ranges, run_id=run_id)
        except Exception as exc:  # noqa: BLE001 (reported by the test below)
            failures.append(exc)

    def fold_meanwhile() -> None:
        nonlocal folds
        while not done.is_set():
            with EventStore.open(location) as store:
                counting_state.ensure_current(store.connection, rules)
            folds += 1

    workers = [
        threading.Thread(target=run, args=(ranges, f"group-{group}-{attempt}"))
        for attempt in ("first", "retry")
        for group, ranges in enumerate(group_ranges)
    ]
    folding = threading.Thread(target=fold_meanwhile)
    folding.start()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=600)
    done.set()
    folding.join(timeout=120)
    assert failures == []
    assert folds > 0
    valid = sum(sent.events.values())
    with EventStore.open(location) as store:
        con = store.connection
        counting_state.ensure_current(con, rules)
        assert con.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchone() == (
            valid,
            valid,
        )
        assert (
            con.execute("SELECT count(*) FROM rejected_events").fetchone()[0]
            == (sent.noise["malformed messages"])
        )
        ledger = con.execute(
            "SELECT sum(end_offset - start_offset), count(*) FROM ingested_ranges"
        ).fetchone()
        assert ledger[0] == sent.sent  # every offset exactly once
        assert con.execute("SELECT count(*) FROM counted_ranges").fetchone()[0] == ledger[1]
        assert counting_state.rebuilds(con) == 0
        assert counting_state.is_current(con, rules)
        assert counting_state.differences(con, rules) == []
