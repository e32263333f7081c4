"""Bad configuration: every invalid experiments.yaml case of the config tests, written to a
file and handed to the two ways the pipeline starts. The Dagster code location must refuse
to load (so no sensor, schedule or run starts half-configured) with the error naming the
field, and `diana-stack` must stop with that one line and a non-zero exit.

    .venv/bin/python -m reliability.config                 # every case, docs/reliability.md
    .venv/bin/python -m reliability.config --cases 4 --no-write
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from diana_pipeline.harness.bad_configs import BAD_CASES, shipped_raw
from diana_pipeline.harness.docs import RELIABILITY_PAGE, write_section
from diana_pipeline.harness.paths import REPO_ROOT
from diana_pipeline.markdown import table

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class ConfigOutcome:
    case: str
    code_location_loaded: bool
    code_location_error: str | None  # the ConfigError line, when it names the field
    stack_exit: int
    stack_error: str  # diana-stack's stderr

    @property
    def held(self) -> bool:
        return (
            not self.code_location_loaded
            and self.code_location_error is not None
            and self.stack_exit != 0
            and len(self.stack_error.splitlines()) == 1
            and self.stack_error.endswith(self.code_location_error.split(": ", 1)[1])
        )


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def try_case(case: str, folder: Path) -> ConfigOutcome:
    mutate, message = BAD_CASES[case]
    raw = copy.deepcopy(shipped_raw())
    mutate(raw)
    folder.mkdir(parents=True, exist_ok=True)
    experiments = folder / "experiments.yaml"
    experiments.write_text(yaml.safe_dump(raw))
    home = folder / "dagster_home"
    home.mkdir(exist_ok=True)
    # Only what a shell would have, plus the file to use: no DIANA_* override from outside.
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DIANA_")},
        "DIANA_CONFIG": str(experiments),
        "DAGSTER_HOME": str(home),
    }
    validate = _run(
        [str(BIN / "dagster"), "definitions", "validate", "-m", "diana_pipeline.definitions"], env
    )
    pattern = re.compile(
        r"ConfigError: (" + re.escape(str(experiments)) + r": .*" + message + ".*)"
    )
    found = [
        m.group(1)
        for m in map(pattern.search, validate.stdout.splitlines() + validate.stderr.splitlines())
        if m
    ]
    stack = _run([str(BIN / "diana-stack"), "status"], env)
    return ConfigOutcome(
        case,
        validate.returncode == 0,
        found[0] if len(found) == 1 else None,
        stack.returncode,
        stack.stderr.strip(),
    )


def run_config(folder: Path, cases: list[str] | None = None) -> list[ConfigOutcome]:
    return [try_case(case, folder / f"case-{n}") for n, case in enumerate(cases or BAD_CASES)]


def render(outcomes: list[ConfigOutcome]) -> str:
    rows = []
    for o in outcomes:
        location = "loaded (wrong)" if o.code_location_loaded else "refused to load"
        error = (o.code_location_error or "(no error naming the field)").split(": ", 1)[-1]
        error = error.replace("|", "\\|")
        rows.append((o.case, location, f"exit {o.stack_exit}", f"`{error}`"))
    return table(["case", "Dagster code location", "diana-stack", "the error"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, help="only the first N cases")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    cases = list(BAD_CASES)[: args.cases]
    with tempfile.TemporaryDirectory(prefix="diana-config-") as folder:
        print(f"  .. {len(cases)} bad experiments.yaml files", file=sys.stderr)
        outcomes = run_config(Path(folder), cases)
    cases_table = render(outcomes)
    held = sum(o.held for o in outcomes)
    verdict = f"{held} of {len(outcomes)} cases refused with one error naming the field"
    print(cases_table)
    print(verdict)
    if not args.no_write:
        write_section(
            RELIABILITY_PAGE,
            "bad-config",
            "Bad configuration",
            "python -m reliability.config",
            "Each invalid case of the config tests, written to a file and given to "
            "`dagster definitions validate -m diana_pipeline.definitions` (what the "
            "webserver, the daemon and every run load) and to `diana-stack status`, "
            f"with `DIANA_CONFIG` pointing at it. {verdict}: the code location never "
            "loads, so no sensor, schedule or run starts half-configured, and the "
            "command line stops with that one line.",
            cases_table,
        )
    return 0 if held == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
