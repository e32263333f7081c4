"""The local stack: real Kafka (KRaft) and DynamoDB Local from Maven-resolved jars, plus
the Dagster webserver and daemon, run as background processes under one folder."""

from diana_pipeline.local_stack.dagster import dagster_workspace_state
from diana_pipeline.local_stack.dynamodb import dynamodb_local_client
from diana_pipeline.local_stack.errors import StackError
from diana_pipeline.local_stack.processes import ComponentStatus
from diana_pipeline.local_stack.settings import StackSettings
from diana_pipeline.local_stack.stack import LocalStack

__all__ = [
    "ComponentStatus",
    "LocalStack",
    "StackError",
    "StackSettings",
    "dagster_workspace_state",
    "dynamodb_local_client",
]
