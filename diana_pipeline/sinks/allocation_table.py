"""DynamoDB place for published allocations: the table `ab_allocations` (when the sink is
DynamoDB), one item per test and version, so that the history stays readable; a client reads
a test's latest with one query (`latest`)."""

from __future__ import annotations

import json

from diana_pipeline.allocations import AllocationVersion
from diana_pipeline.sinks.dynamodb_table import PARTITION_KEY, DynamoTable

ALLOCATION_TABLE = "ab_allocations"


class AllocationTable(DynamoTable):
    """`ab_allocations`: partition key test_id, sort key version (a number); the version as
    JSON in `allocation`, its effective time as text for people scanning the table."""

    sort_key, sort_key_type = "version", "N"

    def write(self, versions: list[AllocationVersion]) -> int:
        """Put each version (a version put again is the same item)."""
        for version in versions:
            text = version.to_json()
            item = {
                PARTITION_KEY: {"S": version.test_id},
                self.sort_key: {"N": str(version.version)},
                "effective_from": {"S": json.loads(text)["effective_from"]},
                "allocation": {"S": text},
            }
            with self._errors("write"):
                self.client.put_item(TableName=self.name, Item=item)  # type: ignore[attr-defined]
        return len(versions)

    def latest(self, test_id: str) -> AllocationVersion | None:
        """The test's highest version, or None."""
        with self._errors("query"):
            found = self.client.query(  # type: ignore[attr-defined]
                TableName=self.name,
                KeyConditionExpression=f"{PARTITION_KEY} = :t",
                ExpressionAttributeValues={":t": {"S": test_id}},
                ScanIndexForward=False,
                Limit=1,
                ConsistentRead=True,
            )["Items"]
        return AllocationVersion.from_json(found[0]["allocation"]["S"]) if found else None
