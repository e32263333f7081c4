"""Every benchmark, one after the other; each prints its table beside its baseline and writes
its section of docs/benchmarks.md. About 35 minutes on 2 cores.

    .venv/bin/python -m benchmarks              # all of them
    .venv/bin/python -m benchmarks backfill     # some of them, by name
"""

from __future__ import annotations

import sys
import time

from benchmarks import (
    backfill_benchmark,
    freshness_benchmark,
    ingest_benchmark,
    stats_benchmark,
    traffic_benchmark,
)

BENCHMARKS = {
    "ingest": ingest_benchmark.main,
    "freshness": freshness_benchmark.main,
    "backfill": backfill_benchmark.main,
    "traffic": traffic_benchmark.main,
    "stats": stats_benchmark.main,
}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
        return 2
    outcomes = {}
    for name in names:
        print(f"\n== {name} ==", flush=True)
        started = time.monotonic()
        code = BENCHMARKS[name]([])
        outcomes[name] = (code, time.monotonic() - started)
    print("\n| benchmark | target | minutes |\n|---|---|---:|")
    for name, (code, seconds) in outcomes.items():
        print(f"| {name} | {'met' if code == 0 else 'missed'} | {seconds / 60:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
