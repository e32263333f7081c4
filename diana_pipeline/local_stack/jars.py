"""Java runtimes of the local stack: jars resolved once by Maven from a pom in this package."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from diana_pipeline.local_stack.errors import StackError
from diana_pipeline.local_stack.processes import tail

log = logging.getLogger(__name__)

_POM_NAMESPACE = {"m": "http://maven.apache.org/POM/4.0.0"}
_COMPLETE_MARKER = ".complete"
MIN_JAVA_MAJOR = 17


@dataclass(frozen=True)
class JavaRuntime:
    """A server whose classpath is the dependency closure of one pom."""

    pom_name: str

    @property
    def pom_text(self) -> str:
        return (
            resources.files("diana_pipeline.local_stack")
            .joinpath("poms", self.pom_name)
            .read_text()
        )

    @property
    def title(self) -> str:
        return _pom_field(self.pom_text, "m:name")

    @property
    def version(self) -> str:
        return _pom_field(self.pom_text, "m:properties/m:server.version")

    def cache_dir(self, cache_root: Path) -> Path:
        # Keyed by the pom's content so that editing the pom never reuses stale jars.
        digest = hashlib.sha256(self.pom_text.encode()).hexdigest()[:10]
        return cache_root / f"{Path(self.pom_name).stem}-{self.version}-{digest}"


KAFKA = JavaRuntime("kafka.xml")
DYNAMODB_LOCAL = JavaRuntime("dynamodb.xml")


def _pom_field(pom_text: str, path: str) -> str:
    node = ElementTree.fromstring(pom_text).find(path, _POM_NAMESPACE)
    if node is None or not node.text:
        raise StackError(f"pom has no {path}")
    return node.text.strip()


def jar_cache_root() -> Path:
    """$DIANA_JAR_CACHE, else the user's cache folder: shared by every checkout and test run."""
    if os.environ.get("DIANA_JAR_CACHE"):
        return Path(os.environ["DIANA_JAR_CACHE"]).resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "diana" / "jars"


def ensure_jars(runtime: JavaRuntime, cache_root: Path, logs_dir: Path) -> Path:
    """The folder holding the runtime's jars, resolving them with Maven the first time."""
    target = runtime.cache_dir(cache_root)
    if (target / _COMPLETE_MARKER).exists():
        return target
    maven = shutil.which("mvn")
    if maven is None:
        raise StackError(
            f"Maven (mvn) is needed once to download the {runtime.title} {runtime.version} jars, "
            "and it is not on PATH. Install it (Debian: apt-get install maven) and run again."
        )
    log.info(
        "resolving %s %s jars with Maven (first run only, cached in %s)",
        runtime.title,
        runtime.version,
        target,
    )
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    pom = partial / "pom.xml"
    pom.write_text(runtime.pom_text)
    logs_dir.mkdir(parents=True, exist_ok=True)
    maven_log = logs_dir / f"maven-{Path(runtime.pom_name).stem}.log"
    with maven_log.open("wb") as out:
        result = subprocess.run(
            [
                maven,
                "--batch-mode",
                "--no-transfer-progress",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={partial / 'lib'}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    if result.returncode != 0:
        raise StackError(
            f"Maven could not resolve the {runtime.title} {runtime.version} jars "
            f"(exit {result.returncode}); log: {maven_log}\n{tail(maven_log, 15)}"
        )
    (partial / _COMPLETE_MARKER).touch()
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def classpath(jar_dir: Path) -> str:
    return str(jar_dir / "lib" / "*")


def find_java() -> str:
    """The java executable (JAVA_HOME first, then PATH), checked to be Java 17 or newer."""
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(on_path)
    for java in candidates:
        if not os.access(java, os.X_OK):
            continue
        probe = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
        match = re.search(r'version "(\d+)(?:\.(\d+))?', probe.stderr + probe.stdout)
        if match is None:
            continue
        major = int(match.group(1))
        if major == 1 and match.group(2):  # "1.8.0" style
            major = int(match.group(2))
        if major >= MIN_JAVA_MAJOR:
            return java
        raise StackError(
            f"{java} is Java {major}; Kafka 4 and DynamoDB Local need Java {MIN_JAVA_MAJOR} "
            "or newer. "
            "Install it (Debian: apt-get install openjdk-17-jre-headless) or point JAVA_HOME at it."
        )
    raise StackError(
        f"Java {MIN_JAVA_MAJOR} or newer is needed to run Kafka and DynamoDB Local, "
        "and none was found (JAVA_HOME unset, no java on PATH). "
        "Install it (Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME."
    )
