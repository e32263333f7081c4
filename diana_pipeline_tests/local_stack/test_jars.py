"""Java runtimes: versions read from the poms, a cache keyed by pom content, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from diana_pipeline.local_stack.errors import StackError
from diana_pipeline.local_stack.jars import (
    DYNAMODB_LOCAL,
    KAFKA,
    JavaRuntime,
    ensure_jars,
    find_java,
)


def test_runtimes_come_from_the_poms() -> None:
    assert (KAFKA.title, DYNAMODB_LOCAL.title) == ("Apache Kafka", "DynamoDB Local")
    assert KAFKA.version.startswith("4.")
    assert DYNAMODB_LOCAL.version.startswith("3.")


def test_cache_is_keyed_by_pom_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = KAFKA.cache_dir(tmp_path)
    edited = KAFKA.pom_text.replace("<version>1</version>", "<version>2</version>")
    monkeypatch.setattr(JavaRuntime, "pom_text", property(lambda self: edited))
    after = KAFKA.cache_dir(tmp_path)
    assert before != after
    assert after.name.startswith(f"kafka-{KAFKA.version}-")


def test_a_complete_cache_needs_no_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = KAFKA.cache_dir(tmp_path)
    cached.mkdir(parents=True)
    (cached / ".complete").touch()
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert ensure_jars(KAFKA, tmp_path, tmp_path / "logs") == cached


def test_missing_maven_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(StackError, match=r"Maven \(mvn\) is needed once .* Apache Kafka"):
        ensure_jars(KAFKA, tmp_path, tmp_path / "logs")


def test_missing_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(StackError, match=r"Java 17 or newer is needed .* none was found"):
        find_java()


def test_old_java_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_home = tmp_path / "jdk8"
    (fake_home / "bin").mkdir(parents=True)
    java = fake_home / "bin" / "java"
    java.write_text("#!/bin/sh\necho 'openjdk version \"1.8.0_392\"' >&2\n")
    java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(fake_home))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(StackError, match=r"is Java 8; Kafka 4 and DynamoDB Local need Java 17"):
        find_java()


def test_real_java_is_found() -> None:
    assert os.access(find_java(), os.X_OK)
