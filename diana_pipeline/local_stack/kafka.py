"""Kafka of the local stack: one KRaft node (broker and controller) from Maven-resolved jars,
its storage formatted once, and the events topic created on it."""

from __future__ import annotations

import base64
import logging
import uuid
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from diana_pipeline.local_stack.errors import StackError
from diana_pipeline.local_stack.jars import KAFKA, classpath, ensure_jars, find_java, jar_cache_root
from diana_pipeline.local_stack.processes import (
    ComponentStatus,
    ensure_ports_free,
    run_to_completion,
    wait_until_ready,
)
from diana_pipeline.local_stack.settings import LOOPBACK, StackSettings

log = logging.getLogger(__name__)

KAFKA_READY_TIMEOUT_S = 90.0

_KAFKA_LOG4J2 = """\
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.state-change.name = state.change.logger
logger.state-change.level = WARN
"""


class Kafka:
    """The Kafka server of one stack folder, and the topic the pipeline reads."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.process = settings.process("kafka")
        self.processes = (self.process,)

    def up(self) -> None:
        self.start()
        self.ensure_topic()

    def start(self) -> None:
        s = self.settings
        if self.process.already_running(s.bootstrap_servers):
            return
        java = find_java()
        ensure_ports_free("Kafka", LOOPBACK, [s.kafka_port, s.kafka_controller_port])
        jars = ensure_jars(KAFKA, jar_cache_root(), s.logs_dir)
        kafka_dir = s.home / "kafka"
        data_dir = kafka_dir / "data"
        kafka_dir.mkdir(parents=True, exist_ok=True)
        properties = kafka_dir / "server.properties"
        properties.write_text(self._properties(data_dir))
        log4j = kafka_dir / "log4j2.properties"
        log4j.write_text(_KAFKA_LOG4J2)
        jvm = [
            java,
            f"-Xmx{s.kafka_heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            classpath(jars),
        ]
        if not (data_dir / "meta.properties").exists():
            # KRaft storage is formatted once, with a fresh cluster id.
            run_to_completion(
                "formatting Kafka storage",
                [
                    *jvm,
                    "kafka.tools.StorageTool",
                    "format",
                    "--ignore-formatted",
                    "--cluster-id",
                    _kafka_cluster_id(),
                    "--config",
                    str(properties),
                ],
                self.process.log_path,
            )
        log.info(
            "%-17s starting %s %s on %s", "kafka", KAFKA.title, KAFKA.version, s.bootstrap_servers
        )
        self.process.start([*jvm, "kafka.Kafka", str(properties)], s.env, kafka_dir)
        admin = _admin_client(s.bootstrap_servers)
        waited = wait_until_ready(
            "Kafka", self.process, lambda: _kafka_answers(admin), KAFKA_READY_TIMEOUT_S
        )
        log.info("%-17s ready in %.1fs", "kafka", waited)

    def _properties(self, data_dir: Path) -> str:
        """server.properties of a single node that is broker and controller at once."""
        s = self.settings
        controller = f"{LOOPBACK}:{s.kafka_controller_port}"
        lines = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{controller}",
            "listeners": f"PLAINTEXT://{s.bootstrap_servers},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{s.bootstrap_servers}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(data_dir),
            "num.partitions": str(s.topic_partitions),
            # One node: every internal topic has one replica.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Events are the source of truth for rebuilding windows: keep them a week.
            "log.retention.hours": "168",
            "auto.create.topics.enable": "false",
        }
        return "".join(f"{key}={value}\n" for key, value in lines.items())

    def ensure_topic(self) -> None:
        s = self.settings
        admin = _admin_client(s.bootstrap_servers)
        futures = admin.create_topics(
            [NewTopic(s.topic, num_partitions=s.topic_partitions, replication_factor=1)],
            operation_timeout=30,
        )
        try:
            futures[s.topic].result(timeout=30)
            log.info(
                "%-17s topic %s created with %d partitions", "kafka", s.topic, s.topic_partitions
            )
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise StackError(f"could not create topic {s.topic}: {exc.args[0].str()}") from None
            partitions = len(
                admin.list_topics(topic=s.topic, timeout=10).topics[s.topic].partitions
            )
            log.info("%-17s topic %s exists with %d partitions", "kafka", s.topic, partitions)

    def status(self) -> list[ComponentStatus]:
        s = self.settings
        detail = f"{KAFKA.title} {KAFKA.version}, bootstrap {s.bootstrap_servers}, topic {s.topic}"
        return [self.process.status(detail)]


def _kafka_cluster_id() -> str:
    # Kafka's cluster id: 16 random bytes, URL-safe base64 without padding, not starting with '-'.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _admin_client(bootstrap_servers: str) -> AdminClient:
    # librdkafka logs every refused connection while the broker starts; keep that out of the
    # user's terminal (it reaches Python logging at DEBUG).
    return AdminClient(
        {"bootstrap.servers": bootstrap_servers, "socket.connection.setup.timeout.ms": 2000},
        logger=logging.getLogger("diana.local_stack.librdkafka"),
    )


def _kafka_answers(admin: AdminClient) -> bool:
    try:
        return bool(admin.list_topics(timeout=1).brokers)
    except KafkaException:
        return False
