"""diana-inject: send events from a JSON-lines file to the events topic.

Each line should be one event object. Lines that are not JSON objects are refused and
reported, unless --raw, which sends every non-blank line exactly as it is (to test the
pipeline's quarantine of malformed messages).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from diana_pipeline.config import ConfigError, load_config
from diana_pipeline.producer import (
    Deliveries,
    ProducerError,
    check_topic,
    flush,
    make_producer,
    produce,
)

SHOWN_REFUSALS = 10


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diana-inject", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help="JSON-lines file, one event per line")
    parser.add_argument(
        "--config", help="experiments file (default: $DIANA_CONFIG or ./experiments.yaml)"
    )
    parser.add_argument("--raw", action="store_true", help="send every non-blank line as it is")
    return parser


def message_key(line: bytes) -> tuple[bytes | None, str | None]:
    """(key, refusal reason): the user_id of a JSON object line, or why it is not one."""
    try:
        event = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"invalid JSON ({exc.__class__.__name__}: {exc})"
    if not isinstance(event, dict):
        return None, f"a JSON {type(event).__name__}, not an object"
    user_id = event.get("user_id")
    return (user_id.encode() if isinstance(user_id, str) else None), None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        lines = args.file.read_bytes().splitlines()
    except ConfigError as exc:
        print(f"diana-inject: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"diana-inject: error: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    kafka = config.infrastructure.kafka
    producer = make_producer(kafka.bootstrap_servers)
    deliveries = Deliveries()
    refused: list[tuple[int, str]] = []
    try:
        check_topic(producer, kafka.bootstrap_servers, kafka.topic)
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            key, reason = message_key(line)
            if reason is not None and not args.raw:
                refused.append((number, reason))
                continue
            produce(producer, deliveries, kafka.topic, line, key)
            producer.poll(0)
    except ProducerError as exc:
        print(f"diana-inject: error: {exc}", file=sys.stderr)
        return 1
    finally:
        flush(producer, deliveries)
    print(
        f"{args.file}: sent {deliveries.produced:,} lines to {kafka.topic} "
        f"(delivered {deliveries.delivered:,}, failed {deliveries.failures:,}); "
        f"refused {len(refused):,} invalid lines"
    )
    for number, reason in refused[:SHOWN_REFUSALS]:
        print(f"  line {number}: refused, {reason}")
    if len(refused) > SHOWN_REFUSALS:
        print(f"  ... and {len(refused) - SHOWN_REFUSALS:,} more")
    if deliveries.failures:
        print(f"diana-inject: error: {dict(deliveries.failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
