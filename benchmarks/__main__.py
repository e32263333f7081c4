"""Every benchmark, one after the other; each prints its table beside its baseline and writes
its section of docs/benchmarks.md. About 42 minutes on 2 cores.

    .venv/bin/python -m benchmarks              # all of them
    .venv/bin/python -m benchmarks backfill     # some of them, by name
"""

from __future__ import annotations

import sys

from benchmarks import (
    backfill_benchmark,
    bandit_benchmark,
    duplicate_check_benchmark,
    freshness_benchmark,
    ingest_benchmark,
    parallel_benchmark,
    refresh_benchmark,
    sequential_benchmark,
    stats_benchmark,
    stats_families_benchmark,
    table_format_benchmark,
    traffic_benchmark,
)
from diana_pipeline.harness.suites import Outcome, run_suite
from diana_pipeline.markdown import table

BENCHMARKS = {
    "ingest": ingest_benchmark.main,
    "freshness": freshness_benchmark.main,
    "parallel": parallel_benchmark.main,
    "duplicates": duplicate_check_benchmark.main,
    "formats": table_format_benchmark.main,
    "backfill": backfill_benchmark.main,
    "refresh": refresh_benchmark.main,
    "traffic": traffic_benchmark.main,
    "stats": stats_benchmark.main,
    "stats-families": stats_families_benchmark.main,
    "sequential": sequential_benchmark.main,
    "bandit": bandit_benchmark.main,
}


def summarise(outcomes: dict[str, Outcome]) -> int:
    """Which targets were met and how long each took; a missed target is a finding, not a
    failure of the command."""
    rows = [
        (name, "met" if o.exit_code == 0 else "missed", f"{o.seconds / 60:.1f}")
        for name, o in outcomes.items()
    ]
    print("\n" + table(["benchmark", "target", "minutes"], rows, align="llr"))
    return 0


def main(argv: list[str]) -> int:
    return run_suite(BENCHMARKS, argv, "benchmark", summarise)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
