"""DynamoDB Local of the local stack: the emulator from Maven-resolved jars, its tables in
the stack folder (or in memory), and a client for it."""

from __future__ import annotations

import logging

import boto3
from botocore.config import Config as BotoConfig

from diana_pipeline.local_stack.jars import (
    DYNAMODB_LOCAL,
    classpath,
    ensure_jars,
    find_java,
    jar_cache_root,
)
from diana_pipeline.local_stack.processes import (
    ComponentStatus,
    ensure_ports_free,
    wait_until_ready,
)
from diana_pipeline.local_stack.settings import LOOPBACK, StackSettings

log = logging.getLogger(__name__)

DYNAMODB_READY_TIMEOUT_S = 60.0


class DynamoDBLocal:
    """The DynamoDB Local server of one stack folder."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.process = settings.process("dynamodb")
        self.processes = (self.process,)

    def up(self) -> None:
        s = self.settings
        if self.process.already_running(s.dynamodb_endpoint):
            return
        java = find_java()
        ensure_ports_free("DynamoDB Local", LOOPBACK, [s.dynamodb_port])
        jars = ensure_jars(DYNAMODB_LOCAL, jar_cache_root(), s.logs_dir)
        db_dir = s.home / "dynamodb"
        db_dir.mkdir(parents=True, exist_ok=True)
        storage = ["-inMemory"] if s.dynamodb_in_memory else ["-dbPath", str(db_dir)]
        argv = [
            java,
            f"-Xmx{s.dynamodb_heap}",
            "-XX:+ExitOnOutOfMemoryError",
            # sqlite4java loads its native library from the folder Maven copied it to.
            f"-Djava.library.path={jars / 'lib'}",
            "-cp",
            classpath(jars),
            "software.amazon.dynamodb.services.local.main.ServerRunner",
            "-port",
            str(s.dynamodb_port),
            "-sharedDb",
            "-disableTelemetry",
            *storage,
        ]
        log.info(
            "%-17s starting %s %s on port %d (it has no bind option: all interfaces)",
            "dynamodb",
            DYNAMODB_LOCAL.title,
            DYNAMODB_LOCAL.version,
            s.dynamodb_port,
        )
        self.process.start(argv, s.env, db_dir)
        client = dynamodb_local_client(s.dynamodb_endpoint)
        waited = wait_until_ready(
            "DynamoDB Local",
            self.process,
            lambda: _dynamodb_answers(client),
            DYNAMODB_READY_TIMEOUT_S,
        )
        log.info("%-17s ready in %.1fs", "dynamodb", waited)

    def status(self) -> list[ComponentStatus]:
        runtime, endpoint = DYNAMODB_LOCAL, self.settings.dynamodb_endpoint
        return [self.process.status(f"{runtime.title} {runtime.version}, endpoint {endpoint}")]


def dynamodb_local_client(endpoint: str) -> object:
    """A boto3 client for DynamoDB Local, which accepts any credentials.

    The fixed dummy keys are not secrets: they only ever reach the local emulator."""
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=BotoConfig(connect_timeout=1, read_timeout=2, retries={"max_attempts": 0}),
    )


def _dynamodb_answers(client: object) -> bool:
    try:
        client.list_tables(Limit=1)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - any failure means "not yet"
        return False
    return True
