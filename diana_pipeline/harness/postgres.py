"""A real PostgreSQL (a private stack's, scale profile) with what tests and benchmarks do with
it: a new DuckLake event store for each of them, in a database of its own."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

from diana_pipeline.config import load_config
from diana_pipeline.harness.paths import SHIPPED_CONFIG
from diana_pipeline.harness.stack import private_stack
from diana_pipeline.lake import StoreLocation
from diana_pipeline.local_stack.postgres import SUPERUSER, Postgres


@dataclass
class PostgresForTests:
    port: int
    password: str = field(repr=False)
    env: dict[str, str] = field(repr=False)  # DIANA_* settings pointing at this server
    server: Postgres = field(repr=False)  # to stop and start it again

    def new_lake(self, folder: Path) -> dict[str, str]:
        """Settings (for load_config or a subprocess) of a new, empty DuckLake store: its
        catalog in a new database, its data files under `folder`."""
        database = f"lake_{uuid.uuid4().hex[:12]}"
        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, dbname="postgres", user=SUPERUSER,
            password=self.password,
        )  # fmt: skip
        try:
            connection.autocommit = True  # CREATE DATABASE refuses to run in a transaction
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {database}")
        finally:
            connection.close()
        return {
            "DIANA_EVENT_STORE": "ducklake",
            "DIANA_POSTGRES_PORT": str(self.port),
            "DIANA_POSTGRES_PASSWORD": self.password,
            "DIANA_DUCKLAKE_DATABASE": database,
            "DIANA_DUCKLAKE_DATA": str(folder / "lake"),
        }

    def new_lake_location(self, folder: Path) -> StoreLocation:
        """Where `EventStore.open` finds a new, empty DuckLake store (it reads the password
        from DIANA_POSTGRES_PASSWORD, which the caller sets)."""
        env = {**os.environ, **self.new_lake(folder)}
        return load_config(SHIPPED_CONFIG, env=env).infrastructure.store_location


@contextmanager
def postgres_for_tests() -> Iterator[PostgresForTests]:
    """PostgreSQL started by the project's stack code in a folder of its own. The folder is
    made reachable by the server's user (as root the server runs as `postgres`; pytest's
    temporary folders are private to their user)."""
    home = Path(tempfile.mkdtemp(prefix="diana-postgres-"))
    home.chmod(0o755)
    try:
        scale = {"DIANA_STACK_PROFILE": "scale"}
        with private_stack(home / "stack", scale, with_kafka=False, with_dynamodb=False) as own:
            password = (own.settings.home / "postgres" / "password").read_text().strip()
            yield PostgresForTests(
                own.settings.postgres_port, password, own.env, own.stack.postgres
            )
    finally:
        shutil.rmtree(home, ignore_errors=True)
