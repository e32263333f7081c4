"""diana-inject of the shipped example file, normally and with --raw."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from diana_pipeline.harness.kafka import KafkaForTests
from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline_tests.conftest import run_command

EXAMPLE = REPO_ROOT / "examples" / "events.jsonl"

pytestmark = pytest.mark.servers


def inject(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_command("diana-inject", *args, env=env, timeout=120)


def test_example_file_sends_objects_and_refuses_the_rest(kafka: KafkaForTests) -> None:
    topic = kafka.new_topic()
    result = inject(kafka.env_for(topic), str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "sent 7 lines" in result.stdout and "refused 3 invalid lines" in result.stdout
    assert "line 6: refused, invalid JSON" in result.stdout
    assert "line 8: refused, a JSON list, not an object" in result.stdout
    messages = kafka.read_all(topic)
    assert len(messages) == 7
    for key, value in messages:
        assert key == json.loads(value)["user_id"].encode()


def test_raw_sends_every_non_blank_line_as_it_is(kafka: KafkaForTests) -> None:
    topic = kafka.new_topic()
    result = inject(kafka.env_for(topic), "--raw", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    lines = [line for line in EXAMPLE.read_bytes().splitlines() if line.strip()]
    assert sorted(value for _, value in kafka.read_all(topic)) == sorted(lines)


def test_missing_file_is_one_line(kafka: KafkaForTests, tmp_path: Path) -> None:
    result = inject(kafka.env_for(kafka.new_topic()), str(tmp_path / "nope.jsonl"))
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"diana-inject: error: cannot read {tmp_path / 'nope.jsonl'}: No such file or directory"
    )
