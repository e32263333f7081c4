"""The DynamoDB sink against a real DynamoDB Local started by the project's stack: the table
is created when missing, writes are idempotent and exact, reads filter by window, and an
unreachable endpoint fails fast with one line."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta

import boto3
import pytest

from diana_pipeline.harness.stack import free_port
from diana_pipeline.sinks.dynamodb_table import (
    PARTITION_KEY,
    SORT_KEY,
    DynamoDBError,
    PosteriorTable,
    dynamodb_client,
)
from diana_pipeline.windows import WindowSpan
from diana_pipeline_tests.sinks.records_for_tests import make_records, make_revenue_records

pytestmark = pytest.mark.servers

START = datetime(2026, 11, 21, 10)
HOUR = timedelta(hours=1)


def key(record: dict) -> tuple:
    return (record["test_id"], record["variant"], record["window_start"])


def new_table(endpoint: str) -> PosteriorTable:
    return PosteriorTable(endpoint, "us-east-1", f"posteriors-{uuid.uuid4().hex[:8]}")


def test_table_is_created_with_the_documented_keys(dynamodb_endpoint: str) -> None:
    table = new_table(dynamodb_endpoint)
    table.ensure_table()
    table.ensure_table()  # already there: nothing to do
    described = table.client.describe_table(TableName=table.name)["Table"]
    assert {k["AttributeName"]: k["KeyType"] for k in described["KeySchema"]} == {
        PARTITION_KEY: "HASH",
        SORT_KEY: "RANGE",
    }
    assert described["TableStatus"] == "ACTIVE"


def test_writing_a_window_twice_leaves_the_same_items_exactly(dynamodb_endpoint: str) -> None:
    table = new_table(dynamodb_endpoint)
    table.ensure_table()
    # 2 tests x 2 variants x 10 windows = 40 items: two BatchWriteItem calls of 25 and 15.
    records = [r for w in range(10) for r in make_records(START + w * HOUR, tests=("t1", "t2"))]
    assert table.write(records) == 40
    assert table.write(records) == 40
    stored = sorted(table.read(), key=key)
    # Below DynamoDB's smallest number (1e-130) is stored as 0; everything else exactly.
    expected = [{**r, "ci_low": 0.0, "expected_loss": 0.0} for r in sorted(records, key=key)]
    assert stored == expected
    assert table.client.scan(TableName=table.name, Select="COUNT")["Count"] == 40
    item = table.client.get_item(
        TableName=table.name,
        Key={PARTITION_KEY: {"S": "t1"}, SORT_KEY: {"S": "control#2026-11-21T10:00:00Z"}},
    )["Item"]
    # Numbers are DynamoDB numbers, written from the shortest round-trip text.
    assert item["success_rate_total"] == {"N": "0.30000000000000004"}
    assert item["beta"] == {"N": repr(12345678.123456789)}
    assert item["exposures_total"] == {"N": str(2**40)}
    assert item["window_start"] == {"S": "2026-11-21T10:00:00Z"}
    newer = make_records(START, tests=("t1",), generation=1)
    table.write(newer)
    first_window = sorted(table.read(WindowSpan(START, START + HOUR)), key=key)
    assert [r["alpha"] for r in first_window] == [2.0, 3.0, 1.0, 2.0]  # t1 newer, t2 as before
    assert len(table.read()) == 40


def test_another_metric_of_the_same_variant_and_window_is_an_item_of_its_own(
    dynamodb_endpoint: str,
) -> None:
    table = new_table(dynamodb_endpoint)
    table.ensure_table()
    records = make_records(START) + make_revenue_records(START)
    assert table.write(records) == 4
    by_metric = sorted(table.read(), key=lambda r: (str(r["metric"]), *key(r)))
    expected = [{**r, "ci_low": 0.0, "expected_loss": 0.0} for r in records]
    assert by_metric == sorted(expected, key=lambda r: (str(r["metric"]), *key(r)))
    assert by_metric[2]["alpha"] is None and by_metric[2]["value_total"] == 0.1 + 0.2 + 1e6


def test_an_unreachable_endpoint_fails_fast_with_one_line() -> None:
    table = PosteriorTable(f"http://127.0.0.1:{free_port()}", "us-east-1", "ab_posteriors")
    began = time.monotonic()
    with pytest.raises(DynamoDBError, match=r"^cannot reach DynamoDB at http://127\.0\.0\.1:\d+"):
        table.ensure_table()
    with pytest.raises(DynamoDBError, match="cannot reach DynamoDB"):
        table.read()
    assert time.monotonic() - began < 60


def test_reading_a_missing_table_names_it(dynamodb_endpoint: str) -> None:
    table = new_table(dynamodb_endpoint)
    with pytest.raises(DynamoDBError, match=f"refused to scan table {table.name}: "
                       "ResourceNotFoundException"):  # fmt: skip
        table.read()


@pytest.mark.parametrize(
    ("endpoint", "environment", "expected_key"),
    [
        ("http://127.0.0.1:8000", {}, "local"),  # DynamoDB Local: a placeholder it accepts
        ("http://127.0.0.1:8000", {"AWS_ACCESS_KEY_ID": "from-env"}, "from-env"),
        (None, {"AWS_ACCESS_KEY_ID": "from-env"}, "from-env"),  # real AWS: the environment's
        ("https://dynamodb.example.internal", {"AWS_ACCESS_KEY_ID": "from-env"}, "from-env"),
    ],
)
def test_aws_credentials_come_from_the_environment(
    endpoint: str | None, environment: dict[str, str], expected_key: str, monkeypatch
) -> None:
    """No network: boto3 resolves credentials when the client is made."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it caches what it resolved
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-from-env")
    client = dynamodb_client(endpoint, "us-east-1")
    credentials = client._request_signer._credentials  # type: ignore[attr-defined]
    assert credentials is not None and credentials.access_key == expected_key


def test_a_remote_endpoint_without_credentials_in_the_environment_gets_none(monkeypatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it caches what it resolved
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    client = dynamodb_client("https://dynamodb.example.internal", "us-east-1")
    assert client._request_signer._credentials is None  # type: ignore[attr-defined]
