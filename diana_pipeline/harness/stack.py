"""A private stack: the project's own local stack under a folder of its own, on free ports,
so that tests, benchmarks and reliability scenarios never meet a developer's stack or each
other."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from diana_pipeline.harness.paths import REPO_ROOT, SHIPPED_CONFIG
from diana_pipeline.local_stack import LocalStack, StackSettings


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def private_stack_environment(
    home: Path, new_port: Callable[[], int] = free_port
) -> dict[str, str]:
    """DIANA_* variables for a stack of its own: folder, ports (each from `new_port`) and
    data paths."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIANA_", "DAGSTER_"))}
    env.update(
        DIANA_HOME=str(home),
        DIANA_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{new_port()}",
        DIANA_KAFKA_CONTROLLER_PORT=str(new_port()),
        DIANA_DYNAMODB_ENDPOINT=f"http://127.0.0.1:{new_port()}",
        DIANA_DAGSTER_PORT=str(new_port()),
        DIANA_POSTGRES_PORT=str(new_port()),
        DIANA_DUCKDB_PATH=str(home / "events.duckdb"),
        DIANA_DUCKLAKE_DATA=str(home / "lake"),
        DIANA_CSV_DIR=str(home / "output"),
    )
    return env


class PrivateStack(NamedTuple):
    env: dict[str, str]  # DIANA_* settings pointing at it
    settings: StackSettings
    stack: LocalStack


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def private_stack(
    home: Path,
    extra_env: Mapping[str, str] | None = None,
    config_file: Path = SHIPPED_CONFIG,
    **services: bool,
) -> Iterator[PrivateStack]:
    """A stack of its own under `home` on free ports: its environment, settings and servers
    (the Dagster ones reading `config_file`), started with `services` (LocalStack.up's with_*
    flags) and brought down on leaving, also when starting fails half-way and on SIGTERM
    (which would otherwise end the process without running `finally`, and leave the servers
    up)."""
    env = {**private_stack_environment(home), **(extra_env or {})}
    settings = StackSettings.from_environment(REPO_ROOT, config_file, env)
    stack = LocalStack(settings)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        stack.up(**services)
        yield PrivateStack(env, settings, stack)
    finally:
        try:
            stack.down()
        finally:
            signal.signal(signal.SIGTERM, previous)
