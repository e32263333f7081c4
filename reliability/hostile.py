"""Hostile input: thousands of bad messages of every kind (not JSON, truncated, wrong types,
huge strings, NUL bytes, non-UTF-8, unknown test or variant, timestamps in 1970 and 2100,
missing fields, ...) interleaved on the topic with good traffic, through the real ingestion.
Nothing may crash, every bad message must land in `rejected_events` with the reason of its
kind, and the good events and counts must be exact.

    .venv/bin/python -m reliability.hostile                       # docs/reliability.md
    .venv/bin/python -m reliability.hostile --bad 2000 --no-write
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from diana_pipeline.config import ExperimentsConfig, load_config
from diana_pipeline.counting import cumulative_counts
from diana_pipeline.harness.docs import RELIABILITY_PAGE, write_section
from diana_pipeline.harness.kafka import KafkaForTests
from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.harness.stack import private_stack
from diana_pipeline.ingestion import ingest, make_consumer, plan_runs, watermarks
from diana_pipeline.markdown import table
from diana_pipeline.producer import make_producer
from diana_pipeline.store import EventStore
from diana_pipeline.traffic import TrafficRun, TrafficSummary, build_spec


@dataclass(frozen=True)
class Hostile:
    kind: str
    raw: bytes | None
    reason: str  # what the rejection reason must say


def _good_event(config: ExperimentsConfig, rng: random.Random) -> dict[str, str]:
    test = config.tests[0]
    moment = datetime.now(UTC) - timedelta(seconds=rng.randrange(3600))
    return {
        "event_id": f"hostile-{rng.getrandbits(64):016x}",
        "event_type": test.exposure_event,
        "test_id": test.test_id,
        "variant": test.variant_names[0],
        "user_id": f"h-{rng.getrandbits(32):08x}",
        "timestamp": f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z",
    }


def _dumps(event: object) -> bytes:
    return json.dumps(event, ensure_ascii=False).encode()


def _kinds(config: ExperimentsConfig) -> dict[str, tuple[str, Callable[[random.Random], object]]]:
    """Kind → (expected reason prefix, a maker of one message from a seeded generator)."""
    fields = list(_good_event(config, random.Random(0)))
    limit = config.ingestion.max_event_bytes

    def good(r: random.Random) -> dict[str, object]:
        return _good_event(config, r)

    def with_field(r: random.Random, name: str, value: object) -> bytes:
        return _dumps({**good(r), name: value})

    def spliced(r: random.Random, junk: bytes) -> bytes:
        """junk inside the user_id string."""
        raw = _dumps(good(r))
        at = raw.index(b'"user_id": "') + len(b'"user_id": "') + 1
        return raw[:at] + junk + raw[at:]

    def without(event: dict[str, object], r: random.Random) -> dict[str, object]:
        dropped = set(r.sample(fields, r.randrange(1, len(fields) + 1)))
        return {k: v for k, v in event.items() if k not in dropped}

    def text(r: random.Random, size: int) -> str:
        return "".join(r.choice("abcxyz-_0123456789é") for _ in range(size))

    return {
        "not JSON": ("not JSON", lambda r: b"#" + text(r, r.randrange(0, 80)).encode()),
        "truncated": ("not JSON", lambda r: (raw := _dumps(good(r)))[: r.randrange(len(raw))]),
        "non-UTF-8 bytes": ("not JSON", lambda r: spliced(r, bytes([r.randrange(0x80, 0x100)]))),
        "raw NUL byte": ("not JSON", lambda r: spliced(r, b"\x00" * r.randrange(1, 4))),
        "escaped NUL or newline": (
            "contains a control character",
            lambda r: with_field(r, r.choice(fields[:5]), "a" + r.choice(["\x00", "\n"]) + "b"),
        ),
        "too deep": ("not JSON", lambda r: b'{"event_id": ' + b"[" * 2000 + b"]" * 2000 + b"}"),
        "not an object": (
            "not a JSON object",
            lambda r: _dumps(r.choice([[good(r)], 17, "event", None, 2.5, True])),
        ),
        "missing fields": ("missing field(s)", lambda r: _dumps(without(good(r), r))),
        "wrong types": (
            "must be a string",
            lambda r: with_field(r, r.choice(fields), r.choice([17, 2.5, [], {}, True, None])),
        ),
        "empty or long field": (
            "must have 1 to 256 characters",
            lambda r: with_field(
                r, r.choice(fields), text(r, r.choice([0, r.randrange(257, 5000)]))
            ),
        ),
        "huge": (
            "oversized",
            lambda r: with_field(r, "user_id", text(r, r.randrange(limit, 4 * limit))),
        ),
        "unknown test": ("unknown test", lambda r: with_field(r, "test_id", text(r, 12))),
        "unknown variant": ("unknown variant", lambda r: with_field(r, "variant", text(r, 9))),
        "timestamp in 1970": (
            "timestamp out of range",
            lambda r: with_field(r, "timestamp", f"1970-01-0{r.randrange(1, 10)}T00:00:00.000Z"),
        ),
        "timestamp in 2100": (
            "timestamp out of range",
            lambda r: with_field(r, "timestamp", f"2100-0{r.randrange(1, 10)}-01T00:00:00Z"),
        ),
        "not a timestamp": (
            "timestamp is not ISO-8601",
            lambda r: with_field(r, "timestamp", r.choice(["yesterday", "now", "12/31/2026", "T"])),
        ),
        "empty message": ("empty message", lambda r: None),
    }


def hostile_messages(config: ExperimentsConfig, count: int, seed: int) -> list[Hostile]:
    """At least `count` bad messages, the same number of each kind, shuffled."""
    rng = random.Random(seed)
    kinds = _kinds(config)
    per_kind = -(-count // len(kinds))
    messages = [
        Hostile(kind, make(rng), reason)  # type: ignore[arg-type]
        for kind, (reason, make) in kinds.items()
        for _ in range(per_kind)
    ]
    rng.shuffle(messages)
    return messages


@dataclass
class HostileResult:
    kinds: list[str]
    good: TrafficSummary
    bad: list[Hostile]
    events_stored: int
    rejected: list[tuple[bytes | None, str]]  # (raw, reason) from rejected_events
    counts: dict[tuple[str, str], tuple[int, int]]  # (test, variant) → exposures, successes
    seconds: float

    def by_kind(self) -> list[dict[str, object]]:
        """Per kind: messages sent, rejected with the expected reason, and not."""
        reasons: dict[bytes | None, Counter[str]] = {}
        for raw, reason in self.rejected:
            reasons.setdefault(raw, Counter())[reason] += 1
        rows: dict[str, dict[str, object]] = {}
        for message in self.bad:
            row = rows.setdefault(message.kind, {"kind": message.kind, "sent": 0, "rejected": 0})
            row["sent"] += 1  # type: ignore[operator]
            found = reasons.get(message.raw, Counter())
            match = next((r for r in found if message.reason in r and found[r]), None)
            if match is not None:
                found[match] -= 1
                row["rejected"] += 1  # type: ignore[operator]
                row.setdefault("example", match[:70])
        return sorted(rows.values(), key=lambda row: self.kinds.index(str(row["kind"])))

    @property
    def exact(self) -> bool:
        expected_counts = {
            key: (self.good.exposed_users[key], self.good.converted_users[key])
            for key in self.good.exposed_users
        }
        return (
            self.events_stored == sum(self.good.events.values())
            and len(self.rejected) == len(self.bad)
            and all(row["rejected"] == row["sent"] for row in self.by_kind())
            and {k: v for k, v in self.counts.items() if v != (0, 0)} == expected_counts
        )


def run_hostile(kafka: KafkaForTests, store: Path, bad: int, good: int, seed: int) -> HostileResult:
    """Send `good` traffic events and `bad` hostile messages to one new topic, interleaved,
    ingest every offset with the real code, and read back what was stored."""
    topic = kafka.new_topic(partitions=3)
    env = {**kafka.env_for(topic), "DIANA_DUCKDB_PATH": str(store)}
    config = load_config(REPO_ROOT / "experiments.yaml", env=env)
    messages = hostile_messages(config, bad, seed)
    eps = 20_000.0
    spec = build_spec(config, {"control": 0.35, "treatment": 0.55}, eps=eps, count=good, seed=seed)
    summary: list[TrafficSummary] = []
    traffic = threading.Thread(target=lambda: summary.append(TrafficRun(config, spec).run()))
    producer = make_producer(kafka.bootstrap_servers)
    traffic.start()
    # Spread the bad messages over the traffic's duration, a few at a time.
    pause = (good / eps) / max(1, len(messages) / 50)
    for start in range(0, len(messages), 50):
        for message in messages[start : start + 50]:
            producer.produce(topic, message.raw)
        producer.poll(0)
        time.sleep(pause)
    assert producer.flush(60) == 0, "bad messages not delivered"
    traffic.join()
    consumer = make_consumer(config.infrastructure.kafka)
    try:
        marks = watermarks(consumer, topic)
    finally:
        consumer.close()
    started = time.perf_counter()
    for ranges in plan_runs(marks, {}, config.ingestion.max_batch_messages, 1000)[0]:
        ingest(config, ranges, run_id="hostile")
    seconds = time.perf_counter() - started
    with EventStore.open(store) as opened:
        stored = opened.count_events()
        rejected = opened.connection.execute("SELECT raw, reason FROM rejected_events").fetchall()
        counts = cumulative_counts(opened.connection, config, datetime(2200, 1, 1))
    return HostileResult(
        list(_kinds(config)),
        summary[0],
        messages,
        stored,
        [(bytes(raw) if raw is not None else None, reason) for raw, reason in rejected],
        {key: (c.exposures, c.successes) for key, c in counts.items()},
        seconds,
    )


def render(result: HostileResult) -> str:
    kinds = []
    for row in result.by_kind():
        example = str(row.get("example", "")).replace("|", "\\|")
        kinds.append((row["kind"], f"{row['sent']:,}", f"{row['rejected']:,}", f"`{example}`"))
    good = sum(result.good.events.values())
    totals = [
        ("good events stored", f"{good:,}", f"{result.events_stored:,}"),
        ("rows in rejected_events", f"{len(result.bad):,}", f"{len(result.rejected):,}"),
    ]
    for (test_id, variant), (exposures, successes) in sorted(result.counts.items()):
        key = (test_id, variant)
        totals.append(
            (
                f"{variant}: exposed / converted users",
                f"{result.good.exposed_users[key]:,} / {result.good.converted_users[key]:,}",
                f"{exposures:,} / {successes:,}",
            )
        )
    return "\n\n".join(
        [
            table(["kind", "sent", "rejected with its reason", "a reason"], kinds, align="lrrl"),
            table(["", "expected", "found"], totals, align="lrr"),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bad", type=int, default=12_000)
    parser.add_argument("--good", type=int, default=60_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="diana-reliability-") as home:
        print("  .. starting a private Kafka broker", file=sys.stderr)
        with private_stack(Path(home), with_dynamodb=False) as own:
            kafka = KafkaForTests(own.settings.bootstrap_servers, own.env)
            print(f"  .. {args.good:,} good events and {args.bad:,} bad messages", file=sys.stderr)
            result = run_hostile(
                kafka, Path(home) / "events.duckdb", args.bad, args.good, args.seed
            )
    findings = render(result)
    verdict = "exact: nothing lost, nothing let in" if result.exact else "NOT EXACT"
    print(findings)
    print(verdict)
    if not args.no_write:
        write_section(
            RELIABILITY_PAGE,
            "hostile-input",
            "Hostile input",
            f"python -m reliability.hostile --bad {args.bad} --good {args.good} --seed {args.seed}",
            f"{len(result.bad):,} bad messages, the same number of each kind, shuffled "
            f"and sent a few at a time between {sum(result.good.events.values()):,} "
            "good traffic events on a 3-partition topic, then ingested by the real "
            f"code ({result.seconds:.1f} s). {verdict}.",
            findings,
        )
    return 0 if result.exact else 1


if __name__ == "__main__":
    sys.exit(main())
