"""Published allocations written to and read back from each place assignment reads them:
allocations.json (a plain folder), the compacted Kafka topic and the DynamoDB table
`ab_allocations` (both real servers started by the project's stack)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from diana_pipeline.allocation_follower import read_published
from diana_pipeline.allocations import AllocationError, AllocationVersion
from diana_pipeline.harness.kafka import KafkaForTests
from diana_pipeline.sinks.allocation_file import AllocationFile
from diana_pipeline.sinks.allocation_table import AllocationTable
from diana_pipeline.sinks.kafka_topic import AllocationTopic

AT = datetime(2026, 11, 21, 10, 30)


def version(test_id: str, number: int, first: float) -> AllocationVersion:
    weights = {"control": first, "treatment": 1.0 - first}
    return AllocationVersion(
        test_id, number, weights, AT + timedelta(seconds=number), AT, datetime(2026, 11, 21, 9)
    )


def test_the_file_keeps_each_tests_latest_version(tmp_path: Path) -> None:
    places = AllocationFile(tmp_path / "output")
    assert places.read() == {}
    places.write([version("a", 1, 0.5), version("b", 1, 0.3)])
    places.write([version("a", 2, 0.2)])
    places.write([version("b", 1, 0.3)])  # sent again by a later run: no change
    assert places.read() == {"a": version("a", 2, 0.2), "b": version("b", 1, 0.3)}
    on_disk = json.loads((tmp_path / "output" / "allocations.json").read_text())
    assert on_disk["a"]["weights"] == {"control": 0.2, "treatment": 0.8}
    assert not list((tmp_path / "output").glob("*.tmp"))
    (tmp_path / "output" / "allocations.json").write_text("{not json")
    with pytest.raises(AllocationError, match="not JSON"):
        places.read()


@pytest.mark.servers
def test_the_topic_is_compacted_and_read_back_per_test(kafka: KafkaForTests) -> None:
    topic = AllocationTopic(kafka.bootstrap_servers, f"allocations-{uuid.uuid4().hex[:8]}")
    assert read_published(kafka.bootstrap_servers, topic.name) == {}  # no topic yet
    assert topic.write([version("a", 1, 0.5), version("b", 1, 0.3)]) == 2
    topic.write([version("a", 2, 0.2)])
    assert read_published(kafka.bootstrap_servers, topic.name) == {
        "a": version("a", 2, 0.2),
        "b": version("b", 1, 0.3),
    }
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic.name)
    configs = admin.describe_configs([resource])[resource].result(timeout=30)
    assert configs["cleanup.policy"].value == "compact"


@pytest.mark.servers
def test_the_dynamodb_table_keeps_every_version(dynamodb_endpoint: str) -> None:
    table = AllocationTable(dynamodb_endpoint, "us-east-1", f"alloc-{uuid.uuid4().hex[:8]}")
    table.ensure_table()
    assert table.latest("a") is None
    table.write([version("a", 1, 0.5), version("a", 2, 0.2), version("b", 1, 0.3)])
    table.write([version("a", 2, 0.2)])  # again: the same item
    assert table.latest("a") == version("a", 2, 0.2)
    assert table.latest("b") == version("b", 1, 0.3)
    items = table.client.scan(TableName=table.name)["Items"]
    assert sorted((i["test_id"]["S"], int(i["version"]["N"])) for i in items) == [
        ("a", 1), ("a", 2), ("b", 1)
    ]  # fmt: skip
    assert items[0]["effective_from"]["S"].endswith("Z")
