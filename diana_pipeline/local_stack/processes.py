"""Background processes tracked by pid files: start, find again, stop, wait on readiness; and
what every server of the stack does alike (taken ports, one-off start-up steps, status lines)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from diana_pipeline.local_stack.errors import StackError

log = logging.getLogger(__name__)

# A create time written with the pid tells our process apart from a later one that reuses the pid.
_CREATE_TIME_SLACK_S = 0.05


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, indented, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"    (no log at {path})"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def port_owner(port: int) -> str:
    """Who listens on a port, as far as this user can see ('' when unknown)."""
    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return ""
    for conn in connections:
        if (
            conn.status == psutil.CONN_LISTEN
            and conn.laddr
            and conn.laddr.port == port
            and conn.pid
        ):
            try:
                return f"pid {conn.pid} ({' '.join(psutil.Process(conn.pid).cmdline()[:3])})"
            except psutil.Error:
                return f"pid {conn.pid}"
    return ""


def listening_addresses(process: psutil.Process) -> list[str]:
    """host:port of every listening TCP socket of a process and its children."""
    found: set[str] = set()
    for proc in [process, *process.children(recursive=True)]:
        try:
            connections = proc.net_connections(kind="inet")
        except psutil.Error:
            continue
        for conn in connections:
            if conn.status == psutil.CONN_LISTEN and conn.laddr:
                host = conn.laddr.ip.removeprefix("::ffff:")
                host = "*" if host in ("0.0.0.0", "::") else host
                found.add(f"{host}:{conn.laddr.port}")
    return sorted(found, key=lambda a: (int(a.rsplit(":", 1)[1]), a))


def ensure_ports_free(what: str, host: str, ports: Sequence[int]) -> None:
    """Refuse to start `what` on a taken port, naming who holds it when we can tell."""
    for port in ports:
        if not port_is_free(host, port):
            owner = port_owner(port)
            raise StackError(
                f"cannot start {what}: port {port} on {host} is already taken"
                + (f" by {owner}" if owner else "")
                + ". Stop that process, or choose other ports (see README, 'Ports')."
            )


def run_to_completion(
    what: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
) -> None:
    """Run a one-off start-up step with its output in `log_path`; fail with the log's tail."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        result = subprocess.run(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            check=False,
        )
    if result.returncode != 0:
        raise StackError(f"{what} failed; log: {log_path}\n{tail(log_path)}")


@dataclass(frozen=True)
class ComponentStatus:
    """One server's status line: whether it runs, as which pid, where it listens and logs."""

    name: str
    running: bool
    pid: int | None
    listening: list[str]
    detail: str
    log_path: Path


@dataclass(frozen=True)
class ManagedProcess:
    """One server of the stack, remembered by a pid file under `pid_dir`."""

    name: str
    pid_dir: Path
    log_path: Path

    @property
    def pid_file(self) -> Path:
        return self.pid_dir / f"{self.name}.pid"

    def running(self) -> psutil.Process | None:
        """The live process this pid file names, or None (a stale file is removed)."""
        try:
            pid_text, created_text = self.pid_file.read_text().split()
            process = psutil.Process(int(pid_text))
            if abs(process.create_time() - float(created_text)) > _CREATE_TIME_SLACK_S:
                raise psutil.NoSuchProcess(int(pid_text))
            if process.status() == psutil.STATUS_ZOMBIE:
                raise psutil.NoSuchProcess(int(pid_text))
            return process
        except (OSError, ValueError, psutil.Error):
            self.pid_file.unlink(missing_ok=True)
            return None

    def already_running(self, where: str) -> bool:
        """Whether the server runs already (and then say so): starting it is nothing to do."""
        process = self.running()
        if process is not None:
            log.info("%-17s already running (pid %d) on %s", self.name, process.pid, where)
        return process is not None

    def status(self, detail: str) -> ComponentStatus:
        process = self.running()
        return ComponentStatus(
            name=self.name,
            running=process is not None,
            pid=process.pid if process else None,
            listening=listening_addresses(process) if process else [],
            detail=detail,
            log_path=self.log_path,
        )

    def start(self, argv: Sequence[str], env: dict[str, str], cwd: Path) -> psutil.Process:
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            log_file.write(
                f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode()
            )
            log_file.flush()
            # A session of its own: the stack outlives the command, and stop() can signal
            # the whole group (Dagster's code servers included).
            child = subprocess.Popen(
                list(argv),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        process = psutil.Process(child.pid)
        self.pid_file.write_text(f"{child.pid} {process.create_time()}\n")
        return process

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the process and its descendants: SIGTERM, then SIGKILL after the timeout."""
        process = self.running()
        if process is None:
            return False
        family = [process, *_descendants(process)]
        _signal_group(process.pid, signal.SIGTERM)
        for member in family:
            _send(member, signal.SIGTERM)
        _, alive = psutil.wait_procs(family, timeout=timeout_s)
        if alive:
            _signal_group(process.pid, signal.SIGKILL)
            for member in alive:
                _send(member, signal.SIGKILL)
            psutil.wait_procs(alive, timeout=10)
        self.pid_file.unlink(missing_ok=True)
        return True


def _descendants(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def _send(process: psutil.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(psutil.Error):
        process.send_signal(sig)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pgid, sig)


def wait_until_ready(
    what: str,
    process: ManagedProcess,
    probe: Callable[[], bool],
    timeout_s: float,
    interval_s: float = 0.25,
) -> float:
    """Poll `probe` until it is true; fail early if the process dies. Returns seconds waited."""
    started = time.monotonic()
    while True:
        if probe():
            return time.monotonic() - started
        if process.running() is None:
            raise StackError(
                f"{what} exited during start-up; log: {process.log_path}\n{tail(process.log_path)}"
            )
        if time.monotonic() - started > timeout_s:
            raise StackError(
                f"{what} did not become ready within {timeout_s:.0f}s; "
                f"log: {process.log_path}\n{tail(process.log_path)}"
            )
        time.sleep(interval_s)
