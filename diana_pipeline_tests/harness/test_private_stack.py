"""The private stack that tests, benchmarks and reliability scenarios start
(diana_pipeline.harness.stack)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from diana_pipeline.harness.paths import REPO_ROOT

HOLD_A_PRIVATE_STACK = """
import sys, time
from pathlib import Path
from diana_pipeline.harness.stack import private_stack
with private_stack(Path(sys.argv[1]), with_dynamodb=False) as own:
    print(own.env["DIANA_KAFKA_BOOTSTRAP_SERVERS"], flush=True)
    time.sleep(600)
"""


@pytest.mark.servers
def test_a_scenario_stopped_with_sigterm_leaves_no_server_running(tmp_path: Path) -> None:
    """Scenarios and benchmarks start their stack through `private_stack`; SIGTERM (a CI
    timeout, `kill`) must bring it down as Ctrl-C does."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_PRIVATE_STACK, str(tmp_path)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        address = holder.stdout.readline().strip()  # type: ignore[union-attr]
        assert address, "the private stack did not come up"
        host, port = address.rsplit(":", 1)
        assert listening(host, int(port))
        assert servers_under(tmp_path, besides=holder.pid)
        holder.send_signal(signal.SIGTERM)
        assert holder.wait(180) != 0
        assert not listening(host, int(port))
        assert servers_under(tmp_path, besides=holder.pid) == []
    finally:
        holder.kill()


def listening(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex((host, port)) == 0


def servers_under(home: Path, besides: int) -> list[int]:
    """Processes whose command line names the folder (the stack's servers keep their files
    there)."""
    return [
        process.pid
        for process in psutil.process_iter(["cmdline"])
        if any(str(home) in part for part in process.info["cmdline"] or [])
        and process.pid not in (os.getpid(), besides)
    ]
