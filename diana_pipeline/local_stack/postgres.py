"""PostgreSQL of the `scale` profile (docs/scale.md): Debian's server binaries, its cluster
under ``$DIANA_HOME/postgres``, listening on 127.0.0.1 only, with a password kept beside it
(never in the repository). It holds the Dagster instance's storage and the DuckLake catalog.

PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` system user
that Debian's package creates, and every server command runs as that user. The package is
installed with apt-get when missing and this process may; otherwise one line says how."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from diana_pipeline.local_stack.errors import StackError
from diana_pipeline.local_stack.processes import (
    ComponentStatus,
    ensure_ports_free,
    run_to_completion,
    wait_until_ready,
)
from diana_pipeline.local_stack.settings import LOOPBACK, StackSettings

log = logging.getLogger(__name__)

POSTGRES_READY_TIMEOUT_S = 60.0
SUPERUSER = "diana"
DATABASES = ("dagster", "diana")  # the Dagster instance; the DuckLake catalog
SERVER_USER = "postgres"  # who runs the server when we are root (Debian's package creates it)


def find_binaries() -> Path:
    """The folder of initdb, postgres and pg_ctl: on PATH, else Debian's newest version."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(os.path.realpath(on_path)).parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if versions:
        return versions[-1].parent
    raise StackError(
        "PostgreSQL is not installed: install Debian's package (sudo apt-get install -y "
        "postgresql) or put its bin folder (initdb, postgres) on PATH"
    )


def ensure_installed(log_path: Path) -> Path:
    """The binaries' folder, installing Debian's package first when it is missing and this
    process is root with apt-get."""
    try:
        return find_binaries()
    except StackError:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise
    log.info("%-17s installing Debian's postgresql package (apt-get)", "postgres")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run_to_completion("apt-get update", ["apt-get", "update"], log_path, env)
    run_to_completion(
        "apt-get install postgresql",
        ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"],
        log_path,
        env,
    )
    return find_binaries()


class Postgres:
    """The PostgreSQL server of one stack folder."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.process = settings.process("postgres")
        self.processes = (self.process,)
        self.folder = settings.home / "postgres"
        self.data = self.folder / "data"
        self.password_file = self.folder / "password"

    @property
    def password(self) -> str:
        """The superuser's password, made at the cluster's creation (DIANA_POSTGRES_PASSWORD
        overrides it for a server this stack did not create)."""
        given = self.settings.env.get("DIANA_POSTGRES_PASSWORD")
        if given:
            return given
        try:
            return self.password_file.read_text().strip()
        except FileNotFoundError:
            raise StackError(
                f"no PostgreSQL password at {self.password_file}: start it with "
                "diana-stack up --profile scale"
            ) from None

    def dsn(self, database: str) -> str:
        """A libpq connection string for one of the stack's databases."""
        return (
            f"host={LOOPBACK} port={self.settings.postgres_port} dbname={database} "
            f"user={SUPERUSER} password={self.password}"
        )

    def up(self) -> None:
        s = self.settings
        where = f"{LOOPBACK}:{s.postgres_port}"
        if self.process.already_running(where):
            return
        binaries = ensure_installed(s.logs_dir / "postgres-install.log")
        ensure_ports_free("PostgreSQL", LOOPBACK, [s.postgres_port])
        if not (self.data / "PG_VERSION").exists():
            self._create_cluster(binaries)
        sockets = self.folder / "sockets"
        argv = [
            *self._as_server_user(),
            str(binaries / "postgres"),
            "-D", str(self.data),
            "-p", str(s.postgres_port),
            "-c", f"listen_addresses={LOOPBACK}",
            "-c", f"unix_socket_directories={sockets}",
        ]  # fmt: skip
        log.info("%-17s starting PostgreSQL on %s", "postgres", where)
        self.process.start(argv, s.env, self.folder)
        waited = wait_until_ready(
            "PostgreSQL", self.process, lambda: self._answers(binaries), POSTGRES_READY_TIMEOUT_S
        )
        self._create_databases(binaries)
        log.info("%-17s ready in %.1fs", "postgres", waited)

    def status(self) -> list[ComponentStatus]:
        detail = f"PostgreSQL, {LOOPBACK}:{self.settings.postgres_port}, cluster {self.data}"
        return [self.process.status(detail)]

    # ---- set-up ---------------------------------------------------------------------------------

    def _as_server_user(self) -> list[str]:
        """The prefix that runs a server command as the cluster's owner (nothing unless root)."""
        if os.geteuid() != 0:
            return []
        return ["setpriv", f"--reuid={SERVER_USER}", f"--regid={SERVER_USER}", "--init-groups"]

    def _create_cluster(self, binaries: Path) -> None:
        """initdb with a fresh random password (scram-sha-256 over TCP), owned by the server
        user when we are root."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "sockets").mkdir(exist_ok=True)
        self.password_file.write_text(secrets.token_urlsafe(24) + "\n")
        self.password_file.chmod(0o600)
        secret = self.folder / "initdb-password"
        shutil.copy(self.password_file, secret)
        if os.geteuid() == 0:
            for path in (self.folder, self.folder / "sockets", secret):
                shutil.chown(path, SERVER_USER, SERVER_USER)
            reach = subprocess.run([*self._as_server_user(), "test", "-w", str(self.folder)],
                                   check=False)  # fmt: skip
            if reach.returncode != 0:
                raise StackError(
                    f"PostgreSQL runs as user {SERVER_USER}, who cannot reach {self.folder}: "
                    "make its parent folders traversable (chmod o+x) or set DIANA_HOME elsewhere"
                )
        initdb = [
            *self._as_server_user(),
            str(binaries / "initdb"),
            "-D", str(self.data),
            "-U", SUPERUSER,
            f"--pwfile={secret}",
            "--auth-host=scram-sha-256",
            "--auth-local=peer",
            "--encoding=UTF8",
            "--locale=C",
        ]  # fmt: skip
        try:
            run_to_completion("initdb", initdb, self.settings.logs_dir / "postgres-initdb.log")
        finally:
            secret.unlink(missing_ok=True)

    def _psql(self, binaries: Path, sql: str, database: str = "postgres") -> str:
        """Run one statement over TCP as the superuser; its rows as text."""
        psql = shutil.which("psql") or str(binaries / "psql")
        conninfo = (
            f"host={LOOPBACK} port={self.settings.postgres_port} dbname={database} "
            f"user={SUPERUSER} connect_timeout=5"
        )
        result = subprocess.run(
            [psql, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql, conninfo],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**os.environ, "PGPASSWORD": self.password},  # not on the command line
        )
        if result.returncode != 0:
            raise StackError(f"PostgreSQL refused {sql!r}: {result.stderr.strip()}")
        return result.stdout

    def _answers(self, binaries: Path) -> bool:
        try:
            self._psql(binaries, "SELECT 1")
        except (StackError, subprocess.TimeoutExpired):
            return False
        return True

    def _create_databases(self, binaries: Path) -> None:
        existing = set(self._psql(binaries, "SELECT datname FROM pg_database").split())
        for database in DATABASES:
            if database not in existing:
                self._psql(binaries, f"CREATE DATABASE {database}")
                log.info("%-17s database %s created", "postgres", database)
