"""LocalStack composes its servers: their processes by name, in order, and their status."""

from __future__ import annotations

from pathlib import Path

from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.harness.stack import free_port, private_stack_environment
from diana_pipeline.local_stack import LocalStack, StackSettings


def stack_in(home: Path) -> LocalStack:
    env = private_stack_environment(home, free_port)
    return LocalStack(
        StackSettings.from_environment(REPO_ROOT, REPO_ROOT / "experiments.yaml", env)
    )


def test_processes_by_name_in_start_order(tmp_path: Path) -> None:
    stack = stack_in(tmp_path / "home")
    assert tuple(stack.processes) == LocalStack.COMPONENTS
    assert all(name == process.name for name, process in stack.processes.items())


def test_a_stack_that_never_started(tmp_path: Path) -> None:
    stack = stack_in(tmp_path / "home")
    statuses = stack.status()
    # PostgreSQL only in the scale profile (or when it runs).
    assert [s.name for s in statuses] == [c for c in LocalStack.COMPONENTS if c != "postgres"]
    assert not any(s.running for s in statuses)
    assert f"bootstrap {stack.settings.bootstrap_servers}" in statuses[0].detail
    assert f"endpoint {stack.settings.dynamodb_endpoint}" in statuses[1].detail
    assert statuses[2].detail == f"UI {stack.settings.dagster_url}"
    assert stack.down() == []
