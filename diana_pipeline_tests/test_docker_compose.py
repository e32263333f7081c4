"""docker-compose.yml cannot run here (no Docker engine), so check that it agrees with
experiments.yaml, dagster.yaml, workspace.yaml and the local stack's versions."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from diana_pipeline.config import load_config
from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.local_stack.jars import DYNAMODB_LOCAL, KAFKA
from diana_pipeline.local_stack.settings import StackSettings

# The daemon is `ab-engine`, the name users of the original Diana know (`docker compose logs
# -f ab-engine`).
DAGSTER_SERVICES = ("dagster-webserver", "ab-engine")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def published(service: dict[str, Any]) -> dict[int, tuple[str, int]]:
    """container port -> (host address, host port)."""
    ports = {}
    for mapping in service.get("ports", []):
        host, host_port, container_port = str(mapping).split(":")
        ports[int(container_port)] = (host, int(host_port))
    return ports


def container_environment(service: dict[str, Any]) -> dict[str, str]:
    """The environment a container sees, as compose resolves ${VAR:-default} on a host
    that sets none of the variables."""
    return {
        key: re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", str(value))
        for key, value in service["environment"].items()
    }


def test_every_published_port_is_on_loopback(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for host, _ in published(service).values():
            assert host == "127.0.0.1", f"{name} publishes on {host}"


def test_host_ports_match_the_local_stack_defaults(services: dict[str, Any]) -> None:
    config = load_config(REPO_ROOT / "experiments.yaml", env={})
    kafka_port = int(config.infrastructure.kafka.bootstrap_servers.rsplit(":", 1)[1])
    assert published(services["kafka"])[kafka_port] == ("127.0.0.1", kafka_port)
    dynamodb_port = urlparse(config.infrastructure.dynamodb.endpoint_url).port
    assert published(services["dynamodb"])[dynamodb_port] == ("127.0.0.1", dynamodb_port)
    # The host listener advertises the address that experiments.yaml uses by default.
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert f"127.0.0.1:{kafka_port}" in advertised
    assert published(services["dagster-webserver"])[3000] == ("127.0.0.1", 3000)


def test_images_match_the_local_stack_versions(services: dict[str, Any]) -> None:
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA.version}"
    assert services["kafka-init"]["image"] == f"apache/kafka:{KAFKA.version}"
    assert services["dynamodb"]["image"] == f"amazon/dynamodb-local:{DYNAMODB_LOCAL.version}"


def test_experiments_file_resolves_to_compose_services(services: dict[str, Any]) -> None:
    for name in DAGSTER_SERVICES:
        env = container_environment(services[name])
        config = load_config(REPO_ROOT / "experiments.yaml", env=env)
        host, port = config.infrastructure.kafka.bootstrap_servers.rsplit(":", 1)
        assert host in services, f"{name}: Kafka host {host} is not a compose service"
        kafka_listeners = services[host]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
        assert f"//{host}:{port}" in kafka_listeners
        endpoint = urlparse(config.infrastructure.dynamodb.endpoint_url)
        assert endpoint.hostname in services
        assert str(endpoint.port) in services[endpoint.hostname]["command"]
        # Data lives on the shared volume.
        assert str(config.infrastructure.duckdb.path).startswith("/opt/diana/data/")


def test_topic_matches_experiments(services: dict[str, Any]) -> None:
    kafka = load_config(REPO_ROOT / "experiments.yaml", env={}).infrastructure.kafka
    command = services["kafka-init"]["command"]
    assert command[command.index("--topic") + 1] == kafka.topic
    assert int(command[command.index("--partitions") + 1]) == kafka.topic_partitions
    assert int(services["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"]) == kafka.topic_partitions


def test_dagster_services_share_one_instance(services: dict[str, Any]) -> None:
    homes = {services[name]["environment"]["DAGSTER_HOME"] for name in DAGSTER_SERVICES}
    assert len(homes) == 1
    [home] = homes
    for name in DAGSTER_SERVICES:
        volumes = services[name]["volumes"]
        assert any(v.endswith(f":{home}") and not v.startswith(".") for v in volumes), (
            f"{name} keeps DAGSTER_HOME on a shared volume"
        )
        # The instance file is the project's (plus PostgreSQL storage in the scale profile),
        # written by the entrypoint from the files mounted where it reads them.
        assert "./dagster.yaml:/opt/diana/dagster.yaml:ro" in volumes
        assert "./deploy:/opt/diana/deploy:ro" in volumes
        script = (REPO_ROOT / "deploy" / "dagster-instance.sh").read_text()
        assert services[name]["entrypoint"] == ["/opt/diana/deploy/dagster-instance.sh"]
        assert 'cat /opt/diana/dagster.yaml > "$DAGSTER_HOME/dagster.yaml"' in script
        assert "/opt/diana/deploy/dagster-postgres-storage.yaml" in script
        assert services[name]["command"][-2:] == ["-w", "workspace.yaml"]
        assert services[name]["environment"]["DIANA_CONFIG"] == "/opt/diana/experiments.yaml"


def test_the_original_engine_is_the_daemon(services: dict[str, Any]) -> None:
    assert services["ab-engine"]["command"][:2] == ["dagster-daemon", "run"]
    assert not any("dagster-daemon" in " ".join(s["command"]) for n, s in services.items()
                   if n != "ab-engine" and "command" in s)  # fmt: skip


def test_no_credentials_are_written_into_compose() -> None:
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert re.search(rf"{key}: \$\{{{key}:-\}}", text), f"{key} must come from the environment"


def test_dockerfile_ships_what_compose_expects() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11" in dockerfile
    assert "experiments.yaml workspace.yaml" in dockerfile
    assert "DIANA_CONFIG=/opt/diana/experiments.yaml" in dockerfile


def test_the_scale_profile_adds_postgres_on_loopback_as_the_local_stack_does(
    services: dict[str, Any],
) -> None:
    """The official image, in the scale profile only, on the local stack's default port, its
    password required from the environment (none written here)."""
    postgres = services["postgres"]
    assert postgres["profiles"] == ["scale"]
    assert postgres["image"].startswith("postgres:15")
    default_port = StackSettings.__dataclass_fields__["postgres_port"].default
    assert published(postgres)[default_port] == ("127.0.0.1", 5432) and default_port == 5432
    assert postgres["environment"]["POSTGRES_PASSWORD"].startswith("${DIANA_POSTGRES_PASSWORD:?")
    assert all("profiles" not in s for n, s in services.items() if n != "postgres")


def test_the_scale_profile_runs_dagster_and_the_store_on_postgres(services: dict[str, Any]) -> None:
    """With DIANA_STACK_PROFILE=scale and DIANA_EVENT_STORE=ducklake, the Dagster services
    resolve experiments.yaml to the DuckLake store on the compose PostgreSQL, whose init
    script creates the catalog's database."""
    postgres = services["postgres"]
    scale = {"DIANA_STACK_PROFILE": "scale", "DIANA_EVENT_STORE": "ducklake"}
    for name in DAGSTER_SERVICES:
        env = {**container_environment(services[name]), **scale}
        infrastructure = load_config(REPO_ROOT / "experiments.yaml", env=env).infrastructure
        location = infrastructure.store_location
        assert f"host={env['DIANA_POSTGRES_HOST']} port=5432" in location.catalog
        assert env["DIANA_POSTGRES_HOST"] in services
        assert location.data_path.startswith("/opt/diana/data/")
        dependency = services[name]["depends_on"]["postgres"]
        assert dependency == {"condition": "service_healthy", "required": False}
        assert services[name]["environment"]["DIANA_POSTGRES_PASSWORD"] == (
            "${DIANA_POSTGRES_PASSWORD:-}"
        )
    database = re.search(r"dbname=(\w+)", location.catalog).group(1)
    init = "./deploy/postgres-init.sql:/docker-entrypoint-initdb.d/diana.sql:ro"
    assert init in postgres["volumes"]
    assert (
        f"CREATE DATABASE {database};" in (REPO_ROOT / "deploy" / "postgres-init.sql").read_text()
    )
