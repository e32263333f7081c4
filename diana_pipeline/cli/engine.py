"""diana-engine: the pipeline in the foreground, as the original Diana's engine ran.

Starts what is not running of the local stack (Kafka, DynamoDB Local, PostgreSQL in the scale
profile, the Dagster daemon and, unless --no-ui, the webserver) with this repo's Dagster
instance: the Kafka sensor, the ingestion runs and the automation work exactly as under
`diana-stack up --dagster`. Every --progress-interval it prints one `Posterior ► {...}` line
per test and variant (the latest window's posterior, as published) and one `Status ► {...}`
line. It stops after --run-for seconds (0: until stopped) or on Ctrl-C (exit 130), stops what
it started, and names what it left running that it did not start.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import psutil
from dagster import (
    AssetRecordsFilter,
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
)

from diana_pipeline.assets.ingestion import EVENTS
from diana_pipeline.assets.outputs import LATEST_FIELDS, PUBLISHED
from diana_pipeline.config import OUTPUT_SINKS, ConfigError, ExperimentsConfig, load_config
from diana_pipeline.ingestion import KafkaUnavailableError, consumer_lag, make_consumer
from diana_pipeline.local_stack import LocalStack, StackError, StackSettings
from diana_pipeline.run_metrics import INGESTION_KEY
from diana_pipeline.sinks.console_log import PREFIX

log = logging.getLogger(__name__)

STATUS_PREFIX = "Status ► "
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report it
EXIT_TERMINATED = 143  # SIGTERM
QUEUED = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED]
IN_PROGRESS = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


class StopSignalError(Exception):
    """A signal asked the engine to stop; `code` is the exit status to give."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diana-engine", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="experiments file (default: $DIANA_CONFIG "
                        "or ./experiments.yaml)")  # fmt: skip
    parser.add_argument(
        "--run-for", type=float, default=0.0, help="seconds to run, then stop (0: until Ctrl-C)"
    )
    parser.add_argument(
        "--progress-interval", type=float, default=60.0, help="seconds between progress (60)"
    )
    parser.add_argument(
        "--sink", choices=OUTPUT_SINKS, help="output sink (default: experiments.yaml's)"
    )
    parser.add_argument(
        "--no-ui", action="store_true", help="no Dagster webserver (the daemon runs the pipeline)"
    )
    parser.add_argument("--project-dir", type=Path, help="folder with workspace.yaml")
    return parser


class Progress:
    """What the engine prints every interval, read from the Dagster instance and Kafka."""

    def __init__(self, config: ExperimentsConfig, instance: DagsterInstance, out: TextIO) -> None:
        self.config = config
        self.instance = instance
        self.out = out
        self.since = time.time()
        self.ingested = self.rejected = self.duplicates = 0
        self._after_id: int | None = None  # the last events materialisation counted

    def posterior_lines(self) -> list[str]:
        """The latest window's posterior of each test and variant, as published_posteriors
        recorded it (no sink or store opened, so nothing competes with the runs)."""
        event = self.instance.get_latest_materialization_event(PUBLISHED)
        if event is None or event.asset_materialization is None:
            return []
        latest = event.asset_materialization.metadata["latest_window"].value
        tests = {test.test_id for test in self.config.tests}
        # In the fields' order (the metadata comes back with its keys sorted).
        return [
            PREFIX + json.dumps({k: r[k] for k in LATEST_FIELDS if k in r})
            for r in latest  # type: ignore[union-attr]
            if r["test_id"] in tests
        ]

    def count_ingested(self) -> None:
        """Add the ingestion runs' figures recorded since the last call."""
        while True:
            page = self.instance.fetch_materializations(
                AssetRecordsFilter(
                    asset_key=EVENTS,
                    after_storage_id=self._after_id,
                    after_timestamp=self.since if self._after_id is None else None,
                ),
                limit=1000,
                ascending=True,
            )
            for record in page.records:
                self._after_id = record.storage_id
                metadata = record.asset_materialization.metadata  # type: ignore[union-attr]
                if INGESTION_KEY not in metadata:
                    continue  # a report of another window's events, counted in its run's
                self.ingested += int(metadata["events_ingested"].value)  # type: ignore[arg-type]
                self.rejected += int(metadata["rejected_in_run"].value)  # type: ignore[arg-type]
                self.duplicates += int(metadata["duplicates_in_run"].value)  # type: ignore[arg-type]
            if not page.has_more:
                return

    def status(self) -> dict[str, object]:
        self.count_ingested()
        since = datetime.fromtimestamp(self.since, UTC)
        runs = self.instance.get_runs_count
        return {
            "events_ingested": self.ingested,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "consumer_lag": self.lag(),
            "runs_queued": runs(RunsFilter(statuses=QUEUED)),
            "runs_in_progress": runs(RunsFilter(statuses=IN_PROGRESS)),
            "runs_failed": runs(
                RunsFilter(statuses=[DagsterRunStatus.FAILURE], updated_after=since)
            ),
            "since": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def lag(self) -> int | None:
        """Messages on the events topic not yet stored (None when Kafka does not answer)."""
        consumer = make_consumer(self.config.infrastructure.kafka)
        try:
            return sum(consumer_lag(consumer, self.config.infrastructure.kafka.topic).values())
        except KafkaUnavailableError as exc:
            log.warning("consumer lag unknown: %s", exc)
            return None
        finally:
            consumer.close()

    def print(self) -> None:
        lines = self.posterior_lines() or [f"{PREFIX.strip()} (no posteriors published yet)"]
        lines.append(STATUS_PREFIX + json.dumps(self.status()))
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()


def _stop_on(signum: int, frame: object) -> None:
    raise StopSignalError(EXIT_INTERRUPTED if signum == signal.SIGINT else EXIT_TERMINATED)


def run(args: argparse.Namespace, out: TextIO) -> int:
    settings = StackSettings.from_environment(args.project_dir, args.config)
    config = load_config(settings.config_file, env=settings.env)  # a bad file stops us here
    stack = LocalStack(settings)
    before = {name: _pid(process.running()) for name, process in stack.processes.items()}
    code = 0
    try:
        stack.up(with_dagster=True, with_webserver=not args.no_ui)
        os.environ.update(stack.dagster.instance_env())
        instance = DagsterInstance.get()
        try:
            progress = Progress(config, instance, out)
            if not args.no_ui:
                print(f"Dagster UI: {settings.dagster_url}", file=out, flush=True)
            print(
                f"diana-engine: running {', '.join(t.test_id for t in config.tests)} "
                f"(sink {config.output_sink}); "
                + (f"stopping in {args.run_for:g}s" if args.run_for else "Ctrl-C stops"),
                file=out,
                flush=True,
            )
            _loop(progress, args.run_for, args.progress_interval)
        finally:
            instance.dispose()
    except StopSignalError as stop:
        code = stop.code
        print(f"diana-engine: stopped by signal (exit {code})", file=sys.stderr)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # stopping is not interrupted
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop(stack, before)
    return code


def _loop(progress: Progress, run_for: float, interval: float) -> None:
    began = time.monotonic()
    next_at = began + interval
    while True:
        now = time.monotonic()
        if run_for and now - began >= run_for:
            progress.print()  # the last figures, on the way out
            return
        if now >= next_at:
            progress.print()
            next_at += interval * max(1, int((now - next_at) // interval) + 1)
        wake = next_at if not run_for else min(next_at, began + run_for)
        time.sleep(max(0.0, wake - time.monotonic()))


def _stop(stack: LocalStack, before: dict[str, int | None]) -> None:
    """Stop what this engine started (Dagster first), and say what it leaves running: what
    ran before it. (A Dagster that ran with other settings was restarted, so it is stopped.)"""
    for name in reversed(stack.COMPONENTS):
        pid = _pid(stack.processes[name].running())
        if pid is not None and pid != before[name] and stack.processes[name].stop():
            print(f"diana-engine: stopped {name}", file=sys.stderr)
    now = {name: _pid(process.running()) for name, process in stack.processes.items()}
    left = [name for name, pid in before.items() if pid is not None and now[name] == pid]
    if left:
        print(
            f"diana-engine: left running, as it was before: {', '.join(left)} "
            "(stop with: diana-stack down)",
            file=sys.stderr,
        )
    gone = [name for name, pid in before.items() if pid is not None and now[name] is None]
    if gone:
        print(
            f"diana-engine: ran before with other settings, so it was restarted and is now "
            f"stopped: {', '.join(gone)} (start again with: diana-stack up --dagster)",
            file=sys.stderr,
        )


def _pid(process: psutil.Process | None) -> int | None:
    return None if process is None else process.pid


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # Dagster's storage migrations
    if args.run_for < 0 or args.progress_interval <= 0:
        print("diana-engine: error: --run-for ≥ 0 and --progress-interval > 0", file=sys.stderr)
        return 2
    if args.sink:
        os.environ["DIANA_OUTPUT_SINK"] = args.sink
    signal.signal(signal.SIGINT, _stop_on)
    signal.signal(signal.SIGTERM, _stop_on)
    try:
        return run(args, sys.stdout)
    except StopSignalError as stop:  # before anything started
        return stop.code
    except (StackError, ConfigError) as exc:
        print(f"diana-engine: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
