"""deploy/helm/values.yaml cannot be rendered here (no helm, no cluster), so check that it
agrees with the project: the code location of pyproject.toml, the image docker-compose.yml
builds, the variables experiments.yaml and deploy/dagster-postgres-storage.yaml read, the run
queue, pools and run monitoring of dagster.yaml, the database of the storage file; that it
writes no password and the UI is not exposed; that it uses only the chart's top-level keys."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
import yaml

from diana_pipeline.config import load_config
from diana_pipeline.harness.paths import REPO_ROOT

# The top-level keys of the chart dagster 1.13.27 (dagster-io/dagster, helm/dagster): those of
# its values.yaml, with `concurrency` (schema/charts/dagster/values.py) and `defsStateStorage`
# (templates/helpers/instance/_defs-state-storage.tpl), which newer charts added.
CHART_TOP_LEVEL_KEYS = {
    "global", "nameOverride", "fullnameOverride", "rbacEnabled", "imagePullSecrets",
    "dagsterWebserver", "computeLogManager", "pythonLogs", "dagster-user-deployments",
    "scheduler", "runLauncher", "postgresql", "generatePostgresqlPasswordSecret",
    "generateCeleryConfigSecret", "rabbitmq", "redis", "flower", "ingress", "dagsterDaemon",
    "busybox", "extraManifests", "migrate", "telemetry", "serviceAccount", "retention",
    "additionalInstanceConfig", "pipelineRun", "concurrency", "defsStateStorage",
}  # fmt: skip


def load(path: str) -> Any:
    return yaml.safe_load((REPO_ROOT / path).read_text())


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return load("deploy/helm/values.yaml")


@pytest.fixture(scope="module")
def deployment(values: dict[str, Any]) -> dict[str, Any]:
    [diana] = values["dagster-user-deployments"]["deployments"]
    return diana


@pytest.fixture(scope="module")
def code_env(deployment: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in deployment["env"]}


def launcher(values: dict[str, Any]) -> dict[str, Any]:
    return values["runLauncher"]["config"]["k8sRunLauncher"]


def test_the_code_location_is_the_projects_module(deployment: dict[str, Any]) -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    module = pyproject["tool"]["dagster"]["module_name"]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", module]


def test_the_image_is_the_one_compose_builds(deployment: dict[str, Any]) -> None:
    compose_image = load("docker-compose.yml")["x-diana-service"]["image"]
    assert deployment["image"]["repository"] == compose_image.rsplit(":", 1)[0]


def test_every_variable_is_one_the_project_reads(
    values: dict[str, Any], deployment: dict[str, Any], code_env: dict[str, str]
) -> None:
    experiments = (REPO_ROOT / "experiments.yaml").read_text()
    storage = (REPO_ROOT / "deploy/dagster-postgres-storage.yaml").read_text()
    read = set(re.findall(r"\$\{(DIANA_\w+)", experiments))
    read |= set(re.findall(r"env: (DIANA_\w+)", storage))
    run_env = dict(item.split("=", 1) for item in launcher(values)["envVars"])
    for name in [*code_env, *run_env]:
        if name.startswith("DIANA_"):
            assert name in read, f"{name} is read by neither file"
    # Run pods reach the same Kafka, PostgreSQL and lake as the code server.
    assert run_env == code_env
    assert launcher(values)["envSecrets"] == deployment["envSecrets"]


def test_the_code_location_uses_the_shared_store(
    values: dict[str, Any], deployment: dict[str, Any], code_env: dict[str, str]
) -> None:
    config = load_config(REPO_ROOT / "experiments.yaml", env=code_env).infrastructure
    assert config.event_store == "ducklake"
    assert config.ducklake.data_path.startswith("s3://"), "pods share no local folder"
    # The lake's catalog is on the instance's server; its password comes from a Secret.
    assert f"host={values['postgresql']['postgresqlHost']} " in config.ducklake.catalog
    assert f"port={values['postgresql']['service']['port']} " in config.ducklake.catalog
    assert "DIANA_POSTGRES_PASSWORD" not in code_env
    assert deployment["envSecrets"], "DIANA_POSTGRES_PASSWORD comes from a Secret"


def test_the_run_queue_and_pools_match_dagster_yaml(values: dict[str, Any]) -> None:
    instance = load("dagster.yaml")
    concurrency = values["concurrency"]
    assert concurrency["enabled"] is True
    runs = instance["concurrency"]["runs"]
    assert concurrency["runs"]["maxConcurrentRuns"] == runs["max_concurrent_runs"]
    pools = instance["concurrency"]["pools"]
    assert concurrency["pools"] == {
        "defaultLimit": pools["default_limit"],
        "granularity": pools["granularity"],
        "opGranularityRunBuffer": pools["op_granularity_run_buffer"],
    }
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["type"] == instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
    queue = coordinator["config"]["queuedRunCoordinator"]
    # Both the chart and Dagster refuse run limits in two places.
    assert "maxConcurrentRuns" not in queue and "tagConcurrencyLimits" not in queue
    dequeue = instance["run_coordinator"]["config"]["dequeue_interval_seconds"]
    assert queue["dequeueIntervalSeconds"] == dequeue


def test_run_monitoring_and_retries_match_dagster_yaml(values: dict[str, Any]) -> None:
    instance = load("dagster.yaml")

    def camel(section: dict[str, Any]) -> dict[str, Any]:
        return {re.sub(r"_(\w)", lambda m: m[1].upper(), k): v for k, v in section.items()}

    assert values["dagsterDaemon"]["runMonitoring"] == camel(instance["run_monitoring"])
    assert values["dagsterDaemon"]["runRetries"] == camel(instance["run_retries"])
    assert values["telemetry"] == instance["telemetry"]


def test_runs_launch_as_kubernetes_jobs(values: dict[str, Any]) -> None:
    assert values["runLauncher"]["type"] == "K8sRunLauncher"


def test_the_image_carries_the_run_launcher_at_dagsters_version() -> None:
    """K8sRunLauncher is in dagster-k8s, the image's `k8s` extra, whose 0.x version moves
    with dagster's as dagster-postgres's does."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(
        re.fullmatch(r"([\w-]+)==([\d.]+)", p).groups()  # type: ignore[union-attr]
        for p in [*project["dependencies"], *project["optional-dependencies"]["k8s"]]
        if "==" in p
    )
    assert pins["dagster-k8s"] == pins["dagster-postgres"]
    assert "pip install --no-cache-dir '.[k8s]'" in (REPO_ROOT / "Dockerfile").read_text()


def test_postgres_is_the_external_server_of_the_storage_file(values: dict[str, Any]) -> None:
    storage = load("deploy/dagster-postgres-storage.yaml")["run_storage"]["config"]["postgres_db"]
    postgresql = values["postgresql"]
    assert postgresql["enabled"] is False
    assert postgresql["postgresqlDatabase"] == storage["db_name"]
    assert postgresql["postgresqlUsername"] == storage["username"]
    # The password from a Secret made beforehand, not one the chart makes from these values.
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]


def test_the_webserver_is_not_exposed(values: dict[str, Any]) -> None:
    assert values["dagsterWebserver"]["service"]["type"] == "ClusterIP"
    assert values["ingress"]["enabled"] is False


def passwords(node: Any) -> list[tuple[str, Any]]:
    """Every (name, value) whose name says password: mapping keys, {name, value} entries
    and NAME=value strings."""
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("name"), str) and "value" in node:
            found.append((node["name"], node["value"]))
        for key, value in node.items():
            found.append((str(key), value))
            found += passwords(value)
    elif isinstance(node, list):
        for item in node:
            found += passwords(item)
    elif isinstance(node, str) and "=" in node:
        found.append(tuple(node.split("=", 1)))
    return [(name, value) for name, value in found if "password" in name.lower()]


def test_no_password_is_written_into_the_values(values: dict[str, Any]) -> None:
    for name, value in passwords(values):
        assert not (isinstance(value, str) and value), f"{name} holds a literal"


def test_top_level_keys_are_the_charts(values: dict[str, Any]) -> None:
    assert set(values) <= CHART_TOP_LEVEL_KEYS, set(values) - CHART_TOP_LEVEL_KEYS
