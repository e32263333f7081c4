"""The benchmark commands at tiny sizes (nothing written): not their targets, which need the
full size, but what must hold at any size, so that the figures in docs/benchmarks.md come from
code that works."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks import (
    backfill_benchmark,
    bandit_benchmark,
    duplicate_check_benchmark,
    refresh_benchmark,
    sequential_benchmark,
)


def test_the_backfill_benchmark_rebuilds_every_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One run materialises the six assets (statistics, outputs) of every window, the CSV sink ends
    with one record per variant and window (three with three metrics), and the store holds
    every event written: two per user, and a purchase for about a fifth of them."""
    monkeypatch.setenv("DIANA_DUCKDB_PATH", str(tmp_path / "events.duckdb"))
    monkeypatch.setenv("DIANA_OUTPUT_SINK", "csv")
    monkeypatch.setenv("DIANA_CSV_DIR", str(tmp_path / "csv"))
    figures = backfill_benchmark.measure(tmp_path, 20_000, 2)
    windows = 2 * 24
    assert figures["windows"] == windows
    assert 20_000 + 1_500 < figures["events"] < 20_000 + 2_500
    assert figures["materialized"] == 6 * windows
    assert figures["rows"] == 2 * windows


def test_the_sequential_benchmark_tells_the_rules_apart() -> None:
    """On 480 small A/A streams (20 per cell), today's rule calls false winners in a large
    share while Diana's stays consistent with its guarantee (the pooled share's 95% interval
    reaches down to 5%); through counting the same holds, and the A/B streams find the
    lift."""
    aa = sequential_benchmark.false_winners(0.02, 7, [])
    streams = sum(row[3] for row in aa)
    today, diana = sum(row[4] for row in aa), sum(row[5] for row in aa)
    assert streams == 24 * 20
    assert today > 0.2 * streams
    assert sequential_benchmark._lower(diana, streams) <= sequential_benchmark.ALPHA
    (_, tests, _, today_aa, diana_aa, _), (_, ab_tests, _, _, diana_ab, _) = (
        sequential_benchmark.through_counting(0.05, 7, [])
    )
    assert today_aa[0] > 0.2 * tests and sequential_benchmark._lower(diana_aa[0], tests) <= 0.05
    assert diana_ab[1] >= 0.8 * ab_tests  # right winners at +20% within a week


def test_the_refresh_benchmark_compares_equal_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ways of refreshing give the same records (the benchmark checks it before timing),
    and every figure is reported."""
    monkeypatch.delenv("DIANA_DUCKDB_PATH", raising=False)  # each history in its own folder
    figures = refresh_benchmark.refresh_seconds(tmp_path, 20_000)
    assert figures.state > 0 and figures.recount > 0 and figures.rebuild > 0


def test_the_duplicate_check_benchmark_finds_each_batchs_redeliveries(tmp_path: Path) -> None:
    """Both checks, the store's and the window-wide one swapped in, find exactly the batch's
    redeliveries at each size (the benchmark asserts it on every timed batch), and the store's
    own check is back in place after."""
    today = duplicate_check_benchmark.store_module._NEW_EVENTS
    rows = duplicate_check_benchmark.measure(tmp_path / "s.duckdb", [0, 150_000], "file")
    assert [row[1] for row in rows] == ["0", "150,000"]
    assert duplicate_check_benchmark.store_module._NEW_EVENTS is today


def test_the_bandit_benchmark_steers_traffic_and_flags_the_configured_split() -> None:
    """On a few replications: a bandit updated every window plays the best arm far more
    than a fixed split and loses fewer conversions; checked against the configured split,
    its moving weights look like a sample-ratio mismatch in every run, while the fixed
    split's estimates stay within a few standard errors of the truth."""
    diana, equal = (
        bandit_benchmark.simulate(policy, drifting=False, replications=4, seed=11)
        for policy in (bandit_benchmark.POLICIES[2], bandit_benchmark.POLICIES[0])
    )
    assert diana.regret.mean() < 0.7 * equal.regret.mean()
    assert diana.best_share.min() > 0.35 > equal.best_share.max()
    assert diana.srm_configured.all()
    assert abs(equal.weighted_z).max() < 5 and abs(equal.pooled_z).max() < 5
    # Against the weights in force, the anytime-valid check finds nothing to flag.
    assert not diana.srm_in_force.any()


def test_the_bandit_benchmarks_decision_calls_a_clear_winner() -> None:
    """The A/A count goes through the product's decision: with one arm far ahead (0.20
    against 0.10) it calls a winner in each of two runs."""
    policy = bandit_benchmark.Policy("clear", 1)
    outcome = bandit_benchmark.simulate(
        policy, False, replications=2, seed=5, rates=np.array([0.10, 0.10, 0.10, 0.20])
    )
    assert all(
        bandit_benchmark.ever_called_a_winner(outcome.exposures[r], outcome.successes[r])
        for r in range(2)
    )
