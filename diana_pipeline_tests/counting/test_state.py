"""The incremental counting state against the full recount: whatever order and batches the
events arrive in (duplicates, late and out-of-order events, users in two variants, clicks
before exposure), with backfills of ranges in between, the counts and quality figures read
from the state equal the recount of all events at every window end, and the stored steps equal
a rebuild's."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from diana_pipeline.config import ExperimentsConfig, load_config
from diana_pipeline.counting import (
    CountingRules,
    fold,
    quality,
    recount_quality,
    window_counts,
)
from diana_pipeline.counting import state as counting_state
from diana_pipeline.events import EventColumns, ValidEvent
from diana_pipeline.harness.paths import SHIPPED_CONFIG
from diana_pipeline.harness.postgres import PostgresForTests
from diana_pipeline.lake import StoreLocation
from diana_pipeline.store import EventStore, OffsetRange, WriteCounts
from diana_pipeline_tests.counting.test_rules import (
    CLICK,
    SHOW,
    TEST,
    config_with_one_hour_window,
    recounted_window,
)

START = datetime(2026, 11, 21, 9)
WINDOWS = [(START + timedelta(hours=h), START + timedelta(hours=h + 1)) for h in range(5)]


def _columns(config: ExperimentsConfig, rows: list[tuple], offset: int) -> EventColumns:
    events = []
    for i, (event_id, kind, variant, user, minutes, *value) in enumerate(rows):
        moment = START + timedelta(minutes=minutes)
        window = config.partitions.window_start(moment).replace(tzinfo=None)
        event = ValidEvent(event_id, kind, TEST, variant, user, moment, window, *value)
        events.append((0, offset + i, event))
    return EventColumns.of(events)


def add(store: EventStore, config: ExperimentsConfig, rows: list[tuple], offset: int) -> None:
    """Store (event_id, type, variant, user, minutes after START[, value]) rows as one batch,
    merged into the state in the batch's transaction, as ingestion does."""
    with store.transaction():
        store.add_events(
            "web-events", _columns(config, rows, offset), WriteCounts(),
            rules=CountingRules.of(config),
        )  # fmt: skip


def add_for_the_fold(
    store: EventStore,
    config: ExperimentsConfig,
    rows: list[tuple],
    offset: int,
    commit: bool = True,
) -> None:
    """The same rows stored as a parallel ingestion run stores them: the events and their
    ledger row, the counting left to the fold. `commit=False` leaves the transaction open."""
    counts = WriteCounts()
    batch = OffsetRange(0, offset, offset + len(rows))
    store.connection.execute("BEGIN TRANSACTION")
    store.add_events("web-events", _columns(config, rows, offset), counts, range_start=offset)
    store.record_range("web-events", batch, "a-parallel-run", counts, 0, counted=False)
    if commit:
        store.connection.execute("COMMIT")


def replay(
    store: EventStore,
    config: ExperimentsConfig,
    stream: list,
    stored: Callable[[tuple], tuple] = lambda fields: fields,
    after_batch: Callable[[], None] = lambda: None,
    store_batch: Callable[[EventStore, ExperimentsConfig, list[tuple], int], None] = add,
) -> None:
    """Store a stream of `streams_of` batch by batch with `add` (an event delivered twice
    stored twice under one id, its fields as `stored` gives them), and after a batch with a
    backfill, recompute the state of the users of its windows, as a backfill run does."""
    rules = CountingRules.of(config)
    offset, number = 0, 0
    for batch, backfill in stream:
        rows = []
        for fields, twice in batch:
            rows += [(f"e{number}", *stored(fields))] * (1 + twice)
            number += 1
        store_batch(store, config, rows, offset)
        offset += len(rows)
        after_batch()
        if backfill is not None:
            first, size = backfill
            start = START + timedelta(hours=first)
            with store.transaction():
                counting_state.rebuild_users(
                    store.connection, rules, start, start + timedelta(hours=size)
                )


def assert_equals_recount(store: EventStore, config: ExperimentsConfig) -> None:
    counts = window_counts(store.connection, config, WINDOWS)
    for start, end in WINDOWS:
        expected = recounted_window(store, config, start, end)
        assert [tuple(vars(r).values()) for r in counts[start]] == expected, start
        assert quality(store.connection, config, end) == recount_quality(
            store.connection, config, end
        ), end


def stored_steps(store: EventStore) -> set[tuple]:
    return set(
        store.connection.execute(
            "SELECT test_id, measure, variant, window_start, change FROM window_steps "
            "WHERE change <> 0"
        ).fetchall()
    )


_event = st.tuples(
    st.sampled_from([SHOW, SHOW, CLICK, CLICK, "PageViewed"]),
    st.sampled_from(["control", "treatment"]),
    st.sampled_from(["u1", "u2", "u3"]),
    # Minutes after 09:00 on a coarse grid, so that ties and the 60-minute edge happen.
    st.integers(0, 59).map(lambda step: step * 5),
)


def streams_of(event: st.SearchStrategy) -> st.SearchStrategy:
    """Streams of events: each delivered once or twice, in arrival order, cut into batches;
    between two batches, maybe a backfill of a range of windows."""
    return st.lists(
        st.tuples(
            st.lists(st.tuples(event, st.booleans()), min_size=1, max_size=10),
            st.one_of(st.none(), st.tuples(st.integers(0, 4), st.integers(1, 5))),
        ),
        max_size=8,
    )


_stream = streams_of(_event)


def _examples(test: Callable) -> Callable:
    """The streams that once broke the merge, tried first."""
    # A click, then (in a later batch) an exposure before it: the click becomes a success.
    test = example(stream=[([((CLICK, "control", "u1", 30), False)], None),
                           ([((SHOW, "control", "u1", 20), False)], None)])(test)  # fmt: skip
    # Exposed at 10:40 with a click at 11:30 (outside the hour); a late exposure at 10:10
    # moves the conversion window, so the click stays outside, and a click at 10:50 converts.
    test = example(stream=[
        ([((SHOW, "control", "u1", 100), False), ((CLICK, "control", "u1", 150), False)], None),
        ([((SHOW, "control", "u1", 70), False), ((CLICK, "treatment", "u1", 110), True)], (0, 5)),
    ])(test)  # fmt: skip
    # Two clicks before the exposure at 10:40; a late exposure at 10:10 makes the second
    # click (10:20, not the first of its variant) the conversion.
    return example(stream=[
        ([((CLICK, "control", "u1", 65), False), ((CLICK, "control", "u1", 80), False),
          ((SHOW, "control", "u1", 100), False)], None),
        ([((SHOW, "control", "u1", 70), False)], None),
    ])(test)  # fmt: skip


def assert_merged_batch_by_batch_equals_the_full_recount(
    location: StoreLocation, stream: list
) -> None:
    config = config_with_one_hour_window()
    rules = CountingRules.of(config)
    with EventStore.open(location) as store:

        def current() -> None:
            assert counting_state.is_current(store.connection, rules)

        replay(store, config, stream, after_batch=current)
        # Merged batch by batch, never rebuilt behind the test's back.
        assert counting_state.rebuilds(store.connection) == 0
        assert_equals_recount(store, config)
        incremental = stored_steps(store)
        counting_state.rebuild(store.connection, rules)
        assert stored_steps(store) == incremental


_UNHEALTHY = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@settings(max_examples=200, deadline=None, suppress_health_check=_UNHEALTHY)
@given(stream=_stream)
@_examples
def test_state_merged_batch_by_batch_equals_the_full_recount(
    tmp_path_factory: pytest.TempPathFactory, stream: list
) -> None:
    path = tmp_path_factory.mktemp("state") / "s.duckdb"
    assert_merged_batch_by_batch_equals_the_full_recount(path, stream)


@pytest.mark.servers
@settings(max_examples=20, deadline=None, suppress_health_check=_UNHEALTHY)
@given(stream=_stream)
@_examples
def test_state_in_ducklake_merged_batch_by_batch_equals_the_full_recount(
    postgres: PostgresForTests,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    stream: list,
) -> None:
    """The same on DuckLake tables (a new catalog each time), whose Parquet files once
    rounded the users' 128-bit keys."""
    env = postgres.new_lake(tmp_path_factory.mktemp("lake"))
    monkeypatch.setenv("DIANA_POSTGRES_PASSWORD", env["DIANA_POSTGRES_PASSWORD"])
    location = load_config(SHIPPED_CONFIG, env=env).infrastructure.store_location
    assert_merged_batch_by_batch_equals_the_full_recount(location, stream)


@settings(max_examples=100, deadline=None, suppress_health_check=_UNHEALTHY)
@given(stream=_stream, ways=st.lists(
    st.sampled_from(["merged", "appended", "folded", "folded by the run"]),
    min_size=8, max_size=8))  # fmt: skip
def test_batches_left_for_the_fold_are_counted_once_whenever_it_runs(
    tmp_path_factory: pytest.TempPathFactory, stream: list, ways: list[str]
) -> None:
    """Batches merged at once (a window rebuilt from Kafka) and batches appended for the fold
    (ingestion runs), in any mix, with folds at any point (a refresh's, or an ingestion run's)
    and backfills in between: the counts equal the full recount, and every appended batch is
    counted by exactly one fold."""
    config = config_with_one_hour_window()
    rules = CountingRules.of(config)
    path = tmp_path_factory.mktemp("fold") / "s.duckdb"
    batches = iter(ways)
    appended = 0

    def store_batch(store: EventStore, config: ExperimentsConfig, rows: list, offset: int) -> None:
        nonlocal appended
        way = next(batches)
        if way == "merged":
            add(store, config, rows, offset)
            return
        add_for_the_fold(store, config, rows, offset)
        appended += 1
        assert fold.pending_ranges(store.connection)  # this one at least
        if way == "folded":
            counting_state.ensure_current(store.connection, rules)
            assert counting_state.is_current(store.connection, rules)
        elif way == "folded by the run":
            assert counting_state.fold_if_current(store.connection, rules) > 0
            assert not fold.pending_ranges(store.connection)
            assert counting_state.is_current(store.connection, rules)

    with EventStore.open(path) as store:
        replay(store, config, stream, store_batch=store_batch)
        assert_equals_recount(store, config)  # reading folds what is left
        assert counting_state.rebuilds(store.connection) == 0
        counted = store.connection.execute(
            "SELECT count(*), count(DISTINCT start_offset) FROM counted_ranges"
        ).fetchone()
        assert counted == (appended, appended)
        incremental = stored_steps(store)
        counting_state.rebuild(store.connection, rules)
        assert stored_steps(store) == incremental


def test_a_run_leaves_a_ledger_that_disagrees_with_the_events_to_the_refresh(
    tmp_path: Path,
) -> None:
    """A run's fold that finds fewer events than its ledger rows say counts nothing (a
    rebuild from all events is the refresh's, under its memory limit); the refresh rebuilds."""
    config = config_with_one_hour_window()
    rules = CountingRules.of(config)
    rows = [("a1", SHOW, "control", "ann", 5), ("b1", SHOW, "treatment", "bob", 6)]
    with EventStore.open(tmp_path / "s.duckdb") as store:
        add_for_the_fold(store, config, rows, 0)
        # b1 no longer found as its range's: the ledger says 2 events, the fold finds 1.
        store.connection.execute("UPDATE events SET range_start = NULL WHERE event_id = 'b1'")
        assert counting_state.fold_if_current(store.connection, rules) == 0
        assert fold.pending_ranges(store.connection)
        assert counting_state.rebuilds(store.connection) == 0
        assert_equals_recount(store, config)  # reading rebuilds
        assert counting_state.rebuilds(store.connection) == 1


def test_a_late_event_changes_an_earlier_windows_totals(tmp_path: Path) -> None:
    """bob clicks at 10:30 and is exposed at 10:45: no success. A late exposure at 10:20,
    stored after windows 10:00 and 11:00 were computed, makes the click a success in window
    10:00 and raises the totals of every window after it."""
    config = config_with_one_hour_window()
    with EventStore.open(tmp_path / "s.duckdb") as store:
        add(store, config, [("b1", CLICK, "control", "bob", 90),
                            ("b2", SHOW, "control", "bob", 105)], 0)  # fmt: skip
        before = window_counts(store.connection, config, WINDOWS[1:3])
        assert [(r.variant, r.successes_inc, r.successes_total) for r in before[WINDOWS[1][0]]] == [
            ("control", 0, 0),
            ("treatment", 0, 0),
        ]
        assert quality(store.connection, config, WINDOWS[1][1]) == recount_quality(
            store.connection, config, WINDOWS[1][1]
        )
        add(store, config, [("b0", SHOW, "control", "bob", 80)], 2)
        after = window_counts(store.connection, config, WINDOWS[1:3])
        assert [tuple(vars(r).values())[1:] for r in after[WINDOWS[1][0]]] == [
            ("control", 1, 1, 1, 1),
            ("treatment", 0, 0, 0, 0),
        ]
        assert [tuple(vars(r).values())[1:] for r in after[WINDOWS[2][0]]] == [
            ("control", 0, 0, 1, 1),
            ("treatment", 0, 0, 0, 0),
        ]
        assert_equals_recount(store, config)


def test_a_store_without_state_or_under_other_rules_is_rebuilt_before_reading(
    tmp_path: Path,
) -> None:
    config = config_with_one_hour_window()
    with EventStore.open(tmp_path / "s.duckdb") as store:
        # Written without the state (as a store from before it, or a direct INSERT).
        add_plain = EventColumns.of(
            [(0, 0, ValidEvent("x1", SHOW, TEST, "control", "ann", START, START)),
             (0, 1, ValidEvent("x2", CLICK, TEST, "control", "ann",
                               START + timedelta(minutes=70), START + timedelta(hours=1)))]
        )  # fmt: skip
        store.add_events("web-events", add_plain, WriteCounts())
        rules = CountingRules.of(config)
        assert not counting_state.is_current(store.connection, rules)
        # A batch merged meanwhile is left to the rebuild, which the next read does.
        add(store, config, [("x3", SHOW, "treatment", "bo", 10)], 2)
        assert not counting_state.is_current(store.connection, rules)
        assert_equals_recount(store, config)
        assert counting_state.is_current(store.connection, rules)
        assert counting_state.rebuilds(store.connection) == 1
        # A 24-hour conversion window makes ann's click (70 minutes later) a success.
        wider = config.model_copy(
            update={"tests": [config.tests[0].model_copy(
                update={"conversion_window": timedelta(hours=24)})]}
        )  # fmt: skip
        totals = window_counts(store.connection, wider, WINDOWS[1:2])[WINDOWS[1][0]]
        assert [(r.variant, r.successes_total) for r in totals] == [
            ("control", 1),
            ("treatment", 0),
        ]
        assert_equals_recount(store, wider)


def _limit_mib(store: EventStore) -> float:
    """The connection's memory limit as DuckDB reports it ("244.1 MiB")."""
    text = store.connection.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    number, unit = text.split()
    assert unit == "MiB"
    return float(number)


def test_a_rebuild_leaves_the_tables_and_the_memory_limit_as_it_found_them(
    tmp_path: Path,
) -> None:
    """A rebuild empties the state's tables by dropping them and creating them again, and
    works under a memory limit of its own: after it, each table is defined as before (its
    key and NOT NULLs) and the connection has its own limit again (DuckDB reports it to
    0.1 MiB, and reads back 0.1 MiB less than it was given)."""
    config = config_with_one_hour_window()
    rules = CountingRules.of(config)
    with EventStore.open(tmp_path / "s.duckdb", memory_limit="256MB") as store:
        add(
            store,
            config,
            [("a1", SHOW, "control", "ann", 5), ("a2", CLICK, "control", "ann", 9)],
            0,
        )

        def definitions() -> list[tuple]:
            return store.connection.execute(
                "SELECT table_name, sql FROM duckdb_tables() ORDER BY table_name"
            ).fetchall()

        before, limit = definitions(), _limit_mib(store)
        counting_state.rebuild(store.connection, rules)
        assert definitions() == before
        assert abs(_limit_mib(store) - limit) <= 0.1
        assert_equals_recount(store, config)
