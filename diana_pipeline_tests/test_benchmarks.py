"""The benchmark commands still run end to end (tiny sizes, nothing written): the figures in
docs/benchmarks.md come from code that works."""

from __future__ import annotations

import pytest

from benchmarks import backfill_benchmark, sequential_benchmark


def test_the_backfill_benchmark_rebuilds_every_window(capsys: pytest.CaptureFixture) -> None:
    # It asserts on its own that every window of every asset was materialised and that the
    # CSV sink holds two records per window; the exit code says whether the target was met.
    code = backfill_benchmark.main(["--events", "20000", "--days", "2", "--no-write"])
    assert code in (0, 1)
    table = capsys.readouterr().out
    assert "plain DuckDB GROUP BY" in table and "one run over every window" in table


def test_the_sequential_benchmark_runs_every_scenario(capsys: pytest.CaptureFixture) -> None:
    code = sequential_benchmark.main(["--scale", "0.02", "--no-write"])
    assert code in (0, 1)
    out = capsys.readouterr().out
    assert out.count("| micro-batch |") == 12 and "through counting.py" in out
    assert "asymptotic CS" in out and "screened-out looks checked exactly" in out
