"""Settings of one local stack: where each server listens and where it keeps its files.

They come from experiments.yaml (with its ${DIANA_*} overrides) and a few DIANA_* variables
of their own; only loopback addresses are accepted, since the stack starts what they name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from diana_pipeline.config import load_config
from diana_pipeline.local_stack.errors import StackError
from diana_pipeline.local_stack.processes import ManagedProcess

LOOPBACK = "127.0.0.1"


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
    postgres_port: int = 5432  # the scale profile's PostgreSQL (docs/scale.md)
    profile: str = "default"  # or "scale": PostgreSQL, and Dagster's storage in it
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
            postgres_port=_port_from_env(env, "DIANA_POSTGRES_PORT", 5432),
            profile=_profile(env.get("DIANA_STACK_PROFILE") or "default"),
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

    def process(self, name: str) -> ManagedProcess:
        """The server `name` of this stack folder: its pid file and its log."""
        return ManagedProcess(name, self.home / "pids", self.logs_dir / f"{name}.log")


def _profile(name: str) -> str:
    if name not in ("default", "scale"):
        raise StackError(f"DIANA_STACK_PROFILE must be default or scale, got {name!r}")
    return name


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
