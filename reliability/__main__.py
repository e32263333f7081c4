"""Every reliability scenario, one after the other; each prints what it did and found and
writes its section of docs/reliability.md.

    .venv/bin/python -m reliability              # all of them
    .venv/bin/python -m reliability hostile      # some of them, by name
"""

from __future__ import annotations

import sys

from reliability import config, faults, hostile, load

SCENARIOS = {
    "hostile": hostile.main,
    "config": config.main,
    "faults": faults.main,
    "load": load.main,
}


def main(argv: list[str]) -> int:
    names = argv or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
        return 2
    failed = []
    for name in names:
        print(f"\n== {name} ==", flush=True)
        if SCENARIOS[name]([]) != 0:
            failed.append(name)
    print(
        f"\n{len(names) - len(failed)} of {len(names)} scenario(s) held"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
