"""Dagster of the local stack: the webserver and the daemon on the project's workspace, with
their instance (the project's dagster.yaml) under the stack folder, and how to ask the
webserver whether the code location loaded and the daemons are healthy."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from diana_pipeline.local_stack.errors import StackError
from diana_pipeline.local_stack.postgres import Postgres
from diana_pipeline.local_stack.processes import (
    ComponentStatus,
    ensure_ports_free,
    run_to_completion,
    wait_until_ready,
)
from diana_pipeline.local_stack.settings import LOOPBACK, StackSettings

log = logging.getLogger(__name__)

DAGSTER_READY_TIMEOUT_S = 180.0

# The variables that choose which pipeline Dagster loads: a Dagster running with other values
# is restarted by `up`.
CHOOSING_VARIABLES = (
    "DIANA_CONFIG", "DIANA_OUTPUT_SINK", "DIANA_OUTPUT_TOPIC", "DIANA_METRICS_TOPIC",
    "DIANA_EVENT_STORE",
)  # fmt: skip

# The scale profile's instance storage, appended to the project's dagster.yaml.
POSTGRES_STORAGE = Path("deploy") / "dagster-postgres-storage.yaml"

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


class Dagster:
    """The Dagster webserver and daemon of one stack folder."""

    def __init__(self, settings: StackSettings, postgres: Postgres | None = None) -> None:
        self.settings = settings
        self.postgres = postgres
        self.webserver = settings.process("dagster-webserver")
        self.daemon = settings.process("dagster-daemon")
        self.processes = (self.webserver, self.daemon)

    @property
    def on_postgres(self) -> bool:
        return self.settings.profile == "scale" and self.postgres is not None

    def instance_env(self) -> dict[str, str]:
        """What a process needs to open this stack's Dagster instance (and, in the scale
        profile, the DuckLake store): its folder and its PostgreSQL."""
        env = {"DAGSTER_HOME": str(self.settings.dagster_home)}
        if self.on_postgres:
            env["DIANA_POSTGRES_HOST"] = LOOPBACK
            env["DIANA_POSTGRES_PASSWORD"] = self.postgres.password  # type: ignore[union-attr]
            env["DIANA_POSTGRES_PORT"] = str(self.settings.postgres_port)
        return env

    def up(self, webserver: bool = True) -> None:
        """Start the daemon and (unless `webserver` is False) the webserver, and wait until
        they are ready. Either one already running with another experiments file or other
        settings (the DIANA_* variables that choose the pipeline) is restarted first."""
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
        env = {
            **s.env,
            **self.instance_env(),
            "DIANA_CONFIG": str(s.config_file),
            "DIANA_HOME": str(s.home),
            "PYTHONUNBUFFERED": "1",
        }
        if self.on_postgres:
            # The project's instance settings, with runs, event logs and schedules in
            # PostgreSQL: what lets the webserver, the daemon and run workers be on other hosts.
            storage = (s.project_dir / POSTGRES_STORAGE).read_text()
            link.write_text(f"{instance_yaml.read_text()}\n{storage}")
        else:
            # A link, not a copy: the instance always runs with the project's dagster.yaml.
            link.symlink_to(instance_yaml)
        bin_dir = Path(sys.executable).parent
        self._stop_if_configured_otherwise(env)
        wanted = self.processes if webserver else (self.daemon,)
        if any(process.running() is None for process in wanted):
            self._prepare_storage(_script(bin_dir, "dagster"), env)
        started = False
        if webserver and not self.webserver.already_running(s.dagster_url):
            ensure_ports_free("the Dagster webserver", LOOPBACK, [s.dagster_port])
            log.info("%-17s starting on %s", "dagster-webserver", s.dagster_url)
            self.webserver.start(
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
        if not self.daemon.already_running("(no port)"):
            # A daemon stopped moments ago left heartbeats that still look live: cleared, so
            # that readiness is the new daemon's.
            run_to_completion(
                "clearing the stopped daemon's heartbeats",
                [_script(bin_dir, "dagster-daemon"), "wipe"],
                self.settings.logs_dir / "dagster-instance.log",
                env=env,
            )
            log.info("%-17s starting", "dagster-daemon")
            self.daemon.start(
                [_script(bin_dir, "dagster-daemon"), "run", "-w", str(workspace)],
                env,
                s.project_dir,
            )
            started = True
        if started and webserver:
            waited = wait_until_ready(
                "the Dagster webserver",
                self.webserver,
                self._ready,
                DAGSTER_READY_TIMEOUT_S,
                interval_s=1.0,
            )
            log.info("%-17s code location loaded and daemon healthy in %.1fs", "dagster", waited)
        elif started:
            check = [_script(bin_dir, "dagster-daemon"), "liveness-check"]
            waited = wait_until_ready(
                "the Dagster daemon",
                self.daemon,
                lambda: _succeeds(check, env, s.project_dir),
                DAGSTER_READY_TIMEOUT_S,
                interval_s=1.0,
            )
            log.info("%-17s daemon live in %.1fs", "dagster-daemon", waited)

    def _stop_if_configured_otherwise(self, env: dict[str, str]) -> None:
        """A webserver or daemon that loads another pipeline (another experiments file, sink,
        store or topic) than `env` says is stopped, both with it, so they start anew."""
        for process in self.processes:
            running = process.running()
            if running is None:
                continue
            environ = running.environ()
            differ = {
                name: (environ.get(name) or "", env.get(name) or "")
                for name in CHOOSING_VARIABLES
                if (environ.get(name) or "") != (env.get(name) or "")
            }
            if differ:
                log.info("Dagster runs with other settings (%s); restarting it", differ)
                for other in self.processes:
                    other.stop()
                return

    def _prepare_storage(self, dagster: str, env: dict[str, str]) -> None:
        # On a new DAGSTER_HOME the webserver and the daemon would both create the SQLite
        # schema at once and race on Alembic's version table ("more than one head").
        # Creating it first, alone, avoids that; it also migrates after a Dagster upgrade.
        run_to_completion(
            "preparing the Dagster instance storage",
            [dagster, "instance", "migrate"],
            self.settings.logs_dir / "dagster-instance.log",
            env=env,
        )

    def _ready(self) -> bool:
        if self.daemon.running() is None:
            path = self.daemon.log_path
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

    def status(self) -> list[ComponentStatus]:
        s = self.settings
        return [
            self.webserver.status(f"UI {s.dagster_url}"),
            self.daemon.status(f"DAGSTER_HOME {s.dagster_home}"),
        ]


def _succeeds(argv: list[str], env: dict[str, str], cwd: Path) -> bool:
    result = subprocess.run(
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
    )
    return result.returncode == 0


def _script(bin_dir: Path, name: str) -> str:
    beside = bin_dir / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise StackError(f"{name} is not installed in this environment (pip install -e .)")
    return found


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
