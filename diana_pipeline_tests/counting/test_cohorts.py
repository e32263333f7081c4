"""counting.cohorts on the hand-written fixture of test_rules: users by the window of their
first exposure, counted by the rules at each cutoff (their sums are the window totals worked
out by hand there), and first exposures by the allocation version in force."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from diana_pipeline.counting import CountingRules, cohort_counts, first_exposures_by_version
from diana_pipeline.counting import state as counting_state
from diana_pipeline.store import EventStore
from diana_pipeline_tests.counting.test_rules import (
    EXPECTED,
    FIXTURE,
    TEST,
    at,
    config_with_one_hour_window,
    store_events,
)


def test_cohorts_by_hand(tmp_path: Path) -> None:
    rules = CountingRules.of(config_with_one_hour_window())
    with EventStore.open(tmp_path / "events.duckdb") as store:
        store_events(store, FIXTURE)
        counting_state.ensure_current(store.connection, rules)
        found = cohort_counts(
            store.connection, rules, TEST, [at("11:00"), at("12:00"), at("13:00")]
        )
    ten, eleven = at("10:00"), at("11:00")
    # alice converted, frank too late; bob clicked only before, carol converted; dave left.
    assert found[at("11:00")] == [(ten, "control", 2, 1), (ten, "treatment", 2, 1)]
    # grace converts in her window; henry's click comes at 12:10, after this cutoff.
    assert found[at("12:00")] == [
        (ten, "control", 2, 1), (ten, "treatment", 2, 1),
        (eleven, "control", 1, 0), (eleven, "treatment", 1, 1),
    ]  # fmt: skip
    assert (eleven, "control", 1, 1) in found[at("13:00")]
    # The cohorts add up to the window totals of test_rules, by hand.
    for start, end in [(at("10:00"), at("11:00")), (at("11:00"), at("12:00"))]:
        for variant, (_, _, exposures, successes) in EXPECTED[start].items():
            mine = [row for row in found[end] if row[1] == variant]
            assert (sum(r[2] for r in mine), sum(r[3] for r in mine)) == (exposures, successes)


def test_first_exposures_by_the_version_in_force(tmp_path: Path) -> None:
    rules = CountingRules.of(config_with_one_hour_window())
    with EventStore.open(tmp_path / "events.duckdb") as store:
        store_events(store, FIXTURE)
        counting_state.ensure_current(store.connection, rules)
        # Written as the store would have when they were published (the API refuses the past).
        for version, effective in [(1, at("10:25")), (2, at("11:35"))]:
            for order, variant in enumerate(["control", "treatment"]):
                store.connection.execute(
                    "INSERT INTO allocation_versions VALUES (?, ?, ?, 0.5, ?, ?, ?, NULL)",
                    [TEST, version, variant, order, effective, datetime(2026, 11, 21)],
                )
        cells = first_exposures_by_version(store.connection, rules, TEST, at("13:00"))
    ten, eleven = at("10:00"), at("11:00")
    assert cells == [
        (ten, 0, "control", 2),  # alice 10:05, dave 10:15 (first exposed in control)
        (ten, 0, "treatment", 1),  # bob 10:20
        (ten, 1, "control", 1),  # frank 10:50
        (ten, 1, "treatment", 1),  # carol 10:30
        (eleven, 1, "treatment", 1),  # grace 11:10
        (eleven, 2, "control", 1),  # henry 11:40
    ]
