"""diana-traffic: synthetic A/B test traffic into Kafka, at a steady rate or unthrottled.

    diana-traffic --config experiments.yaml --eps 50 --duration 120 \
        --prob "control=0.35,treatment=0.55"
"""

from __future__ import annotations

import argparse
import json
import sys

from diana_pipeline.cli.progress import ProgressBar
from diana_pipeline.config import ConfigError, load_config
from diana_pipeline.producer import ProducerError
from diana_pipeline.traffic import (
    ExtraEvent,
    NoiseRates,
    TrafficError,
    TrafficRun,
    TrafficSummary,
    build_spec,
    parse_extra_event,
    parse_probabilities,
)

DEFAULT_DURATION_S = 120.0


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
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def extra_events(events: list[str], values: list[str]) -> tuple[ExtraEvent, ...]:
    """--event and --value options as ExtraEvents; a --value for no --event is an error."""
    means = {}
    for text in values:
        event_type, _, rest = text.partition("=")
        means[event_type.strip()] = rest
    extras = []
    for text in events:
        event_type = text.partition("=")[0].strip()
        extras.append(parse_extra_event(text, means.pop(event_type, None)))
    if means:
        raise TrafficError(f"--value for {', '.join(means)} without its --event")
    return tuple(extras)


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
            extra_events=extra_events(args.event, args.value),
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
