"""diana-demo: the whole product in one command.

Brings the local stack up (Kafka, DynamoDB Local, the Dagster webserver and daemon), sends
synthetic traffic through `dagster job execute ... traffic_job`, shows the pipeline catching
up, prints the diana-analyze report once the posteriors cover every event sent, and leaves
the Dagster UI running.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TextIO

import yaml
from confluent_kafka import Consumer, KafkaException, TopicPartition
from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from diana_pipeline import markdown
from diana_pipeline.cli.analyze import (
    AnalyzeError,
    analyze,
    json_default,
    read_records,
    render,
    report_figure,
)
from diana_pipeline.cli.progress import ProgressBar
from diana_pipeline.config import OUTPUT_SINKS, ConfigError, ExperimentsConfig, load_config
from diana_pipeline.local_stack import LocalStack, StackError, StackSettings
from diana_pipeline.plots import allocation_figure
from diana_pipeline.totals import Totals, expected_totals, totals_of
from diana_pipeline.traffic import TrafficError, build_spec, parse_probabilities

log = logging.getLogger(__name__)

# Where diana-analyze reads each sink back; the console keeps nothing readable, so its
# records are read from DuckDB's posteriors table, where they were taken from.
ANALYZE_SOURCE = {"console": "duckdb", "csv": "csv", "dynamodb": "dynamodb"}
PUBLISHED = AssetKey("published_posteriors")
BUSY = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]
POLL_S = 2.0
BANDIT_CONFIG = Path("examples/bandit.yaml")  # in the project folder
AB_PROBABILITIES = "control=0.35,treatment=0.55"
BANDIT_PROBABILITIES = "a=0.30,b=0.35,c=0.40,d=0.50"


class DemoError(RuntimeError):
    """The demo cannot go on; one line saying why and where to look."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diana-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--eps", type=float, default=50.0, help="events per second (50)")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of traffic (120)")
    parser.add_argument(
        "--prob",
        help=f"success probability per variant ({AB_PROBABILITIES}; with --bandit "
        f"{BANDIT_PROBABILITIES})",
    )
    parser.add_argument(
        "--bandit",
        action="store_true",
        help=f"a bandit test instead ({BANDIT_CONFIG}): traffic follows the "
        "allocation the pipeline publishes; the report shows the weights over time",
    )
    parser.add_argument(
        "--sink",
        choices=OUTPUT_SINKS,
        help="output sink for this stack (default: experiments.yaml's output_sink)",
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds to wait for the pipeline (900)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="traffic seed (default: fresh users every time, so the totals of repeated demos "
        "add up; a seed repeats its users, who count once)",
    )
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--config", type=Path, help="experiments file")
    parser.add_argument("--project-dir", type=Path, help="folder with workspace.yaml")
    return parser


class Demo:
    def __init__(self, settings: StackSettings, out: TextIO = sys.stdout) -> None:
        self.settings = settings
        self.out = out
        self.plot = settings.home / "demo-posteriors.png"
        self.weights_plot = settings.home / "demo-allocation.png"
        self.config: ExperimentsConfig = load_config(settings.config_file, env=settings.env)
        self.stack = LocalStack(settings)
        self.env = {
            **settings.env,
            "DAGSTER_HOME": str(settings.dagster_home),
            "DIANA_CONFIG": str(settings.config_file),
        }

    # ---- the stack --------------------------------------------------------------------------

    def start_stack(self) -> None:
        """Up with Dagster (restarted when it runs with another sink or experiments file)."""
        self.stack.up(with_dagster=True)
        # This process watches the instance and reads the store; `dagster job execute` runs
        # on the instance too.
        instance_env = self.stack.dagster.instance_env()
        self.env.update(instance_env)
        os.environ.update(instance_env)
        self.instance = DagsterInstance.get()

    def wait_until_idle(self, timeout_s: float = 120.0) -> None:
        """Let runs in flight (an earlier demo's) finish, so the baseline is complete."""
        deadline = time.monotonic() + timeout_s
        while self.instance.get_run_records(RunsFilter(statuses=BUSY), limit=1):
            if time.monotonic() > deadline:
                log.info("runs are still in progress; starting anyway")
                return
            time.sleep(POLL_S)

    # ---- what the pipeline has published ----------------------------------------------------

    def published_totals(self) -> Totals:
        """Exposed and converted users per variant, cumulative, from the latest
        materialisation of published_posteriors (its metadata: no sink or DuckDB opened)."""
        event = self.instance.get_latest_materialization_event(PUBLISHED)
        if event is None or event.asset_materialization is None:
            return Counter()
        totals = totals_of(event.asset_materialization.metadata["latest_window"].value)  # type: ignore[union-attr,arg-type]
        # Only this experiments file's tests: the last run may have been another file's.
        tests = {test.test_id for test in self.config.tests}
        return Counter({key: n for key, n in totals.items() if key[0] in tests})

    # ---- traffic ----------------------------------------------------------------------------

    def messages_on_topic(self, consumer: Consumer) -> int:
        topic = self.config.infrastructure.kafka.topic
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        )

    def send_traffic(
        self,
        eps: float,
        duration_s: float,
        probabilities: dict[str, float],
        seed: int | None,
        follow_allocation: bool = False,
    ) -> dict:
        """traffic_job through `dagster job execute`, with progress; returns its summary."""
        tag = uuid.uuid4().hex[:12]
        run_config = self.settings.home / "demo-traffic.yaml"
        run_config.write_text(
            yaml.safe_dump(
                {
                    "ops": {
                        "send_traffic": {
                            "config": {
                                "events_per_second": eps,
                                "duration_seconds": duration_s,
                                "success_probabilities": probabilities,
                                "seed": seed,
                                "follow_allocation": follow_allocation,
                            }
                        }
                    }
                }
            )
        )
        command = [
            str(Path(sys.executable).with_name("dagster")),
            *("job", "execute", "-m", "diana_pipeline.definitions", "-j", "traffic_job"),
            *("-c", str(run_config), "--tags", json.dumps({"diana/demo": tag})),
        ]
        log_path = self.settings.logs_dir / "demo-traffic.log"
        print(
            f"sending traffic: {eps:g} events/s for {duration_s:g}s, {_show(probabilities)}\n"
            f"  $ dagster job execute -m diana_pipeline.definitions -j traffic_job -c {run_config}",
            file=self.out,
        )
        consumer = Consumer(
            {
                "bootstrap.servers": self.config.infrastructure.kafka.bootstrap_servers,
                "group.id": f"diana-demo-{tag}",
            }
        )
        try:
            before = self.messages_on_topic(consumer)
            with log_path.open("w") as output:
                traffic = subprocess.Popen(
                    command,
                    cwd=self.settings.project_dir,
                    env=self.env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
                bar = ProgressBar(self.out)
                try:
                    while traffic.poll() is None:
                        sent = self.messages_on_topic(consumer) - before
                        caught = sum(self.published_totals().values())
                        bar.update(
                            sent,
                            eps * duration_s,
                            f"{sent:,} events on Kafka · posteriors count {caught:,} users",
                        )
                        time.sleep(POLL_S)
                finally:
                    if traffic.poll() is None:
                        traffic.terminate()
                    bar.close()
        except KafkaException as exc:
            raise DemoError(f"cannot reach Kafka: {exc.args[0].str()}") from None
        finally:
            consumer.close()
        if traffic.returncode != 0:
            tail = log_path.read_text()[-2000:]
            raise DemoError(f"traffic_job failed (exit {traffic.returncode}); {log_path}:\n{tail}")
        return self._traffic_summary(tag)

    def _traffic_summary(self, tag: str) -> dict:
        [run] = self.instance.get_runs(RunsFilter(tags={"diana/demo": tag}), limit=1)
        for entry in self.instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_OUTPUT):
            metadata = entry.dagster_event.step_output_data.metadata  # type: ignore[union-attr]
            if "details" in metadata:
                return metadata["details"].value  # type: ignore[return-value]
        raise DemoError(f"traffic_job run {run.run_id} has no summary in its metadata")

    # ---- catching up ------------------------------------------------------------------------

    def wait_for_pipeline(self, expected: Totals, timeout_s: float) -> float:
        """Until the published totals reach what was sent; returns the seconds it took."""
        began = time.monotonic()
        target = sum(expected.values())
        bar = ProgressBar(self.out)
        try:
            while True:
                totals = self.published_totals()
                if all(totals[k] >= v for k, v in expected.items()):
                    break
                if time.monotonic() - began > timeout_s:
                    raise DemoError(
                        f"the posteriors did not catch up within {timeout_s:.0f}s; see the runs "
                        f"in the Dagster UI ({self.settings.dagster_url}/runs) and "
                        f"{self.settings.logs_dir}"
                    )
                done = sum(min(totals[k], v) for k, v in expected.items())
                bar.update(
                    done,
                    target,
                    f"pipeline catching up: posteriors count {done:,} of {target:,} "
                    f"exposed and converted users ({time.monotonic() - began:.0f}s)",
                )
                time.sleep(POLL_S)
        finally:
            bar.close()
        extra = {k: totals[k] - v for k, v in expected.items() if totals[k] != v}
        if extra:
            log.warning("the posteriors count more than this demo sent (other traffic?): %s", extra)
        return time.monotonic() - began

    def report(self) -> list[dict[str, object]]:
        source = ANALYZE_SOURCE[self.config.output_sink]
        records = read_records(source, [], self.config)
        reports, history = analyze(records, self.config)
        self.plot.write_bytes(report_figure(reports, history))
        return reports


def weights_over_time(summary: dict, plot: Path, rows: int = 8) -> str:
    """The allocations the traffic followed, as a table (at most `rows` versions, evenly
    spread, the last included) and a plot saved to `plot`."""
    used = [
        {**u, "at": datetime.fromisoformat(str(u["first_used_at"]).replace("Z", "+00:00"))}
        for u in summary.get("allocations_used", [])
    ]
    if not used:
        return "the traffic followed no published allocation (still in burn-in?)"
    plot.write_bytes(allocation_figure(used))
    step = max(1, len(used) // rows)
    shown = [*used[::step][: rows - 1], used[-1]] if len(used) > rows else used
    variants = list(used[-1]["weights"])
    lines = markdown.table(
        ["version", "from (UTC)", *variants],
        [[u["version"], u["at"].strftime("%H:%M:%S"),
          *(f"{u['weights'].get(v, 0.0):.0%}" for v in variants)] for u in shown],
    )  # fmt: skip
    return f"allocation followed ({len(used)} versions; plot: {plot}):\n{lines}"


def _show(probabilities: dict[str, float]) -> str:
    return ", ".join(f"{name} {p:g}" for name, p in probabilities.items())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # With --format json, stdout holds only the JSON; the story goes to stderr.
    human = sys.stderr if args.format == "json" else sys.stdout
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=human)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # Dagster's storage migrations
    if args.sink:
        os.environ["DIANA_OUTPUT_SINK"] = args.sink
    if args.bandit and args.config is None:
        args.config = (args.project_dir or Path.cwd()) / BANDIT_CONFIG
    prob = args.prob or (BANDIT_PROBABILITIES if args.bandit else AB_PROBABILITIES)
    began = time.monotonic()
    try:
        settings = StackSettings.from_environment(args.project_dir, args.config)
        demo = Demo(settings, human)
        probabilities = parse_probabilities(prob)
        # The same checks the job makes, before anything starts.
        build_spec(demo.config, probabilities, eps=args.eps, duration_s=args.duration)
        print(
            f"output sink: {demo.config.output_sink} (choose with --sink or DIANA_OUTPUT_SINK)",
            file=human,
        )
        demo.start_stack()
        print(f"Dagster UI: {settings.dagster_url}", file=human)
        demo.wait_until_idle()
        baseline = demo.published_totals()
        summary = demo.send_traffic(
            args.eps, args.duration, probabilities, args.seed, follow_allocation=args.bandit
        )
        print(f"sent {summary['sent']:,} events in {summary['elapsed_s']:.0f}s", file=human)
        expected = expected_totals(baseline, summary)
        caught_up = demo.wait_for_pipeline(expected, args.timeout)
        print(
            f"the posteriors cover every event sent, {caught_up:.0f}s after the traffic ended",
            file=human,
        )
        reports = demo.report()
    except (StackError, ConfigError, TrafficError, DemoError, AnalyzeError) as exc:
        print(f"diana-demo: error: {exc}", file=sys.stderr)
        print("the stack stays up for a look; stop everything with: make down", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("diana-demo: interrupted; stop everything with: make down", file=sys.stderr)
        return 130
    if args.format == "json":
        print(
            json.dumps(
                {
                    "sink": demo.config.output_sink,
                    "traffic": summary,
                    "caught_up_seconds": round(caught_up, 1),
                    "tests": reports,
                },
                indent=2,
                default=json_default,
            )
        )
    else:
        print()
        print("\n\n".join(render(report) for report in reports))
        print()
        print(f"posterior plot: {demo.plot}")
        if args.bandit:
            print()
            print(weights_over_time(summary, demo.weights_plot))
    print(
        f"done in {time.monotonic() - began:.0f}s. The Dagster UI stays on {settings.dagster_url} "
        "(asset lineage, runs, backfills). Stop everything with: make down",
        file=human,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
