"""diana-state: inspect, check and rebuild the incremental counting state of the event store.

The pipeline keeps, per test and user, the few events that decide how they count, and per
window the resulting steps, merged with every stored batch (docs/design.md, "Counting
state"). These commands are for an operator: `check` recomputes everything from the events
and compares, `rebuild` replaces the state by that recomputation. Both take the store's
write lock in turn with the pipeline's runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from diana_pipeline.config import ConfigError, load_config
from diana_pipeline.counting import CountingRules
from diana_pipeline.counting import state as counting_state
from diana_pipeline.lake import LakeError, StoreLocation
from diana_pipeline.markdown import table
from diana_pipeline.store import EventStore

SHOWN_DIFFERENCES = 20


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diana-state", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config", help="experiments file (default: $DIANA_CONFIG or ./experiments.yaml)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="what the state covers, and whether it is current")
    commands.add_parser(
        "check", help="recompute the steps from all events and compare (exit 1 if they differ)"
    )
    commands.add_parser("rebuild", help="rebuild the state and the steps from all events")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A check or a rebuild over millions of events logs a line per part (its progress).
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"diana-state: error: {exc}", file=sys.stderr)
        return 2
    rules = CountingRules.of(config)
    location = config.infrastructure.store_location
    if isinstance(location, Path) and not location.exists():
        print(f"diana-state: error: no event store at {location}", file=sys.stderr)
        return 2
    try:
        return _run(args.command, location, rules)
    except LakeError as exc:
        print(f"diana-state: error: {exc}", file=sys.stderr)
        return 1


def _run(command: str, location: StoreLocation, rules: CountingRules) -> int:
    with EventStore.open(location) as store:
        connection = store.connection
        if command == "rebuild":
            seconds = counting_state.rebuild(connection, rules)
            print(f"rebuilt the counting state from all events in {seconds:.1f} s")
        elif command == "check":
            different = counting_state.differences(connection, rules)
            if different:
                print(f"{len(different)} window steps differ from a recount of the events:")
                rows = [list(map(str, row)) for row in different[:SHOWN_DIFFERENCES]]
                header = ["test", "measure", "variant", "window", "stored", "recomputed"]
                print(table(header, rows))
                print("`diana-state rebuild` replaces the state by the recount.")
                return 1
            print("the counting state equals a recount of every event")
        current = counting_state.is_current(connection, rules)
        users, rows = connection.execute(
            "SELECT (SELECT count(*) FROM user_moments), (SELECT count(*) FROM user_rows)"
        ).fetchone()
        events = store.count_events()
        print(
            f"{events:,} events; state of {users:,} users ({rows:,} representative rows "
            "for those whose moments cannot give them back); "
            + ("current" if current else "not current: the next refresh rebuilds it")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
