"""diana-traffic: synthetic A/B test traffic into Kafka, at a steady rate or unthrottled.

    diana-traffic --config experiments.yaml --eps 50 --duration 120 \
        --prob "control=0.35,treatment=0.55"
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TypeVar

from diana_pipeline.cli.progress import ProgressBar
from diana_pipeline.config import ConfigError, load_config
from diana_pipeline.producer import ProducerError
from diana_pipeline.traffic import (
    NoiseRates,
    TrafficError,
    TrafficRun,
    TrafficSummary,
    build_spec,
    parse_extra_event,
    parse_probabilities,
    parse_property,
)

DEFAULT_DURATION_S = 120.0
T = TypeVar("T")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diana-traffic", description="Send synthetic exposure and click events to Kafka."
    )
    parser.add_argument(
        "--config", help="experiments file (default: $DIANA_CONFIG or ./experiments.yaml)"
    )
    parser.add_argument("--eps", type=float, default=50.0, help="events per second (default 50)")
    parser.add_argument("--unthrottled", action="store_true", help="send as fast as possible")
    parser.add_argument(
        "--duration",
        type=float,
        help=f"seconds to run (default {DEFAULT_DURATION_S:.0f} without --count)",
    )
    parser.add_argument("--count", type=int, help="stop after this many messages")
    parser.add_argument(
        "--prob",
        default="control=0.35,treatment=0.55",
        help='success probability per variant (default "control=0.35,treatment=0.55")',
    )
    parser.add_argument("--tests", help="comma-separated test ids (default: every test)")
    parser.add_argument("--seed", type=int, help="random seed: same seed, same users and outcomes")
    parser.add_argument("--users", type=int, help="distinct users (default: a new user per visit)")
    parser.add_argument("--repeat-rate", type=float, default=0.0, help="share of returning visits")
    noise = parser.add_argument_group("noise, to test the pipeline")
    noise.add_argument("--duplicate-rate", type=float, default=0.0)
    noise.add_argument("--orphan-click-rate", type=float, default=0.0)
    noise.add_argument("--malformed-rate", type=float, default=0.0)
    noise.add_argument("--cross-variant-rate", type=float, default=0.0)
    metrics = parser.add_argument_group("extra events, for metrics beyond the conversion")
    metrics.add_argument(
        "--event",
        action="append",
        default=[],
        metavar="EVENT=VARIANT:RATE,...",
        help="another event each visit sends with this probability per variant, e.g. "
        "Purchase=control:0.10,treatment:0.12 (repeatable)",
    )
    metrics.add_argument(
        "--value",
        action="append",
        default=[],
        metavar="EVENT=VARIANT:MEAN,...",
        help="that event carries a value, lognormal with this mean per variant, e.g. "
        "Purchase=control:25,treatment:27 (repeatable)",
    )
    segments = parser.add_argument_group("properties, for segment breakdowns")
    segments.add_argument(
        "--property",
        action="append",
        default=[],
        metavar="NAME=VALUE:WEIGHT,...",
        help="a property every exposure carries, each user's drawn once from these weights, "
        "e.g. device=desktop:0.5,mobile:0.4,tablet:0.1 (repeatable)",
    )
    segments.add_argument(
        "--effect",
        action="append",
        default=[],
        metavar="NAME=VALUE:FACTOR,...",
        help="a factor on the success probability of users with that value, e.g. "
        "device=mobile:1.3 (repeatable)",
    )
    parser.add_argument(
        "--follow-allocation",
        action="store_true",
        help="assign new users by the latest allocation the pipeline published for bandit "
        "tests (Kafka topic allocation_topic), read as it comes; users keep their variant",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def paired(
    texts: list[str], seconds: list[str], parse: Callable[[str, str | None], T], names: str
) -> tuple[T, ...]:
    """Options that name a thing (--event, --property) parsed with their companions of the
    same name (--value, --effect); a companion for no such thing is an error. `names`: the
    two options, as '--event/--value'."""
    first, second = names.split("/")
    by_name = {}
    for text in seconds:
        name, _, rest = text.partition("=")
        by_name[name.strip()] = rest
    parsed = tuple(parse(text, by_name.pop(text.partition("=")[0].strip(), None)) for text in texts)
    if by_name:
        raise TrafficError(f"{second} for {', '.join(by_name)} without its {first}")
    return parsed


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        duration = args.duration
        if duration is None and args.count is None:
            duration = DEFAULT_DURATION_S
        spec = build_spec(
            config,
            parse_probabilities(args.prob),
            tests=args.tests.split(",") if args.tests else None,
            eps=None if args.unthrottled else args.eps,
            duration_s=duration,
            count=args.count,
            users=args.users,
            repeat_rate=args.repeat_rate,
            seed=args.seed,
            noise=NoiseRates(
                duplicate=args.duplicate_rate,
                orphan_click=args.orphan_click_rate,
                malformed=args.malformed_rate,
                cross_variant=args.cross_variant_rate,
            ),
            extra_events=paired(args.event, args.value, parse_extra_event, "--event/--value"),
            properties=paired(args.property, args.effect, parse_property, "--property/--effect"),
            follow_allocation=args.follow_allocation,
        )
    except (ConfigError, TrafficError) as exc:
        print(f"diana-traffic: error: {exc}", file=sys.stderr)
        return 2

    bar = ProgressBar()
    expected = spec.count or (spec.eps * spec.duration_s if spec.eps and spec.duration_s else None)

    def show(summary: TrafficSummary) -> None:
        bar.update(
            summary.sent,
            expected,
            f"{summary.sent:,} sent, {summary.deliveries.delivered:,} delivered, "
            f"{summary.rate:,.0f}/s, {summary.elapsed_s:.0f}s",
        )

    try:
        summary = TrafficRun(config, spec, on_progress=show).run()
    except ProducerError as exc:
        print(f"diana-traffic: error: {exc}", file=sys.stderr)
        return 1
    finally:
        bar.close()
    return report(summary, as_json=args.json)


def report(summary: TrafficSummary, as_json: bool) -> int:
    if as_json:
        print(json.dumps(summary.as_dict(), indent=2))
    else:
        state = "interrupted" if summary.interrupted else "done"
        print(
            f"{state}: sent {summary.sent:,} messages in {summary.elapsed_s:.1f}s "
            f"({summary.rate:,.0f}/s); delivered {summary.deliveries.delivered:,}, "
            f"failed {summary.deliveries.failures:,}"
        )
        print(summary.table())
        for name, count in sorted(summary.noise.items()):
            print(f"noise: {name}: {count:,}")
    if summary.deliveries.failures:
        print(
            f"diana-traffic: error: {summary.deliveries.failures:,} messages not delivered: "
            f"{dict(summary.deliveries.failed)}",
            file=sys.stderr,
        )
        return 1
    return 130 if summary.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
