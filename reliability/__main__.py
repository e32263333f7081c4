"""Every reliability scenario, one after the other; each prints what it did and found and
writes its section of docs/reliability.md.

    .venv/bin/python -m reliability              # all of them
    .venv/bin/python -m reliability hostile      # some of them, by name
"""

from __future__ import annotations

import sys

from diana_pipeline.harness.suites import Outcome, run_suite
from reliability import config, faults, hostile, load

SCENARIOS = {
    "hostile": hostile.main,
    "config": config.main,
    "faults": faults.main,
    "load": load.main,
}


def summarise(outcomes: dict[str, Outcome]) -> int:
    failed = [name for name, o in outcomes.items() if o.exit_code != 0]
    print(
        f"\n{len(outcomes) - len(failed)} of {len(outcomes)} scenario(s) held"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    return run_suite(SCENARIOS, argv, "scenario", summarise)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
