"""diana-traffic as a user runs it: flags, one-line errors, and a clean Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from diana_pipeline.allocations import AllocationVersion
from diana_pipeline.cli.traffic import main
from diana_pipeline.harness.kafka import KafkaForTests
from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.harness.stack import free_port
from diana_pipeline.sinks.kafka_topic import AllocationTopic
from diana_pipeline.windows import utc_now
from diana_pipeline_tests.conftest import run_command

DIANA_TRAFFIC = str(Path(sys.executable).with_name("diana-traffic"))

pytestmark = pytest.mark.servers


def traffic(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_command("diana-traffic", *args, env=env, timeout=120)


def test_count_with_json_summary(kafka: KafkaForTests) -> None:
    topic = kafka.new_topic()
    result = traffic(
        kafka.env_for(topic), "--count", "400", "--unthrottled", "--seed", "5", "--json"
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["sent"] == summary["delivered"] == 400
    assert kafka.count(topic) == 400
    assert {row["variant"] for row in summary["expected_counts"]} == {"control", "treatment"}


def test_original_flags_at_a_rate(kafka: KafkaForTests) -> None:
    topic = kafka.new_topic()
    result = traffic(
        kafka.env_for(topic),
        "--config", "experiments.yaml", "--eps", "200", "--duration", "1.5",
        "--prob", "control=0.35,treatment=0.55", "--users", "50", "--repeat-rate", "0.5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("done: sent ")
    assert kafka.count(topic) == int(result.stdout.split()[2].replace(",", ""))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--prob", "control=1.4,treatment=0.5"],
            "success probability of control must be in [0, 1], got 1.4",
        ),
        (["--prob", "control=0.3,purple=0.5"], "unknown variant 'purple'"),
        (["--prob", "control=0.3"], "no success probability for variant(s) treatment"),
        (["--prob", "nonsense"], "expected variant=probability pairs"),
        (["--eps", "0"], "events per second must be > 0"),
        (["--eps", "-5"], "events per second must be > 0"),
        (["--tests", "nope"], "unknown test 'nope'"),
        (["--count", "0"], "count must be ≥ 1"),
    ],
)
def test_bad_flags_end_with_one_line_and_send_nothing(
    kafka: KafkaForTests, args: list[str], message: str
) -> None:
    topic = kafka.new_topic()
    result = traffic(kafka.env_for(topic), "--count", "10", *args)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"diana-traffic: error: {result.stderr.split('error: ', 1)[1].strip()}"
    ]
    assert message in result.stderr
    assert kafka.count(topic) == 0


def test_unreachable_broker_is_one_line(kafka: KafkaForTests) -> None:
    env = {**kafka.env, "DIANA_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    result = traffic(env, "--count", "10")
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("diana-traffic: error: cannot reach Kafka at")


def test_ctrl_c_stops_cleanly_after_flushing(kafka: KafkaForTests) -> None:
    topic = kafka.new_topic()
    process = subprocess.Popen(
        [DIANA_TRAFFIC, "--eps", "300", "--duration", "60"],
        cwd=REPO_ROOT,
        env=kafka.env_for(topic),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a suite started in the background (`make test &`) ignores
        # SIGINT, and a child would inherit that and never see the Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 30
    while kafka.count(topic) < 200:  # running for real before the interrupt
        assert time.monotonic() < deadline, (
            process.stderr.read() if process.poll() is not None else ""
        )
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stdout.startswith("interrupted: sent ")
    sent = int(stdout.split()[2].replace(",", ""))
    assert "failed 0" in stdout
    assert kafka.count(topic) == sent  # everything reported was delivered, nothing more


def test_a_value_without_its_event_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--count", "5", "--value", "Purchase=control:25,treatment:27"]) == 2
    assert "--value for Purchase without its --event" in capsys.readouterr().err


def test_follow_allocation_assigns_by_the_published_weights(
    kafka: KafkaForTests, tmp_path: Path
) -> None:
    """The shipped bandit example on its own topics: every new user goes where the published
    version says (all to d), and the summary names the version used."""
    topic, allocations = kafka.new_topic(), f"alloc-{uuid.uuid4().hex[:8]}"
    text = (REPO_ROOT / "examples" / "bandit.yaml").read_text()
    text = text.replace("topic: web-events-bandit", f"topic: {topic}")
    text = text.replace("allocation_topic: allocations_out", f"allocation_topic: {allocations}")
    config = tmp_path / "bandit.yaml"
    config.write_text(text)
    now = utc_now()
    weights = {"a": 0.0, "b": 0.0, "c": 0.0, "d": 1.0}
    AllocationTopic(kafka.bootstrap_servers, allocations).write(
        [AllocationVersion("headline-test", 1, weights, now, now, None)]
    )
    flags = ["--count", "300", "--unthrottled", "--prob", "a=0.3,b=0.35,c=0.4,d=0.5"]
    result = traffic(kafka.env, "--config", str(config), *flags, "--follow-allocation", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert {row["variant"] for row in summary["expected_counts"]} == {"d"}
    assert [u["version"] for u in summary["allocations_used"]] == [1]
