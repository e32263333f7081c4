"""The traffic engine against a real Kafka broker: exact counts, allocation and success
shares within statistical tolerance, stable users, pacing, noise, and the expected counts
that the pipeline's counting rules must reproduce."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from itertools import pairwise

import numpy as np
import pytest

from diana_pipeline.allocations import AllocationVersion
from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.harness.kafka import KafkaForTests
from diana_pipeline.producer import ProducerError
from diana_pipeline.sinks.kafka_topic import AllocationTopic
from diana_pipeline.traffic import (
    ExtraEvent,
    NoiseRates,
    TrafficError,
    TrafficRun,
    build_spec,
    parse_extra_event,
    parse_probabilities,
)
from diana_pipeline.windows import utc_now

PROBABILITIES = {"control": 0.35, "treatment": 0.55}
ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

pytestmark = pytest.mark.servers


def run(config: ExperimentsConfig, **kwargs: object):
    probabilities = kwargs.pop("probabilities", PROBABILITIES)
    return TrafficRun(config, build_spec(config, probabilities, **kwargs)).run()  # type: ignore[arg-type]


def events_on(kafka: KafkaForTests, topic: str) -> list[dict]:
    return [json.loads(value) for _, value in kafka.read_all(topic)]


def test_count_sends_exactly_that_many_valid_messages(kafka: KafkaForTests) -> None:
    topic = kafka.new_topic()
    summary = run(kafka.config_for(topic), eps=None, count=5000, seed=1)
    assert summary.sent == summary.deliveries.delivered == 5000
    assert summary.deliveries.failures == 0
    assert kafka.count(topic) == 5000
    messages = kafka.read_all(topic)
    events = [json.loads(value) for _, value in messages]
    assert all(
        key == event["user_id"].encode() for (key, _), event in zip(messages, events, strict=True)
    )
    assert len({e["event_id"] for e in events}) == 5000
    for event in events:
        assert set(event) == {
            "event_id",
            "event_type",
            "test_id",
            "variant",
            "user_id",
            "timestamp",
        }
        assert ISO_MS.match(event["timestamp"])
    # The summary counts exactly what went out.
    on_topic = Counter((e["test_id"], e["event_type"], e["variant"]) for e in events)
    assert on_topic == summary.events


def test_variant_split_and_success_shares_within_tolerance(kafka: KafkaForTests) -> None:
    topic = kafka.new_topic()
    run(kafka.config_for(topic), eps=None, count=30_000, seed=2)
    events = events_on(kafka, topic)
    exposed = Counter(e["variant"] for e in events if e["event_type"] == "ButtonDisplayed")
    converted = Counter(e["variant"] for e in events if e["event_type"] == "ButtonClicked")
    total = sum(exposed.values())
    assert abs(exposed["control"] / total - 0.5) < 4 * np.sqrt(0.25 / total)
    for variant, p in PROBABILITIES.items():
        n = exposed[variant]
        assert abs(converted[variant] / n - p) < 4 * np.sqrt(p * (1 - p) / n), variant


def test_same_seed_same_users_and_variants_across_runs(kafka: KafkaForTests) -> None:
    def users_and_variants(seed: int) -> dict[str, str]:
        topic = kafka.new_topic()
        run(kafka.config_for(topic), eps=None, count=800, seed=seed)
        return {e["user_id"]: e["variant"] for e in events_on(kafka, topic)}

    first, second = users_and_variants(7), users_and_variants(7)
    assert first == second
    assert not set(users_and_variants(8)) & set(first)  # another seed, other users


def test_a_throttled_run_holds_its_rate(kafka: KafkaForTests) -> None:
    """Pacing by schedule: visit i is due at start + i · interval, and its events carry that
    time, so the exposures are evenly spaced in event time whatever the machine's load, and
    3 s at 100 events/s can never send more than the schedule allows."""
    topic = kafka.new_topic()
    summary = run(kafka.config_for(topic), eps=100, duration_s=3.0, seed=3)
    assert summary.sent <= 320
    assert kafka.count(topic) == summary.sent
    shown = sorted(
        datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
        for e in events_on(kafka, topic)
        if e["event_type"] == "ButtonDisplayed"
    )
    gaps = [(b - a).total_seconds() * 1000 for a, b in pairwise(shown)]
    assert len(gaps) > 20 and max(gaps) - min(gaps) <= 1.0  # whole milliseconds apart
    # In event time: every message sent, over the span of the visits.
    assert summary.sent / (sum(gaps) / 1000) == pytest.approx(100, rel=0.1)


def expected_counts_by_the_counting_rules(
    events_raw: list[bytes], config: ExperimentsConfig
) -> tuple[Counter, Counter, int]:
    """docs/design.md §3, recomputed from what is on the topic: user level, first exposure fixes
    the variant, a success counts once after exposure and inside the conversion window,
    users in several variants excluded; successes of never-exposed users are orphans."""
    test = config.tests[0]
    seen_ids: set[str] = set()
    exposures: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    successes: dict[str, list[datetime]] = defaultdict(list)
    for raw in events_raw:
        try:
            event = json.loads(raw)
            ts = datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
            valid = (
                isinstance(event["event_id"], str)
                and isinstance(event["user_id"], str)
                and event["variant"] in test.variant_names
            )
        except (ValueError, KeyError, TypeError):
            continue
        if not valid or event["event_id"] in seen_ids:
            continue
        seen_ids.add(event["event_id"])
        if event["event_type"] == test.exposure_event:
            exposures[event["user_id"]].append((ts, event["variant"]))
        elif event["event_type"] == test.success_event:
            successes[event["user_id"]].append(ts)
    exposed: Counter = Counter()
    converted: Counter = Counter()
    for user, seen in exposures.items():
        if len({variant for _, variant in seen}) > 1:
            continue
        first_time, variant = min(seen)
        exposed[variant] += 1
        window_end = first_time + timedelta(seconds=test.conversion_window.total_seconds())
        if any(first_time <= t <= window_end for t in successes.get(user, [])):
            converted[variant] += 1
    orphans = sum(1 for user in successes if user not in exposures)
    return exposed, converted, orphans


def test_noise_is_sent_counted_and_the_expected_counts_hold(kafka: KafkaForTests) -> None:
    topic = kafka.new_topic()
    config = kafka.config_for(topic)
    noise = NoiseRates(duplicate=0.03, orphan_click=0.03, malformed=0.03, cross_variant=0.05)
    summary = run(config, eps=None, count=20_000, seed=4, users=3000, repeat_rate=0.4, noise=noise)
    raw = [value for _, value in kafka.read_all(topic)]
    assert len(raw) == summary.sent == 20_000
    for name in (
        "duplicate deliveries",
        "clicks without exposure",
        "malformed messages",
        "users in two variants",
    ):
        assert summary.noise[name] > 0, name
    parsed = []
    for value in raw:
        try:
            parsed.append(json.loads(value))
        except (ValueError, UnicodeDecodeError):
            continue
    # Generated ids look like <run>-<sequence>; malformed messages carry fixed fake ids.
    generated = re.compile(r"^[0-9a-f]{8}-\d+$")
    ids = Counter(
        e["event_id"]
        for e in parsed
        if isinstance(e, dict)
        and isinstance(e.get("event_id"), str)
        and generated.match(e["event_id"])
    )
    duplicates = sum(n - 1 for n in ids.values())
    assert duplicates == summary.noise["duplicate deliveries"]
    exposed, converted, orphans = expected_counts_by_the_counting_rules(raw, config)
    test_id = config.tests[0].test_id
    assert exposed == Counter(
        {v: n for (t, v), n in summary.exposed_users.items() if t == test_id and n}
    )
    assert converted == Counter(
        {v: n for (t, v), n in summary.converted_users.items() if t == test_id and n}
    )
    assert orphans == summary.noise["clicks without exposure"]


def test_unreachable_broker_is_a_clear_error(kafka: KafkaForTests) -> None:
    from diana_pipeline.harness.stack import free_port

    env = {**kafka.env, "DIANA_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    from diana_pipeline.config import load_config
    from diana_pipeline.harness.paths import REPO_ROOT

    config = load_config(REPO_ROOT / "experiments.yaml", env=env)
    with pytest.raises(ProducerError, match=r"cannot reach Kafka at 127\.0\.0\.1:\d+"):
        run(config, eps=None, count=10)


def test_missing_topic_is_a_clear_error(kafka: KafkaForTests) -> None:
    with pytest.raises(ProducerError, match=r"topic 'no-such-topic' does not exist"):
        run(kafka.config_for("no-such-topic"), eps=None, count=10)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"probabilities": {"control": 1.4, "treatment": 0.5}},
            r"control must be in \[0, 1\], got 1.4",
        ),
        ({"probabilities": {"control": 0.3, "purple": 0.5}}, r"unknown variant 'purple'"),
        ({"probabilities": {"control": 0.3}}, r"no success probability for variant\(s\) treatment"),
        ({"eps": 0.0}, r"events per second must be > 0"),
        ({"eps": -5.0}, r"events per second must be > 0"),
        ({"tests": ["nope"]}, r"unknown test 'nope'"),
        ({"count": None}, r"give a duration or a count"),
        ({"repeat_rate": 1.0}, r"repeat-visit rate must be in \[0, 1\)"),
        ({"noise": NoiseRates(malformed=2.0)}, r"noise rate malformed must be in \[0, 1\]"),
        ({"extra_events": (ExtraEvent("ButtonClicked", PROBABILITIES),)},
         r"extra event ButtonClicked is test button-color-test's exposure or success event"),
        ({"extra_events": (ExtraEvent("Purchase", {"control": 0.1}),)},
         r"extra event Purchase: no rate for variant\(s\) treatment"),
        ({"extra_events": (ExtraEvent("Purchase", PROBABILITIES, {"control": 5.0}),)},
         r"extra event Purchase: no value mean for variant\(s\) treatment"),
        ({"extra_events": (ExtraEvent("Purchase", {"control": 0.1, "treatment": 2.0}),)},
         r"extra event Purchase: rates must be in \[0, 1\]"),
    ],
)  # fmt: skip
def test_bad_specs(settings: dict, message: str, kafka: KafkaForTests) -> None:
    config = kafka.config_for("unused")
    probabilities = settings.pop("probabilities", PROBABILITIES)
    arguments = {"count": 10, **settings}
    with pytest.raises(TrafficError, match=message):
        build_spec(config, probabilities, **arguments)


@pytest.mark.parametrize("text", ["control", "control=lots", "=0.3", ""])
def test_bad_probability_text(text: str) -> None:
    with pytest.raises(TrafficError):
        parse_probabilities(text)


@pytest.mark.parametrize("text", ["Purchase", "=control:0.1", "Purchase=control", "Purchase="])
def test_bad_extra_event_text(text: str) -> None:
    with pytest.raises(TrafficError):
        parse_extra_event(text)


def test_extra_event_text_with_values() -> None:
    extra = parse_extra_event("Purchase=control:0.1,treatment:0.12", "control:25,treatment:27")
    assert extra == ExtraEvent("Purchase", {"control": 0.1, "treatment": 0.12},
                               {"control": 25.0, "treatment": 27.0})  # fmt: skip


def test_following_the_allocation_switches_new_users_when_a_version_takes_effect(
    kafka: KafkaForTests,
) -> None:
    """Version 1 sends every new user to control; version 2, published while the run sends,
    to treatment from its effective moment on (its lead, 2 s, is longer than the follower's
    poll, 1 s). Returning users keep the variant of their first visit."""
    topic = kafka.new_topic()
    config = kafka.config_for(topic)
    config = config.model_copy(update={"allocation_topic": f"alloc-{uuid.uuid4().hex[:8]}"})
    test_id = config.tests[0].test_id
    published = AllocationTopic(kafka.bootstrap_servers, config.allocation_topic)
    now = utc_now()
    published.write(
        [AllocationVersion(test_id, 1, {"control": 1.0, "treatment": 0.0}, now, now, None)]
    )
    spec = build_spec(config, PROBABILITIES, tests=[test_id], eps=300, duration_s=8,
                      users=100_000, repeat_rate=0.3, seed=7, follow_allocation=True)  # fmt: skip
    traffic = TrafficRun(config, spec)
    runner = threading.Thread(target=traffic.run)
    runner.start()
    deadline = time.monotonic() + 30
    while traffic.summary.sent < 300:  # under way
        assert time.monotonic() < deadline, "the traffic run sent nothing"
        time.sleep(0.05)
    # On a whole millisecond: events carry millisecond timestamps, and a user in the
    # switch's own millisecond but before its microsecond is rightly given version 1.
    switch = utc_now() + timedelta(seconds=2)
    switch = switch.replace(microsecond=switch.microsecond // 1000 * 1000)
    published.write(
        [AllocationVersion(test_id, 2, {"control": 0.0, "treatment": 1.0}, switch, utc_now(), None)]
    )
    runner.join(timeout=60)
    assert not runner.is_alive()
    exposures = [e for e in events_on(kafka, topic) if e["event_type"] == "ButtonDisplayed"]
    first: dict[str, dict] = {}
    for event in sorted(exposures, key=lambda e: e["timestamp"]):
        first.setdefault(event["user_id"], event)
        assert event["variant"] == first[event["user_id"]]["variant"]  # sticky
    moment = switch.isoformat(timespec="milliseconds") + "Z"
    before = {e["variant"] for e in first.values() if e["timestamp"] < moment}
    after = {e["variant"] for e in first.values() if e["timestamp"] >= moment}
    assert before == {"control"} and after == {"treatment"}
    returning = [e for e in exposures if e["timestamp"] >= moment and e["variant"] == "control"]
    assert returning, "no user who came before the switch returned after it"
    assert [u["version"] for u in traffic.summary.allocations_used] == [1, 2]
