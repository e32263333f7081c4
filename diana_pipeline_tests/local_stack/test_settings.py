"""Stack settings from experiments.yaml and DIANA_* variables: ports, folders, loopback only."""

from __future__ import annotations

from pathlib import Path

import pytest

from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.harness.stack import free_port, private_stack_environment
from diana_pipeline.local_stack import StackError, StackSettings


def settings_for(env: dict[str, str]) -> StackSettings:
    return StackSettings.from_environment(REPO_ROOT, REPO_ROOT / "experiments.yaml", env)


def test_ports_and_folders_come_from_the_environment(tmp_path: Path) -> None:
    env = private_stack_environment(tmp_path / "home", free_port)
    settings = settings_for(env)
    assert settings.home == (tmp_path / "home").resolve()
    assert settings.bootstrap_servers == env["DIANA_KAFKA_BOOTSTRAP_SERVERS"]
    assert settings.kafka_controller_port == int(env["DIANA_KAFKA_CONTROLLER_PORT"])
    assert settings.dynamodb_endpoint == env["DIANA_DYNAMODB_ENDPOINT"]
    assert settings.dagster_url == f"http://127.0.0.1:{env['DIANA_DAGSTER_PORT']}"
    assert settings.process("kafka").log_path == settings.logs_dir / "kafka.log"
    assert settings.process("kafka").pid_file == settings.home / "pids" / "kafka.pid"


def test_controller_port_defaults_to_the_one_after_kafka(tmp_path: Path) -> None:
    env = private_stack_environment(tmp_path / "home", free_port)
    del env["DIANA_KAFKA_CONTROLLER_PORT"]
    settings = settings_for(env)
    assert settings.kafka_controller_port == settings.kafka_port + 1


def test_only_loopback_servers_are_ours(tmp_path: Path) -> None:
    env = private_stack_environment(tmp_path / "home", free_port)
    env["DIANA_DYNAMODB_ENDPOINT"] = "http://dynamodb:8000"
    with pytest.raises(StackError, match="endpoint_url points at 'dynamodb:8000'"):
        settings_for(env)
