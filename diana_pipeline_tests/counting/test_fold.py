"""The counting fold's view of the ledger (counting/fold.py), on a real DuckDB store: it reads
the ledger since its horizon only, and a range that commits after a fold, written shortly
before the ranges that fold counted, is still counted by the next one."""

from __future__ import annotations

from pathlib import Path

from diana_pipeline.counting import CountingRules, fold
from diana_pipeline.counting import state as counting_state
from diana_pipeline.store import EventStore
from diana_pipeline_tests.counting.test_rules import CLICK, SHOW, config_with_one_hour_window
from diana_pipeline_tests.counting.test_state import add_for_the_fold, assert_equals_recount


def _ledger_times(store: EventStore) -> dict[int, object]:
    rows = store.connection.execute("SELECT start_offset, ingested_at FROM ingested_ranges")
    return dict(rows.fetchall())


def test_a_range_committed_after_a_fold_is_counted_by_the_next_one(tmp_path: Path) -> None:
    config = config_with_one_hour_window()
    rules = CountingRules.of(config)
    with EventStore.open(tmp_path / "s.duckdb") as store:
        late = EventStore(store.beside(), store.location)  # another run's connection
        rows = [("b1", SHOW, "treatment", "bob", 6), ("b2", CLICK, "treatment", "bob", 7)]
        add_for_the_fold(late, config, rows, 100, commit=False)  # written first
        add_for_the_fold(store, config, [("a1", SHOW, "control", "ann", 5)], 0)
        counting_state.ensure_current(store.connection, rules)  # counts a1's range only
        assert fold.pending_ranges(store.connection) == []
        late.connection.execute("COMMIT")  # committed last
        times = _ledger_times(store)
        assert times[100] < times[0]  # the late range was written before the counted one
        assert [r.start for r in fold.pending_ranges(store.connection)] == [100]
        counting_state.ensure_current(store.connection, rules)
        assert fold.pending_ranges(store.connection) == []
        assert_equals_recount(store, config)
        assert counting_state.rebuilds(store.connection) == 0
        late.connection.close()


def test_the_fold_reads_the_ledger_since_its_horizon_only(tmp_path: Path) -> None:
    config = config_with_one_hour_window()
    rules = CountingRules.of(config)
    with EventStore.open(tmp_path / "s.duckdb") as store:
        add_for_the_fold(store, config, [("a1", SHOW, "control", "ann", 5)], 0)
        # A ledger row two hours older than a1's, its events never counted (a row that the
        # horizon's margin says cannot be: written so long before a counted range, it was
        # committed before that range's fold, which counted it).
        store.connection.execute(
            "INSERT INTO ingested_ranges SELECT topic, kafka_partition, 50, 60, run_id, 1, 0, "
            "0, 0, ingested_at - INTERVAL 2 HOUR, false FROM ingested_ranges"
        )
        before_any_fold = sorted(r.start for r in fold.pending_ranges(store.connection))
        assert before_any_fold == [0, 50]  # no horizon yet: the whole ledger
        store.connection.execute("DELETE FROM ingested_ranges WHERE start_offset = 50")
        counting_state.ensure_current(store.connection, rules)
        store.connection.execute(
            "INSERT INTO ingested_ranges SELECT topic, kafka_partition, 50, 60, run_id, 1, 0, "
            "0, 0, ingested_at - INTERVAL 2 HOUR, false FROM ingested_ranges"
        )
        assert fold.pending_ranges(store.connection) == []  # behind the horizon: not read
        horizon = store.connection.execute("SELECT ingested_at FROM counted_before").fetchall()
        assert horizon == [(_ledger_times(store)[0] - fold.COMMITTED_WITHIN,)]
