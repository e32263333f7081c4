"""Every metric type end to end: hand-written events with values through a real Kafka topic,
an ingestion run, the statistics and output assets, into the CSV sink, where each metric's
records hold exactly the sums worked out by hand; a revenue guardrail that lost holds back
the conversion's winner; a file without `metrics:` gives the same conversion records as
before metrics existed (no record of another metric)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from diana_pipeline.assets.ingestion import build_events
from diana_pipeline.assets.outputs import PUBLISHED
from diana_pipeline.assets.statistics import STATISTICS, build_statistics
from diana_pipeline.config import ExperimentsConfig, load_config
from diana_pipeline.harness.kafka import KafkaForTests
from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.ingestion import ingest
from diana_pipeline.partitions import partition_key
from diana_pipeline.producer import make_producer
from diana_pipeline.resources import pipeline_resources
from diana_pipeline.sinks.csv_files import PosteriorCsvFiles
from diana_pipeline.store import EventStore
from diana_pipeline.traffic import ExtraEvent, TrafficRun, build_spec
from diana_pipeline_tests.ingestion.conftest import all_ranges

pytestmark = pytest.mark.servers

METRICS = """
    metrics:
      - {name: clicked, type: binary, role: primary, event: ButtonClicked}
      - {name: bought, type: binary, event: Purchase}
      - {name: orders, type: count, event: Purchase}
      - {name: revenue, type: revenue, role: guardrail, margin: 0.01, event: Purchase}
      - {name: errors, type: count, direction: decrease, event: PageError}
      - {name: order_value, type: ratio, numerator: revenue, denominator: orders}
      - {name: capped_revenue, type: revenue, winsorize: 0.95, event: Purchase}
"""
PARTITION = "2026-11-25-10:00"


def at(minute: int) -> str:
    return f"2026-11-25T10:{minute:02d}:00.000Z"


# 300 users a variant, so that the conversion has a winner: 30% of control's click, 60% of
# treatment's. Purchases (values chosen so every sum below is exact in binary) and errors:
#   control:   users 0-99 buy once for 10.0; users 0-9 also buy again for 2.5
#   treatment: users 0-49 buy once for 4.0, users 0-9 again for 2.0 (revenue falls: the
#              guardrail must block)
#   errors:    control users 0-19 once; treatment users 0-39 twice
def events() -> list[dict]:
    rows = []
    for variant, clickers in (("control", 90), ("treatment", 180)):
        for u in range(300):
            user = f"{variant}-{u}"
            rows.append(("ButtonDisplayed", variant, user, 1, None))
            if u < clickers:
                rows.append(("ButtonClicked", variant, user, 5, None))
    for u in range(100):
        rows.append(("Purchase", "control", f"control-{u}", 10, 10.0))
    for u in range(10):
        rows.append(("Purchase", "control", f"control-{u}", 20, 2.5))
    for u in range(50):
        rows.append(("Purchase", "treatment", f"treatment-{u}", 10, 4.0))
    for u in range(10):
        rows.append(("Purchase", "treatment", f"treatment-{u}", 20, 2.0))
    for u in range(20):
        rows.append(("PageError", "control", f"control-{u}", 30, None))
    for u in range(40):
        rows += [("PageError", "treatment", f"treatment-{u}", 30 + k, None) for k in (0, 1)]
    return [
        {"event_id": f"e{i}", "event_type": kind, "test_id": "button-color-test",
         "variant": variant, "user_id": user, "timestamp": at(minute),
         **({"value": value} if value is not None else {})}
        for i, (kind, variant, user, minute, value) in enumerate(rows)
    ]  # fmt: skip


def send_file(config: ExperimentsConfig) -> str:
    """Produce the hand-written events; their window's partition key."""
    producer = make_producer(config.infrastructure.kafka.bootstrap_servers)
    topic = config.infrastructure.kafka.topic
    for event in events():
        producer.produce(topic, json.dumps(event).encode(), key=event["user_id"].encode())
    assert producer.flush(30) == 0
    return PARTITION


def run_pipeline(
    kafka: KafkaForTests,
    tmp_path: Path,
    metrics: str,
    send: Callable[[ExperimentsConfig], str] = send_file,
    checks: dict[str, bool] | None = None,
) -> tuple[list[dict], list[dict]]:
    """Events sent by `send` through Kafka, one ingestion run and the assets of their window
    (`send` gives its partition key); the CSV sink's records and the superiority rows, and
    into `checks` whether each asset check passed."""
    experiments = tmp_path / "experiments.yaml"
    text = (REPO_ROOT / "experiments.yaml").read_text()
    experiments.write_text(text.replace("    variants:\n", metrics + "    variants:\n", 1))
    # (`metrics` is any text for the test: its metrics, dimensions, ...)
    topic = kafka.new_topic(partitions=3)
    env = {**kafka.env_for(topic), "DIANA_DUCKDB_PATH": str(tmp_path / "events.duckdb"),
           "DIANA_CSV_DIR": str(tmp_path / "output"), "DIANA_OUTPUT_SINK": "csv"}  # fmt: skip
    config = load_config(experiments, env=env)
    partition = send(config)
    [ranges] = all_ranges(config)
    assert ingest(config, ranges).counts.rejected == 0
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assets = [*build_statistics(config)[0], build_events(config).to_source_asset()]
        result = materialize(
            assets,
            resources=pipeline_resources(config, experiments),
            selection=[*STATISTICS, PUBLISHED],
            instance=DagsterInstance.ephemeral(),
            partition_key=partition,
        )
    with EventStore.open(tmp_path / "events.duckdb") as store:
        superiority = store.read_window_range("superiority", None, None)
    records = PosteriorCsvFiles(config.infrastructure.csv.directory).read()
    if checks is not None:
        checks.update({c.check_name: c.passed for c in result.get_asset_check_evaluations()})
    return records, superiority


def test_each_metric_type_reaches_the_sink_with_exact_sums(
    kafka: KafkaForTests, tmp_path: Path
) -> None:
    records, superiority = run_pipeline(kafka, tmp_path, METRICS)
    got = {(r["metric"], r["variant"]): r for r in records}
    assert len(got) == len(records) == 7 * 2
    for variant in ("control", "treatment"):
        assert {got[(m, variant)]["exposures_total"] for m in ("clicked", "orders")} == {300}
    assert got[("clicked", "control")]["successes_total"] == 90
    assert got[("clicked", "treatment")]["successes_total"] == 180
    assert got[("bought", "control")]["successes_total"] == 100
    assert got[("orders", "control")]["successes_total"] == 110
    assert got[("orders", "control")]["value_squares_total"] == 10 * 4 + 90
    assert got[("orders", "treatment")]["successes_total"] == 60
    assert got[("revenue", "control")]["value_total"] == 100 * 10.0 + 10 * 2.5
    assert got[("revenue", "control")]["value_squares_total"] == 10 * 12.5**2 + 90 * 10.0**2
    assert got[("revenue", "treatment")]["value_total"] == 50 * 4.0 + 10 * 2.0
    assert got[("errors", "treatment")]["successes_total"] == 80
    assert got[("order_value", "control")]["value_products_total"] == 10 * 12.5 * 2 + 90 * 10.0
    assert got[("order_value", "control")]["success_rate_total"] == 1025.0 / 110
    # Winsorised at the 95th percentile of all 600 users' totals (450 at 0, 40 at 4.0, 10 at
    # 6.0, 90 at 10.0, 10 at 12.5): 10.0, so control's ten 12.5s count as 10.0.
    assert got[("capped_revenue", "control")]["value_total"] == 100 * 10.0
    assert got[("capped_revenue", "control")]["value_squares_total"] == 100 * 10.0**2
    assert got[("capped_revenue", "treatment")]["value_total"] == 50 * 4.0 + 10 * 2.0
    assert got[("revenue", "treatment")]["metric_role"] == "guardrail"
    assert got[("revenue", "treatment")]["prob_worse_by_margin"] > 0.999
    # fewer errors is better: control has fewer
    assert got[("errors", "control")]["prob_best"] > 0.99
    [decision] = {(r["decision"], r["reason"]) for r in superiority}
    assert decision[0] == "keep running"
    assert decision[1].startswith("guardrail revenue blocks treatment")


def test_a_file_without_metrics_gives_the_conversion_alone(
    kafka: KafkaForTests, tmp_path: Path
) -> None:
    records, superiority = run_pipeline(kafka, tmp_path, "")
    assert {(r["metric"], r["metric_role"]) for r in records} == {("conversion", "primary")}
    assert [r["successes_total"] for r in records] == [90, 180]
    assert {r["decision"] for r in superiority} == {"winner"}


def test_traffic_with_extra_events_reaches_the_figures_its_summary_promises(
    kafka: KafkaForTests, tmp_path: Path
) -> None:
    summaries = []

    def send(config: ExperimentsConfig) -> str:
        extras = (
            ExtraEvent("Purchase", {"control": 0.3, "treatment": 0.4},
                       {"control": 20.0, "treatment": 25.0}),
            ExtraEvent("PageError", {"control": 0.05, "treatment": 0.1}),
        )  # fmt: skip
        spec = build_spec(config, {"control": 0.3, "treatment": 0.5}, eps=None, count=3000,
                          seed=21, users=800, repeat_rate=0.3, extra_events=extras)  # fmt: skip
        summaries.append(TrafficRun(config, spec).run())
        # The window of the last event: its records' totals count the earlier windows' too.
        return partition_key(config.partitions.window_start(datetime.now(UTC)))

    records, _ = run_pipeline(kafka, tmp_path, METRICS, send)
    [summary] = summaries
    got = {(r["metric"], r["variant"]): r for r in records}
    assert len(summary.expected_metrics) == 5 * 2
    for row in summary.expected_metrics:
        value = got[(row["metric"], row["variant"])][row["field"]]
        assert round(value * 100) == round(row["value"] * 100), row
