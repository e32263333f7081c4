"""Segments end to end: a file of events with properties through a real Kafka topic, an
ingestion run, the assets and the CSV sink, where each segment's records hold exactly the
users worked out from the file: a user whose later exposure has another device stays in
their first one's, users without the property are in (none), a dimension past max_segments
lumps its smallest into (other), and a sample-ratio mismatch in one segment fails the
segment check while the overall one passes."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from diana_pipeline.config import ExperimentsConfig
from diana_pipeline.partitions import partition_key
from diana_pipeline.producer import make_producer
from diana_pipeline.traffic import NoiseRates, PropertySpec, TrafficRun, build_spec
from diana_pipeline_tests.test_metrics_end_to_end import PARTITION, at, run_pipeline

pytestmark = pytest.mark.servers

DIMENSIONS = """
    dimensions: [device, country]
    max_segments: 2
    metrics:
      - {name: clicked, type: binary, role: primary, event: ButtonClicked}
      - {name: revenue, type: revenue, event: Purchase}
"""
# Per variant, how many users on each device: balanced overall (260 each), mobile tilted to
# control (160 against 90: an SRM there), tablets only in treatment (70 users: too few to
# judge, and the third largest: (other)), 10 users a variant without properties.
DEVICES = {
    "control": {"mobile": 160, "desktop": 90, None: 10},
    "treatment": {"mobile": 90, "desktop": 90, "tablet": 70, None: 10},
}


COUNTRIES = ("IT", "IT", "FR", "FR", "FR", "DE", "DE", "DE", "DE", "DE")
# With max_segments 2, the third largest of each dimension goes to (other).
LUMPED = {"tablet", "IT"}


def users() -> list[tuple[str, str, str | None, str | None, bool]]:
    """(user, variant, device, country, converted): countries by index, half DE, 30% FR,
    20% IT; every third user converts."""
    found = []
    for variant, devices in DEVICES.items():
        index = 0
        for device, count in devices.items():
            for _ in range(count):
                country = None if device is None else COUNTRIES[index % 10]
                found.append((f"{variant}-{index}", variant, device, country, index % 3 == 0))
                index += 1
    return found


def send(config: ExperimentsConfig) -> str:
    producer = make_producer(config.infrastructure.kafka.bootstrap_servers)
    topic, number = config.infrastructure.kafka.topic, 0

    def event(
        kind: str, variant: str, user: str, minute: int, properties: dict | None, value=None
    ) -> None:
        nonlocal number
        number += 1
        body = {"event_id": f"s{number}", "event_type": kind, "test_id": "button-color-test",
                "variant": variant, "user_id": user, "timestamp": at(minute)}  # fmt: skip
        if properties is not None:
            body["properties"] = properties
        if value is not None:
            body["value"] = value
        producer.produce(topic, json.dumps(body).encode(), key=user.encode())

    for user, variant, device, country, converted in users():
        properties = None if device is None else {"device": device, "country": country}
        event("ButtonDisplayed", variant, user, 1, properties)
        if converted:
            event("ButtonClicked", variant, user, 5, None)
            event("Purchase", variant, user, 6, None, value=12.5)
    # control-0 (mobile) is exposed again later on a tablet: still mobile
    event("ButtonDisplayed", "control", "control-0", 2, {"device": "tablet", "country": "DE"})
    assert producer.flush(30) == 0
    return PARTITION


def test_segments_reach_the_sink_with_exact_counts(kafka, tmp_path: Path) -> None:
    checks: dict[str, bool] = {}
    records, _ = run_pipeline(kafka, tmp_path, DIMENSIONS, send, checks)
    expected: Counter = Counter()
    for _, variant, device, country, converted in users():
        for dimension, value in (("device", device), ("country", country)):
            segment = "(none)" if value is None else "(other)" if value in LUMPED else value
            expected[(dimension, segment, variant, "exposed")] += 1
            expected[(dimension, segment, variant, "converted")] += converted
    got: Counter = Counter()
    revenue: Counter = Counter()
    for record in records:
        if record["dimension"] != "all" and record["metric"] == "revenue":
            key = (record["dimension"], record["segment"], record["variant"])
            revenue[(*key, "converted")] = round(record["value_total"] / 12.5)
            assert record["exposures_total"] == expected[(*key, "exposed")], key
        elif record["dimension"] != "all":
            key = (record["dimension"], record["segment"], record["variant"])
            got[(*key, "exposed")] += record["exposures_total"]
            got[(*key, "converted")] += record["successes_total"]
    assert +got == +expected
    # every converter bought once for 12.5: the revenue per segment follows the conversions
    assert +revenue == Counter({k: v for k, v in expected.items() if k[3] == "converted"})
    segments = {(r["dimension"], r["segment"]) for r in records if r["dimension"] != "all"}
    assert {("device", "(other)"), ("country", "(other)")} <= segments
    assert not {("device", "tablet"), ("country", "IT")} & segments
    overall = [r for r in records if r["dimension"] == "all" and r["metric"] == "clicked"]
    assert [r["exposures_total"] for r in overall] == [260, 260]
    assert checks["sample_ratio_mismatch"] is True
    assert checks["segment_sample_ratio_mismatch"] is False


def test_traffic_with_properties_reaches_the_segment_counts_its_summary_promises(
    kafka, tmp_path: Path
) -> None:
    summaries = []

    def send_traffic(config: ExperimentsConfig) -> str:
        properties = (
            PropertySpec("device", {"desktop": 0.5, "mobile": 0.4, "tablet": 0.1},
                         {"mobile": 1.5}),
            PropertySpec("country", {"DE": 0.6, "FR": 0.4}),
        )  # fmt: skip
        spec = build_spec(config, {"control": 0.3, "treatment": 0.4}, eps=None, count=3000,
                          seed=5, users=1000, repeat_rate=0.3, properties=properties,
                          noise=NoiseRates(cross_variant=0.02))  # fmt: skip
        summaries.append(TrafficRun(config, spec).run())
        # The window of the last event: its records' totals count the earlier windows' too.
        return partition_key(config.partitions.window_start(datetime.now(UTC)))

    records, _ = run_pipeline(kafka, tmp_path, "    dimensions: [device, country]\n",
                              send_traffic)  # fmt: skip
    [summary] = summaries
    expected = {(r["dimension"], r["segment"], r["variant"]): (r["exposed_users"],
                r["converted_users"]) for r in summary.expected_segments()}  # fmt: skip
    got = {(r["dimension"], r["segment"], r["variant"]): (r["exposures_total"],
           r["successes_total"]) for r in records if r["dimension"] != "all"}  # fmt: skip
    assert got == expected
    assert len(expected) == 5 * 2
