"""`diana-stack up | down | status`: Kafka, DynamoDB Local and Dagster as local processes.

Everything the stack writes lives under one folder (``$DIANA_HOME``, default ``.diana``):
``logs/`` (one log per server), ``pids/``, ``kafka/`` (config and data), ``dynamodb/``
(tables) and ``dagster_home/`` (the Dagster instance, using the project's dagster.yaml).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import boto3
from botocore.config import Config as BotoConfig
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from diana_pipeline.config import load_config
from diana_pipeline.local_stack.errors import StackError
from diana_pipeline.local_stack.jars import (
    DYNAMODB_LOCAL,
    KAFKA,
    classpath,
    ensure_jars,
    find_java,
    jar_cache_root,
)
from diana_pipeline.local_stack.processes import (
    ManagedProcess,
    listening_addresses,
    port_is_free,
    port_owner,
    tail,
    wait_until_ready,
)

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
KAFKA_READY_TIMEOUT_S = 90.0
DYNAMODB_READY_TIMEOUT_S = 60.0
DAGSTER_READY_TIMEOUT_S = 180.0

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

_WORKSPACE_QUERY = """{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
  instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } }
}"""


@dataclass(frozen=True)
class StackSettings:
    """Where each server of the stack listens and keeps its files."""

    project_dir: Path
    config_file: Path
    home: Path
    kafka_port: int
    kafka_controller_port: int
    topic: str
    topic_partitions: int
    dynamodb_port: int
    dagster_port: int
    kafka_heap: str = "512m"
    dynamodb_heap: str = "256m"
    dynamodb_in_memory: bool = False
    env: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_environment(
        cls,
        project_dir: Path | None = None,
        config_file: Path | None = None,
        environ: dict[str, str] | None = None,
    ) -> StackSettings:
        """Ports and names from experiments.yaml (with its ${DIANA_*} overrides) and env vars."""
        env = dict(os.environ if environ is None else environ)
        project = (project_dir or Path.cwd()).resolve()
        config_path = (
            config_file or Path(env.get("DIANA_CONFIG") or project / "experiments.yaml")
        ).resolve()
        config = load_config(config_path, env=env)
        kafka_port = _local_address(
            config.infrastructure.kafka.bootstrap_servers.split(",")[0],
            "infrastructure.kafka.bootstrap_servers",
        )
        endpoint = config.infrastructure.dynamodb.endpoint_url
        if endpoint is None:
            raise StackError(
                f"{config_path}: infrastructure.dynamodb.endpoint_url is empty (real AWS); "
                "the local stack needs a local endpoint such as http://127.0.0.1:8000"
            )
        parsed = urlparse(endpoint)
        dynamodb_port = _local_address(
            f"{parsed.hostname}:{parsed.port or 80}", "infrastructure.dynamodb.endpoint_url"
        )
        return cls(
            project_dir=project,
            config_file=config_path,
            home=Path(env.get("DIANA_HOME") or project / ".diana").resolve(),
            kafka_port=kafka_port,
            kafka_controller_port=_port_from_env(
                env, "DIANA_KAFKA_CONTROLLER_PORT", kafka_port + 1
            ),
            topic=config.infrastructure.kafka.topic,
            topic_partitions=config.infrastructure.kafka.topic_partitions,
            dynamodb_port=dynamodb_port,
            dagster_port=_port_from_env(env, "DIANA_DAGSTER_PORT", 3000),
            kafka_heap=env.get("DIANA_KAFKA_HEAP") or "512m",
            dynamodb_heap=env.get("DIANA_DYNAMODB_HEAP") or "256m",
            dynamodb_in_memory=env.get("DIANA_DYNAMODB_IN_MEMORY", "") in ("1", "true", "yes"),
            env=env,
        )

    @property
    def bootstrap_servers(self) -> str:
        return f"{LOOPBACK}:{self.kafka_port}"

    @property
    def dynamodb_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.dynamodb_port}"

    @property
    def dagster_url(self) -> str:
        return f"http://{LOOPBACK}:{self.dagster_port}"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster_home"


def _port_from_env(env: dict[str, str], name: str, default: int) -> int:
    text = env.get(name) or str(default)
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise StackError(f"{name} must be a TCP port number (1-65535), got {text!r}")
    return int(text)


def _local_address(host_port: str, field_name: str) -> int:
    """The port of a loopback host:port; anything else is not ours to start."""
    host, _, port = host_port.strip().rpartition(":")
    if host not in (LOOPBACK, "localhost"):
        raise StackError(
            f"{field_name} points at {host_port!r}; "
            f"the local stack runs servers on {LOOPBACK} only. "
            "Unset the DIANA_* override or use a 127.0.0.1 address."
        )
    return int(port)


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    running: bool
    pid: int | None
    listening: list[str]
    detail: str
    log_path: Path


class LocalStack:
    """The servers of one stack folder; every method is safe to call in any state."""

    COMPONENTS = ("kafka", "dynamodb", "dagster-webserver", "dagster-daemon")

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.processes = {
            name: ManagedProcess(name, settings.home / "pids", settings.logs_dir / f"{name}.log")
            for name in self.COMPONENTS
        }

    # ---- up ---------------------------------------------------------------------------------

    def up(
        self, with_dagster: bool = False, with_dynamodb: bool = True, with_kafka: bool = True
    ) -> None:
        s = self.settings
        s.home.mkdir(parents=True, exist_ok=True)
        log.info("stack folder: %s (logs in %s)", s.home, s.logs_dir)
        if with_kafka:
            self._start_kafka()
            self._ensure_topic()
        if with_dynamodb:
            self._start_dynamodb()
        if with_dagster:
            self._start_dagster()

    def _check_ports(self, component: str, ports: list[int]) -> None:
        for port in ports:
            if not port_is_free(LOOPBACK, port):
                owner = port_owner(port)
                raise StackError(
                    f"cannot start {component}: port {port} on {LOOPBACK} is already taken"
                    + (f" by {owner}" if owner else "")
                    + ". Stop that process, or choose other ports (see README, 'Ports')."
                )

    def _already_running(self, name: str, where: str) -> bool:
        process = self.processes[name].running()
        if process is not None:
            log.info("%-17s already running (pid %d) on %s", name, process.pid, where)
        return process is not None

    def _start_kafka(self) -> None:
        s = self.settings
        if self._already_running("kafka", s.bootstrap_servers):
            return
        java = find_java()
        self._check_ports("Kafka", [s.kafka_port, s.kafka_controller_port])
        jars = ensure_jars(KAFKA, jar_cache_root(), s.logs_dir)
        kafka_dir = s.home / "kafka"
        data_dir = kafka_dir / "data"
        kafka_dir.mkdir(parents=True, exist_ok=True)
        properties = kafka_dir / "server.properties"
        properties.write_text(self._kafka_properties(data_dir))
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
            formatted = _run_logged(
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
                self.processes["kafka"].log_path,
            )
            if not formatted:
                kafka_log = self.processes["kafka"].log_path
                raise StackError(
                    f"formatting Kafka storage failed; log: {kafka_log}\n{tail(kafka_log)}"
                )
        log.info(
            "%-17s starting %s %s on %s", "kafka", KAFKA.title, KAFKA.version, s.bootstrap_servers
        )
        self.processes["kafka"].start([*jvm, "kafka.Kafka", str(properties)], s.env, kafka_dir)
        admin = _admin_client(s.bootstrap_servers)
        waited = wait_until_ready(
            "Kafka", self.processes["kafka"], lambda: _kafka_answers(admin), KAFKA_READY_TIMEOUT_S
        )
        log.info("%-17s ready in %.1fs", "kafka", waited)

    def _kafka_properties(self, data_dir: Path) -> str:
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

    def _ensure_topic(self) -> None:
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

    def _start_dynamodb(self) -> None:
        s = self.settings
        if self._already_running("dynamodb", s.dynamodb_endpoint):
            return
        java = find_java()
        self._check_ports("DynamoDB Local", [s.dynamodb_port])
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
        self.processes["dynamodb"].start(argv, s.env, db_dir)
        client = dynamodb_local_client(s.dynamodb_endpoint)
        waited = wait_until_ready(
            "DynamoDB Local",
            self.processes["dynamodb"],
            lambda: _dynamodb_answers(client),
            DYNAMODB_READY_TIMEOUT_S,
        )
        log.info("%-17s ready in %.1fs", "dynamodb", waited)

    def _start_dagster(self) -> None:
        s = self.settings
        workspace = s.project_dir / "workspace.yaml"
        instance_yaml = s.project_dir / "dagster.yaml"
        for needed in (workspace, instance_yaml):
            if not needed.exists():
                raise StackError(f"{needed} is missing: run diana-stack from the project folder")
        s.dagster_home.mkdir(parents=True, exist_ok=True)
        link = s.dagster_home / "dagster.yaml"
        if link.is_symlink() or link.exists():
            link.unlink()
        # A link, not a copy: the instance always runs with the project's dagster.yaml.
        link.symlink_to(instance_yaml)
        env = {
            **s.env,
            "DAGSTER_HOME": str(s.dagster_home),
            "DIANA_CONFIG": str(s.config_file),
            "DIANA_HOME": str(s.home),
            "PYTHONUNBUFFERED": "1",
        }
        bin_dir = Path(sys.executable).parent
        webserver_up = self.processes["dagster-webserver"].running() is not None
        daemon_up = self.processes["dagster-daemon"].running() is not None
        if not (webserver_up and daemon_up):
            self._prepare_dagster_storage(_script(bin_dir, "dagster"), env)
        started = False
        if not self._already_running("dagster-webserver", s.dagster_url):
            self._check_ports("the Dagster webserver", [s.dagster_port])
            log.info("%-17s starting on %s", "dagster-webserver", s.dagster_url)
            self.processes["dagster-webserver"].start(
                [
                    _script(bin_dir, "dagster-webserver"),
                    "-h",
                    LOOPBACK,
                    "-p",
                    str(s.dagster_port),
                    "-w",
                    str(workspace),
                ],
                env,
                s.project_dir,
            )
            started = True
        if not self._already_running("dagster-daemon", "(no port)"):
            log.info("%-17s starting", "dagster-daemon")
            self.processes["dagster-daemon"].start(
                [_script(bin_dir, "dagster-daemon"), "run", "-w", str(workspace)],
                env,
                s.project_dir,
            )
            started = True
        if started:
            waited = wait_until_ready(
                "the Dagster webserver",
                self.processes["dagster-webserver"],
                lambda: self._dagster_ready(),
                DAGSTER_READY_TIMEOUT_S,
                interval_s=1.0,
            )
            log.info("%-17s code location loaded and daemon healthy in %.1fs", "dagster", waited)

    def _prepare_dagster_storage(self, dagster: str, env: dict[str, str]) -> None:
        # On a new DAGSTER_HOME the webserver and the daemon would both create the SQLite
        # schema at once and race on Alembic's version table ("more than one head").
        # Creating it first, alone, avoids that; it also migrates after a Dagster upgrade.
        log_path = self.settings.logs_dir / "dagster-instance.log"
        if not _run_logged([dagster, "instance", "migrate"], log_path, env=env):
            raise StackError(
                f"preparing the Dagster instance storage failed; log: {log_path}\n{tail(log_path)}"
            )

    def _dagster_ready(self) -> bool:
        if self.processes["dagster-daemon"].running() is None:
            path = self.processes["dagster-daemon"].log_path
            raise StackError(f"the Dagster daemon exited during start-up; log: {path}")
        try:
            state = dagster_workspace_state(self.settings.dagster_url)
        except (OSError, ValueError):
            return False
        for location in state["locations"]:
            if location["error"]:
                raise StackError(
                    f"Dagster could not load the code location {location['name']}:\n"
                    f"{location['error']}"
                )
        loaded = bool(state["locations"]) and all(loc["loaded"] for loc in state["locations"])
        return loaded and state["daemons_healthy"]

    # ---- down -------------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Stop every server of this folder (Dagster first, Kafka last). Returns what stopped."""
        stopped = []
        for name in reversed(self.COMPONENTS):
            if self.processes[name].stop():
                log.info("%-17s stopped", name)
                stopped.append(name)
        if not stopped:
            log.info("nothing was running under %s", self.settings.home)
        return stopped

    # ---- status -----------------------------------------------------------------------------

    def status(self) -> list[ComponentStatus]:
        s = self.settings
        kafka, dynamodb = KAFKA, DYNAMODB_LOCAL
        details = {
            "kafka": f"{kafka.title} {kafka.version}, bootstrap {s.bootstrap_servers}, "
            f"topic {s.topic}",
            "dynamodb": f"{dynamodb.title} {dynamodb.version}, endpoint {s.dynamodb_endpoint}",
            "dagster-webserver": f"UI {s.dagster_url}",
            "dagster-daemon": f"DAGSTER_HOME {s.dagster_home}",
        }
        statuses = []
        for name in self.COMPONENTS:
            process = self.processes[name].running()
            statuses.append(
                ComponentStatus(
                    name=name,
                    running=process is not None,
                    pid=process.pid if process else None,
                    listening=listening_addresses(process) if process else [],
                    detail=details[name],
                    log_path=self.processes[name].log_path,
                )
            )
        return statuses


def _kafka_cluster_id() -> str:
    # Kafka's cluster id: 16 random bytes, URL-safe base64 without padding, not starting with '-'.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _run_logged(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> bool:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        result = subprocess.run(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            check=False,
        )
    return result.returncode == 0


def _script(bin_dir: Path, name: str) -> str:
    beside = bin_dir / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise StackError(f"{name} is not installed in this environment (pip install -e .)")
    return found


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


def dagster_workspace_state(url: str) -> dict[str, object]:
    """Code locations and daemon health, from the webserver's GraphQL API."""
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": _WORKSPACE_QUERY}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        data = json.load(response)["data"]
    entries = data["workspaceOrError"].get("locationEntries", [])
    daemons = data["instance"]["daemonHealth"]["allDaemonStatuses"]
    return {
        "locations": [
            {
                "name": entry["name"],
                "loaded": entry["loadStatus"] == "LOADED"
                and entry["locationOrLoadError"]["__typename"] == "RepositoryLocation",
                "error": (entry["locationOrLoadError"] or {}).get("message"),
            }
            for entry in entries
        ],
        "daemons_healthy": all(d["healthy"] for d in daemons if d["required"]),
        "daemons": {d["daemonType"]: d["healthy"] for d in daemons},
    }
