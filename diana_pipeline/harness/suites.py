"""`python -m benchmarks` and `python -m reliability`: run some or all of a suite's commands
one after the other, each under its name, then summarise. This is those commands' output,
hence print."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Main = Callable[[list[str]], int]  # a command's main: arguments -> exit code


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    seconds: float


def run_suite(
    mains: Mapping[str, Main],
    names: list[str],
    kind: str,
    summarise: Callable[[dict[str, Outcome]], int],
) -> int:
    """Run the commands `names` (every one when empty) with their defaults, each under a
    `== name ==` heading; the exit code is `summarise`'s, or 2 for a name not in `mains`
    (`kind` says what they are, in that message)."""
    names = names or list(mains)
    unknown = [n for n in names if n not in mains]
    if unknown:
        print(f"unknown {kind}(s): {', '.join(unknown)}; choose from {', '.join(mains)}")
        return 2
    outcomes = {}
    for name in names:
        print(f"\n== {name} ==", flush=True)
        started = time.monotonic()
        exit_code = mains[name]([])
        outcomes[name] = Outcome(exit_code, time.monotonic() - started)
    return summarise(outcomes)
