"""Traffic benchmark: the unthrottled rate of Diana's traffic engine (what diana-traffic
--unthrottled and traffic_job with events_per_second null run), beside a bare confluent-kafka
producer sending ready-made messages of the same size with the same producer settings (the
limit of the client on this machine), in the same run, against a private Kafka broker that
this command starts and stops.

    .venv/bin/python -m benchmarks.traffic_benchmark            # prints, writes docs/benchmarks.md
    .venv/bin/python -m benchmarks.traffic_benchmark --events 200000 --no-write
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from diana_pipeline.harness.docs import BENCHMARKS_PAGE, write_section
from diana_pipeline.harness.kafka import KafkaForTests
from diana_pipeline.harness.stack import private_stack
from diana_pipeline.markdown import table
from diana_pipeline.producer import Deliveries, flush, make_producer, produce
from diana_pipeline.traffic import TrafficRun, build_spec

TARGET = 50_000


def bare_producer(bootstrap: str, topic: str, payloads: list[bytes]) -> float:
    producer = make_producer(bootstrap)
    deliveries = Deliveries()
    started = time.perf_counter()
    for payload in payloads:
        produce(producer, deliveries, topic, payload, payload[-40:-30])
    flush(producer, deliveries)
    elapsed = time.perf_counter() - started
    assert deliveries.delivered == len(payloads), deliveries
    return len(payloads) / elapsed


def diana_traffic(kafka: KafkaForTests, topic: str, events: int) -> tuple[float, list[bytes]]:
    config = kafka.config_for(topic)
    spec = build_spec(config, {"control": 0.35, "treatment": 0.55}, eps=None, count=events, seed=1)
    summary = TrafficRun(config, spec).run()
    assert summary.deliveries.delivered == events, summary.deliveries
    return summary.rate, [value for _, value in kafka.read_all(topic)[:events]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--runs", type=int, default=3, help="runs of each; the best is kept")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    print("  .. starting a private Kafka broker", file=sys.stderr)
    with (
        tempfile.TemporaryDirectory(prefix="diana-bench-") as home,
        private_stack(Path(home), with_dynamodb=False) as own,
    ):
        kafka = KafkaForTests(own.settings.bootstrap_servers, own.env)
        diana_rates, bare_rates = [], []
        for run in range(args.runs):
            print(
                f"  .. run {run + 1}/{args.runs}: diana traffic, then the bare producer",
                file=sys.stderr,
            )
            rate, payloads = diana_traffic(kafka, kafka.new_topic(), args.events)
            diana_rates.append(rate)
            bare_rates.append(
                bare_producer(own.settings.bootstrap_servers, kafka.new_topic(), payloads)
            )
    diana, bare = max(diana_rates), max(bare_rates)
    size = sum(len(p) for p in payloads) / len(payloads)
    rates = table(
        ["producer", "events/s (best of runs)", "share of the bare producer"],
        [
            (
                "bare confluent-kafka producer, ready-made messages (the limit)",
                f"{bare:,.0f}",
                "100%",
            ),
            (
                f"Diana traffic engine, unthrottled (target ≥ {TARGET:,})",
                f"{diana:,.0f}",
                f"{diana / bare:.0%}",
            ),
        ],
        align="lrr",
    )
    print(rates)
    if not args.no_write:
        write_section(
            BENCHMARKS_PAGE,
            "traffic-benchmark",
            "Traffic: unthrottled producer rate",
            f"python -m benchmarks.traffic_benchmark --events {args.events} --runs {args.runs}",
            f"{args.events:,} messages of {size:.0f} bytes on average to a 3-partition "
            "topic of a local single-node broker; same producer settings (idempotent, "
            "lz4, batched), "
            "every message delivered before the clock stops. Best of "
            f"{args.runs} runs each: Diana {', '.join(f'{r:,.0f}' for r in diana_rates)}; "
            f"bare {', '.join(f'{r:,.0f}' for r in bare_rates)}.",
            rates,
        )
    return 0 if diana >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
