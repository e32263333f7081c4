"""The local stack: real Kafka (KRaft) and DynamoDB Local from Maven-resolved jars, plus
the Dagster webserver and daemon, run as background processes under one folder."""

from diana_pipeline.local_stack.errors import StackError
from diana_pipeline.local_stack.stack import ComponentStatus, LocalStack, StackSettings

__all__ = ["ComponentStatus", "LocalStack", "StackError", "StackSettings"]
