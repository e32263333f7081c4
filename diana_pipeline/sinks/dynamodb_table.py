"""DynamoDB sink: posterior records in the table `ab_posteriors` for dashboards.

Partition key `test_id`, sort key `variant_window_start` = "variant#window_start" (ISO-8601,
so a variant's windows sort by time). Writing is idempotent: a re-materialised window puts the
same keys again. Numbers are stored as Decimal from Python's shortest round-trip text, so a
float read back is the float written (magnitudes below DynamoDB's 1e-130 are stored as 0).
Batches of 25 go through BatchWriteItem; throttled or unprocessed items are retried with
exponential backoff and jitter.

Credentials come from the environment (boto3's usual chain). DynamoDB Local accepts any, so
for a loopback endpoint with none set, fixed placeholders are used: they are not secrets."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from urllib.parse import urlparse

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from diana_pipeline.sinks.records import (
    FLOAT_FIELDS,
    POSTERIOR_FIELDS,
    Record,
    decode,
    encode,
    sort_key,
)
from diana_pipeline.windows import EVERY_WINDOW, WindowSpan

log = logging.getLogger(__name__)

PARTITION_KEY = "test_id"
SORT_KEY = "variant_window_start"
BATCH_SIZE = 25  # BatchWriteItem's limit
UNPROCESSED_ATTEMPTS = 8
BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 5.0
SMALLEST_NUMBER = 1e-130  # DynamoDB's number range starts there
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class DynamoDBError(RuntimeError):
    """DynamoDB is unreachable or refused the request; one line naming the endpoint."""


def dynamodb_client(
    endpoint_url: str | None,
    region: str,
    *,
    attempts: int = 5,
    connect_timeout: float = 2.0,
    read_timeout: float = 10.0,
) -> object:
    """A DynamoDB client: boto3's own retries ("standard": connection errors, throttling and
    5xx, with backoff) and short timeouts, so a down sink fails the run in seconds."""
    credentials = {}
    local = endpoint_url is not None and urlparse(endpoint_url).hostname in LOOPBACK_HOSTS
    if local and not os.environ.get("AWS_ACCESS_KEY_ID") and not os.environ.get("AWS_PROFILE"):
        credentials = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint_url,
        region_name=region,
        config=BotoConfig(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "total_max_attempts": attempts},
        ),
        **credentials,
    )


class DynamoTable:
    """A table on one endpoint, keyed by `test_id` and the class's sort key, created when
    missing."""

    sort_key, sort_key_type = SORT_KEY, "S"

    def __init__(self, endpoint_url: str | None, region: str, table: str) -> None:
        self.endpoint = endpoint_url or f"AWS {region}"
        self.name = table
        self.client = dynamodb_client(endpoint_url, region)
        self._serializer = TypeSerializer()
        self._deserializer = TypeDeserializer()

    def ensure_table(self) -> None:
        """Create the table (on-demand capacity) when it is missing, and wait until active."""
        with self._errors("describe"):
            try:
                self.client.describe_table(TableName=self.name)  # type: ignore[attr-defined]
                return
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                    raise
        log.info("creating DynamoDB table %s on %s", self.name, self.endpoint)
        with self._errors("create"):
            try:
                self.client.create_table(  # type: ignore[attr-defined]
                    TableName=self.name,
                    KeySchema=[
                        {"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
                        {"AttributeName": self.sort_key, "KeyType": "RANGE"},
                    ],
                    AttributeDefinitions=[
                        {"AttributeName": PARTITION_KEY, "AttributeType": "S"},
                        {"AttributeName": self.sort_key, "AttributeType": self.sort_key_type},
                    ],
                    BillingMode="PAY_PER_REQUEST",
                )
            except ClientError as exc:
                # Another run created it in the meantime: fine.
                if exc.response["Error"]["Code"] != "ResourceInUseException":
                    raise
            self.client.get_waiter("table_exists").wait(  # type: ignore[attr-defined]
                TableName=self.name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
            )

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """boto's errors as one-line DynamoDBErrors naming the endpoint and the table."""
        where = f"DynamoDB at {self.endpoint}"
        try:
            yield
        except BotoConnectionError as exc:
            raise DynamoDBError(
                f"cannot reach {where} ({exc}); is it running? (diana-stack up)"
            ) from None
        except NoCredentialsError:
            raise DynamoDBError(
                f"no AWS credentials for {where}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment"
            ) from None
        except ClientError as exc:
            detail = exc.response["Error"]
            raise DynamoDBError(
                f"{where} refused to {action} table {self.name}: "
                f"{detail.get('Code')}: {detail.get('Message')}"
            ) from None
        except BotoCoreError as exc:
            raise DynamoDBError(f"{where}: {exc}") from None


class PosteriorTable(DynamoTable):
    """The posterior table (`ab_posteriors`)."""

    def write(self, records: Iterable[Record], span: WindowSpan = EVERY_WINDOW) -> int:
        """Put every record (overwriting its key); returns how many were written. Items are
        keyed by window, so `span` (the windows written) needs nothing more."""
        items = [self._item(r) for r in records]
        for first in range(0, len(items), BATCH_SIZE):
            self._write_batch(items[first : first + BATCH_SIZE])
        return len(items)

    def read(self, span: WindowSpan = EVERY_WINDOW) -> list[Record]:
        """The records of the windows in `span` (a paginated scan)."""
        records: list[Record] = []
        with self._errors("scan"):
            pages = self.client.get_paginator("scan").paginate(  # type: ignore[attr-defined]
                TableName=self.name, ConsistentRead=True
            )
            for page in pages:
                for item in page["Items"]:
                    plain = {k: self._deserializer.deserialize(v) for k, v in item.items()}
                    where = f"{self.name} item {plain.get(PARTITION_KEY)}/{plain.get(SORT_KEY)}"
                    records.append(decode(plain, where))
        return [r for r in records if span.holds(r["window_start"])]  # type: ignore[arg-type]

    def _item(self, record: Record) -> dict[str, dict]:
        values: dict[str, object] = {PARTITION_KEY: record["test_id"], SORT_KEY: sort_key(record)}
        for field in POSTERIOR_FIELDS:
            value = encode(field, record.get(field))
            if value is not None:  # an optional figure without a value: no attribute
                values[field] = _number(value) if field in FLOAT_FIELDS else value
        return {k: self._serializer.serialize(v) for k, v in values.items()}

    def _write_batch(self, items: list[dict[str, dict]]) -> None:
        requests = {self.name: [{"PutRequest": {"Item": item}} for item in items]}
        for attempt in range(UNPROCESSED_ATTEMPTS):
            with self._errors("write"):
                response = self.client.batch_write_item(RequestItems=requests)  # type: ignore[attr-defined]
            requests = response.get("UnprocessedItems") or {}
            if not requests:
                return
            delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt) * random.uniform(0.5, 1.0)
            log.warning(
                "%d items unprocessed (throttled), retrying in %.2fs",
                len(requests[self.name]),
                delay,
            )
            time.sleep(delay)
        raise DynamoDBError(
            f"DynamoDB at {self.endpoint} left {len(requests[self.name])} items of "
            f"{self.name} unprocessed after {UNPROCESSED_ATTEMPTS} attempts"
        )


def _number(value: float) -> Decimal:
    """DynamoDB numbers are decimal: the shortest round-trip text keeps a float exact. They
    cannot hold magnitudes below 1e-130; a P(best) or expected loss that small is stored as
    0 (it is zero for every decision)."""
    return Decimal(0) if abs(value) < SMALLEST_NUMBER else Decimal(repr(value))
