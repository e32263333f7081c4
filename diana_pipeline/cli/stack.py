"""diana-stack: bring the local stack (Kafka, DynamoDB Local, optionally Dagster) up and down."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from diana_pipeline.config import ConfigError
from diana_pipeline.local_stack import LocalStack, StackError, StackSettings

# `status` exits with 3 when a server is not running, as service managers do.
EXIT_NOT_RUNNING = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diana-stack",
        description="Run Diana's local stack: Apache Kafka (KRaft) and DynamoDB Local from jars "
        "that Maven resolves once, and optionally the Dagster webserver and daemon. "
        "Everything lives under $DIANA_HOME (default ./.diana).",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="experiments file (default: $DIANA_CONFIG or ./experiments.yaml)",
    )
    parser.add_argument(
        "--project-dir", type=Path, help="folder with workspace.yaml and dagster.yaml (default: .)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the servers (harmless when they already run)")
    up.add_argument(
        "--dagster", action="store_true", help="also start the Dagster webserver and daemon"
    )
    up.add_argument(
        "--profile",
        choices=("default", "scale"),
        help="scale: also PostgreSQL, with the Dagster instance's storage in it (docs/scale.md); "
        "default: $DIANA_STACK_PROFILE, else default",
    )
    commands.add_parser("down", help="stop every server of the stack folder")
    commands.add_parser("status", help="say what runs where")
    return parser


def print_status(stack: LocalStack) -> int:
    statuses = stack.status()
    width = max(len(s.name) for s in statuses)
    print(f"stack folder {stack.settings.home}")
    for status in statuses:
        if status.running:
            where = ", ".join(status.listening) or "(no listening port)"
            print(f"  {status.name:<{width}}  running  pid {status.pid:<7}  listening {where}")
        else:
            print(f"  {status.name:<{width}}  stopped")
        print(f"  {'':<{width}}  {status.detail}; log {status.log_path}")
    if any(s.name == "dynamodb" and s.running for s in statuses):
        print("  note: DynamoDB Local has no bind option, so it listens on all interfaces.")
    core = ("kafka", "dynamodb", "postgres")
    core_running = all(s.running for s in statuses if s.name in core)
    return 0 if core_running else EXIT_NOT_RUNNING


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        environ = dict(os.environ)
        if getattr(args, "profile", None):
            environ["DIANA_STACK_PROFILE"] = args.profile
        settings = StackSettings.from_environment(args.project_dir, args.config, environ)
        stack = LocalStack(settings)
        if args.command == "up":
            stack.up(with_dagster=args.dagster)
            print_status(stack)
            if args.dagster:
                print(f"Dagster UI: {stack.settings.dagster_url}")
            print("Stop everything with: diana-stack down")
            return 0
        if args.command == "down":
            stack.down()
            return 0
        return print_status(stack)
    except (StackError, ConfigError) as exc:
        print(f"diana-stack: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "diana-stack: interrupted; run 'diana-stack down' to stop what started", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
