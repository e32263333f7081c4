"""diana-stack against the real servers it starts: Kafka (KRaft), DynamoDB Local, Dagster.

Each run uses its own stack folder and free ports, so it never touches a stack the
developer has running. The module's tests run in order on one stack: up, use it, down.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import closing
from decimal import Decimal
from pathlib import Path

import psutil
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.harness.stack import free_port, private_stack_environment
from diana_pipeline.local_stack import dagster_workspace_state, dynamodb_local_client
from diana_pipeline_tests.conftest import run_command

pytestmark = pytest.mark.servers


def run_stack(
    env: dict[str, str], *args: str, timeout: float = 420
) -> subprocess.CompletedProcess[str]:
    return run_command("diana-stack", *args, env=env, timeout=timeout)


def stack_environment(home: Path) -> dict[str, str]:
    """A private stack: its own folder and ports; config overrides through experiments.yaml."""
    return private_stack_environment(home, free_port)


def ports_of(env: dict[str, str]) -> dict[str, int]:
    return {
        "kafka": int(env["DIANA_KAFKA_BOOTSTRAP_SERVERS"].rsplit(":", 1)[1]),
        "controller": int(env["DIANA_KAFKA_CONTROLLER_PORT"]),
        "dynamodb": int(env["DIANA_DYNAMODB_ENDPOINT"].rsplit(":", 1)[1]),
        "dagster": int(env["DIANA_DAGSTER_PORT"]),
    }


def stack_pids(home: Path) -> list[int]:
    """Pids of the stack's servers and all their descendants."""
    pids = []
    for pid_file in (home / "pids").glob("*.pid"):
        process = psutil.Process(int(pid_file.read_text().split()[0]))
        pids += [process.pid, *(child.pid for child in process.children(recursive=True))]
    return pids


def accepts_connections(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    env = stack_environment(tmp_path_factory.mktemp("stack"))
    result = run_stack(env, "up", "--dagster")
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        yield env
    finally:
        run_stack(env, "down")


def test_up_reports_every_server_ready(stack: dict[str, str]) -> None:
    log = (Path(stack["DIANA_HOME"]) / "logs").iterdir()
    assert {p.name for p in log} >= {
        "kafka.log",
        "dynamodb.log",
        "dagster-webserver.log",
        "dagster-daemon.log",
    }


def test_status_shows_servers_on_loopback(stack: dict[str, str]) -> None:
    result = run_stack(stack, "status")
    assert result.returncode == 0, result.stderr
    ports = ports_of(stack)
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if "running" in line}
    assert set(lines) == {"kafka", "dynamodb", "dagster-webserver", "dagster-daemon"}
    assert f"127.0.0.1:{ports['kafka']}" in lines["kafka"]
    assert f"127.0.0.1:{ports['controller']}" in lines["kafka"]
    assert f"127.0.0.1:{ports['dagster']}" in lines["dagster-webserver"]
    # DynamoDB Local has no bind option; status says so rather than pretending.
    assert f"*:{ports['dynamodb']}" in lines["dynamodb"]
    assert "no bind option" in result.stdout


def test_kafka_round_trip_on_the_events_topic(stack: dict[str, str]) -> None:
    servers = stack["DIANA_KAFKA_BOOTSTRAP_SERVERS"]
    topic = AdminClient({"bootstrap.servers": servers}).list_topics("web-events", timeout=10)
    assert len(topic.topics["web-events"].partitions) == 3

    run = uuid.uuid4().hex
    sent = {f"{run}-{i}".encode() for i in range(30)}
    producer = Producer({"bootstrap.servers": servers, "enable.idempotence": True})
    for value in sent:
        producer.produce("web-events", key=value[-2:], value=value)
    assert producer.flush(30) == 0

    consumer = Consumer(
        {"bootstrap.servers": servers, "group.id": f"test-{run}", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition("web-events", p, 0) for p in range(3)])
    received: set[bytes] = set()
    try:
        for _ in range(60):
            for message in consumer.consume(num_messages=100, timeout=0.5):
                assert message.error() is None
                received.add(message.value())
            if received >= sent:
                break
    finally:
        consumer.close()
    assert received == sent


def test_dynamodb_table_put_and_get(stack: dict[str, str]) -> None:
    client = dynamodb_local_client(stack["DIANA_DYNAMODB_ENDPOINT"])
    client.create_table(
        TableName="stack_check",
        KeySchema=[
            {"AttributeName": "test_id", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "test_id", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    client.put_item(
        TableName="stack_check",
        Item={"test_id": {"S": "t"}, "sk": {"S": "control#1"}, "alpha": {"N": "12.125"}},
    )
    item = client.get_item(
        TableName="stack_check", Key={"test_id": {"S": "t"}, "sk": {"S": "control#1"}}
    )
    assert Decimal(item["Item"]["alpha"]["N"]) == Decimal("12.125")
    assert "stack_check" in client.list_tables()["TableNames"]


def test_dagster_loaded_the_code_location(stack: dict[str, str]) -> None:
    state = dagster_workspace_state(f"http://127.0.0.1:{stack['DIANA_DAGSTER_PORT']}")
    assert state["locations"] == [{"name": "diana_pipeline", "loaded": True, "error": None}]
    assert state["daemons_healthy"], state["daemons"]
    dagster_home = Path(stack["DIANA_HOME"]) / "dagster_home"
    assert (dagster_home / "dagster.yaml").resolve() == REPO_ROOT / "dagster.yaml"


def test_dagster_storage_has_one_schema_head(stack: dict[str, str]) -> None:
    # Webserver and daemon starting together on a new DAGSTER_HOME used to both create the
    # SQLite schema, leaving two Alembic heads and a code location that fails to load.
    dagster_home = Path(stack["DIANA_HOME"]) / "dagster_home"
    databases = [*dagster_home.glob("history/*.db"), *dagster_home.glob("schedules/*.db")]
    assert len(databases) >= 2
    for database in databases:
        with closing(sqlite3.connect(database)) as connection:
            heads = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        assert len(heads) == 1, f"{database}: {heads}"


def test_up_twice_is_harmless(stack: dict[str, str]) -> None:
    before = sorted((Path(stack["DIANA_HOME"]) / "pids").glob("*.pid"))
    contents = [p.read_text() for p in before]
    result = run_stack(stack, "up", "--dagster")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("already running") == 4
    assert [p.read_text() for p in before] == contents


def test_down_stops_everything_and_frees_the_ports(stack: dict[str, str]) -> None:
    home = Path(stack["DIANA_HOME"])
    pids = stack_pids(home)
    assert len(pids) >= 4
    result = run_stack(stack, "down")
    assert result.returncode == 0, result.stderr
    alive = [
        pid
        for pid in pids
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == []
    assert not any(accepts_connections(port) for port in ports_of(stack).values())
    status = run_stack(stack, "status")
    assert status.returncode == 3
    assert "running" not in status.stdout
    assert list((home / "pids").glob("*.pid")) == []


# ---- clear errors, no servers needed ------------------------------------------------------


def test_port_taken_is_a_clear_error(tmp_path: Path) -> None:
    env = stack_environment(tmp_path / "home")
    port = ports_of(env)["kafka"]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = run_stack(env, "up")
    assert result.returncode == 1
    assert f"cannot start Kafka: port {port} on 127.0.0.1 is already taken" in result.stderr
    assert f"pid {os.getpid()}" in result.stderr  # names who holds it


def test_missing_java_is_a_clear_error(tmp_path: Path) -> None:
    env = stack_environment(tmp_path / "home")
    env["PATH"] = str(tmp_path / "empty-bin")
    env.pop("JAVA_HOME", None)
    result = run_stack(env, "up")
    assert result.returncode == 1
    assert "Java 17 or newer is needed" in result.stderr


def test_server_that_does_not_come_up_shows_its_log(tmp_path: Path) -> None:
    from diana_pipeline.local_stack.jars import KAFKA

    env = stack_environment(tmp_path / "home")
    env["DIANA_JAR_CACHE"] = str(tmp_path / "jars")
    broken = KAFKA.cache_dir(tmp_path / "jars")
    (broken / "lib").mkdir(parents=True)
    (broken / ".complete").touch()  # a cache that claims to be complete but has no jars
    result = run_stack(env, "up")
    assert result.returncode == 1
    assert "formatting Kafka storage failed" in result.stderr
    assert "kafka.tools.StorageTool" in result.stderr  # the tail of the log: class not found


def test_remote_address_is_not_started_locally(tmp_path: Path) -> None:
    env = stack_environment(tmp_path / "home")
    env["DIANA_KAFKA_BOOTSTRAP_SERVERS"] = "kafka:19092"
    result = run_stack(env, "up")
    assert result.returncode == 1
    assert "infrastructure.kafka.bootstrap_servers points at 'kafka:19092'" in result.stderr


def test_bad_port_variable_is_named(tmp_path: Path) -> None:
    env = stack_environment(tmp_path / "home")
    env["DIANA_DAGSTER_PORT"] = "three thousand"
    result = run_stack(env, "status")
    assert result.returncode == 1
    assert "DIANA_DAGSTER_PORT must be a TCP port number (1-65535), got 'three thousand'" in (
        result.stderr
    )
