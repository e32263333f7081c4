"""Pid-file processes: found again, stopped with their children, stale files ignored."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest

from diana_pipeline.local_stack.errors import StackError
from diana_pipeline.local_stack.processes import (
    ManagedProcess,
    ensure_ports_free,
    listening_addresses,
    port_is_free,
    run_to_completion,
    wait_until_ready,
)


def managed(tmp_path: Path, name: str = "worker") -> ManagedProcess:
    return ManagedProcess(name, tmp_path / "pids", tmp_path / "logs" / f"{name}.log")


def test_start_find_and_stop_with_children(tmp_path: Path) -> None:
    process = managed(tmp_path)
    started = process.start(["sh", "-c", "sleep 60 & sleep 60"], dict(os.environ), tmp_path)
    deadline = time.monotonic() + 5
    while not started.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    family = [started.pid, *(child.pid for child in started.children())]
    assert len(family) >= 2  # the shell and at least one sleep
    assert process.running() is not None
    assert process.running().pid == started.pid

    assert process.stop(timeout_s=5) is True
    assert not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in family
    )
    assert not process.pid_file.exists()
    assert process.stop() is False  # stopping twice is harmless


def test_stubborn_process_is_killed_after_the_timeout(tmp_path: Path) -> None:
    process = managed(tmp_path)
    started = process.start(
        ["sh", "-c", "trap '' TERM; echo trapped; sleep 60"], dict(os.environ), tmp_path
    )
    # Only once the trap is installed does stopping test the kill path.
    deadline = time.monotonic() + 30
    while "trapped" not in process.log_path.read_text():
        assert time.monotonic() < deadline, "the shell never installed its trap"
        time.sleep(0.02)
    assert process.stop(timeout_s=0.5) is True
    assert not started.is_running() or started.status() == psutil.STATUS_ZOMBIE


def test_stale_pid_file_is_ignored_and_removed(tmp_path: Path) -> None:
    process = managed(tmp_path)
    process.pid_dir.mkdir(parents=True)
    # Our own pid, but with a create time that is not ours: a recycled pid.
    process.pid_file.write_text(f"{os.getpid()} 12345.0\n")
    assert process.running() is None
    assert not process.pid_file.exists()


def test_output_goes_to_the_log(tmp_path: Path) -> None:
    process = managed(tmp_path)
    process.start(["sh", "-c", "echo hello-from-child"], dict(os.environ), tmp_path).wait(5)
    assert "hello-from-child" in process.log_path.read_text()


def test_wait_fails_with_the_log_tail_when_the_process_dies(tmp_path: Path) -> None:
    process = managed(tmp_path, "doomed")
    process.start(["sh", "-c", "echo cannot-bind-port >&2; exit 3"], dict(os.environ), tmp_path)
    with pytest.raises(StackError, match=r"(?s)doomed exited during start-up.*cannot-bind-port"):
        wait_until_ready("doomed", process, lambda: False, timeout_s=10)


def test_wait_times_out_with_the_log_tail(tmp_path: Path) -> None:
    process = managed(tmp_path, "slow")
    process.start(["sh", "-c", "echo still-booting; sleep 30"], dict(os.environ), tmp_path)
    try:
        with pytest.raises(
            StackError, match=r"(?s)slow did not become ready within 1s.*still-booting"
        ):
            wait_until_ready("slow", process, lambda: False, timeout_s=1)
    finally:
        process.stop(timeout_s=2)


def test_port_checks_and_listening_addresses(tmp_path: Path) -> None:
    process = managed(tmp_path, "listener")
    server = (
        "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen();"
        "print(s.getsockname()[1], flush=True); time.sleep(60)"
    )
    started = process.start([sys.executable, "-c", server], dict(os.environ), tmp_path)
    try:
        deadline = time.monotonic() + 10
        while not process.log_path.read_text().strip().splitlines()[-1].isdigit():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        port = int(process.log_path.read_text().strip().splitlines()[-1])
        assert listening_addresses(started) == [f"127.0.0.1:{port}"]
        assert not port_is_free("127.0.0.1", port)
    finally:
        process.stop(timeout_s=2)
    assert port_is_free("127.0.0.1", port)


def test_taken_port_is_refused_naming_its_holder() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(StackError, match=rf"cannot start Thing: port {port} on 127.0.0.1"):
            ensure_ports_free("Thing", "127.0.0.1", [port])
    ensure_ports_free("Thing", "127.0.0.1", [port])  # free again: nothing to say


def test_failed_start_up_step_shows_its_log(tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "step.log"
    run_to_completion("a fine step", ["sh", "-c", "echo went-well"], log_path)
    with pytest.raises(StackError, match=r"(?s)a bad step failed; log: .*step.log.*no-such-cl"):
        run_to_completion("a bad step", ["sh", "-c", "echo no-such-class; exit 1"], log_path)
    assert "went-well" in log_path.read_text()


def test_status_and_already_running(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    process = managed(tmp_path, "sleeper")
    stopped = process.status("a detail")
    assert (stopped.name, stopped.running, stopped.pid, stopped.listening) == (
        "sleeper",
        False,
        None,
        [],
    )
    assert process.already_running("nowhere") is False
    started = process.start(["sleep", "60"], dict(os.environ), tmp_path)
    try:
        with caplog.at_level(logging.INFO):
            assert process.already_running("port 1") is True
        assert f"sleeper           already running (pid {started.pid}) on port 1" in caplog.text
        running = process.status("a detail")
        assert (running.running, running.pid, running.detail) == (True, started.pid, "a detail")
        assert running.log_path == process.log_path
    finally:
        process.stop(timeout_s=2)
