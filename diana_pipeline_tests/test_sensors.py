"""The Kafka sensor: in process (requests, cursor, skip reasons, dead runs), then under a real
`dagster-daemon run` in a subprocess: exact totals end to end, a kill -9 of the daemon and
its runs mid-ingestion, and Kafka stopped and restarted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import psutil
import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    SensorResult,
    SkipReason,
    build_sensor_context,
)
from dagster._core.storage.tags import GRPC_INFO_TAG

from diana_pipeline import run_health
from diana_pipeline.config import load_config, parse_config
from diana_pipeline.counting import CountingRules, cumulative_counts, window_counts
from diana_pipeline.counting import state as counting_state
from diana_pipeline.harness.kafka import KafkaForTests
from diana_pipeline.harness.paths import REPO_ROOT, SHIPPED_CONFIG
from diana_pipeline.harness.stack import free_port, private_stack
from diana_pipeline.jobs import INGEST_JOB
from diana_pipeline.lake import LakeError
from diana_pipeline.resources import pipeline_resources
from diana_pipeline.run_health import (
    HOST_TAG,
    PIDS_TAG,
    RUN_TAG,
    UNTAGGED_GRACE_S,
    fail_dead_runs,
    free_slots_of_ended_runs,
)
from diana_pipeline.sensors import PARTITION_GROUP_TAG, build_kafka_sensor
from diana_pipeline.store import EventStore, StoreLocation
from diana_pipeline.traffic import NoiseRates, TrafficRun, TrafficSummary, build_spec
from diana_pipeline_tests.conftest import pipeline_definitions

pytestmark = pytest.mark.servers
AUTOMATION_JOB = "__ASSET_JOB"  # what the statistics automation launches
RUN_CONFIGS = {INGEST_JOB: {"ops": {"events": {"config": {"ranges": []}}}}}
DAGSTER_DAEMON = str(Path(sys.executable).with_name("dagster-daemon"))


def tick(env: dict[str, str], instance: DagsterInstance, cursor: str | None = None):
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        config = load_config(REPO_ROOT / "experiments.yaml")
        sensor = build_kafka_sensor(config, INGEST_JOB)
        resources = pipeline_resources(config, REPO_ROOT / "experiments.yaml")
        with build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
            return sensor(context)


def produce(
    env: dict[str, str], count: int, seed: int, noise: NoiseRates | None = None
) -> TrafficSummary:
    config = load_config(REPO_ROOT / "experiments.yaml", env=env)
    spec = build_spec(
        config, {"control": 0.35, "treatment": 0.55}, eps=None, count=count, seed=seed, noise=noise
    )
    return TrafficRun(config, spec).run()


def test_sensor_requests_micro_batches_and_keeps_a_cursor(kafka: KafkaForTests) -> None:
    topic = kafka.new_topic()
    env = {**kafka.env_for(topic), "DIANA_MAX_BATCH_MESSAGES": "400"}
    produce(env, 1000, seed=1)
    with DagsterInstance.ephemeral() as instance:
        result = tick(env, instance)
        assert isinstance(result, SensorResult)
        ranges = [
            r
            for request in result.run_requests
            for r in request.run_config["ops"]["events"]["config"]["ranges"]
        ]
        assert sum(r["end"] - r["start"] for r in ranges) == 1000
        assert all(
            sum(r["end"] - r["start"] for r in req.run_config["ops"]["events"]["config"]["ranges"])
            <= 400
            for req in result.run_requests
        )
        assert len({request.run_key for request in result.run_requests}) == len(result.run_requests)
        assert all(request.run_key.startswith(f"{topic}/") for request in result.run_requests)
        quiet = tick(env, instance, cursor=result.cursor)
        assert isinstance(quiet, SkipReason) and "no new messages" in quiet.skip_message


def test_sensor_coalesces_offsets_while_an_ingestion_run_waits(kafka: KafkaForTests) -> None:
    topic = kafka.new_topic()
    env = kafka.env_for(topic)
    produce(env, 300, seed=2)
    config = load_config(REPO_ROOT / "experiments.yaml", env=env)
    job = pipeline_definitions(config).resolve_job_def(INGEST_JOB)
    with DagsterInstance.ephemeral() as instance:
        waiting = instance.create_run_for_job(
            job, run_config={"ops": {"events": {"config": {"ranges": []}}}}
        )
        held = tick(env, instance)
        assert isinstance(held, SkipReason) and "waiting to start" in held.skip_message
        instance.report_run_failed(waiting)  # no longer waiting: the next tick takes it all
        # A run stuck STARTING (its launch died with the daemon) holds nothing back.
        stuck = instance.create_run_for_job(
            job, run_config={"ops": {"events": {"config": {"ranges": []}}}}
        )
        instance.run_storage.handle_run_event(stuck.run_id, _run_event(stuck, "RUN_STARTING"))
        assert instance.get_run_by_id(stuck.run_id).status == DagsterRunStatus.STARTING
        result = tick(env, instance)
        assert isinstance(result, SensorResult) and len(result.run_requests) == 1
        [request] = result.run_requests
        ranges = request.run_config["ops"]["events"]["config"]["ranges"]
        assert sum(r["end"] - r["start"] for r in ranges) == 300


def test_with_parallel_runs_each_run_takes_one_partition_group(kafka: KafkaForTests) -> None:
    """Six partitions, two runs at once: every request holds one group's partitions
    (partition % 2) and says which; a run of one group waiting holds back only its group."""
    topic = kafka.new_topic(partitions=6)
    env = {
        **kafka.env_for(topic), "DIANA_EVENT_STORE": "ducklake", "DIANA_PARALLEL_RUNS": "2",
        "DIANA_MAX_BATCH_MESSAGES": "250",
    }  # fmt: skip
    produce(env, 1200, seed=4)
    config = load_config(REPO_ROOT / "experiments.yaml", env=env)
    job = pipeline_definitions(config).resolve_job_def(INGEST_JOB)
    with DagsterInstance.ephemeral() as instance:
        waiting = instance.create_run_for_job(
            job, run_config=RUN_CONFIGS[INGEST_JOB], tags={PARTITION_GROUP_TAG: "0"}
        )
        held = tick(env, instance)
        assert isinstance(held, SensorResult)
        assert {r.tags[PARTITION_GROUP_TAG] for r in held.run_requests} == {"1"}
        instance.report_run_failed(waiting)
        result = tick(env, instance, cursor=held.cursor)
        assert isinstance(result, SensorResult)
        covered = 0
        for request in held.run_requests + result.run_requests:
            group = int(request.tags[PARTITION_GROUP_TAG])
            ranges = request.run_config["ops"]["events"]["config"]["ranges"]
            assert {r["partition"] % 2 for r in ranges} == {group}
            covered += sum(r["end"] - r["start"] for r in ranges)
        assert {r.tags[PARTITION_GROUP_TAG] for r in result.run_requests} == {"0"}
        assert covered == 1200


def test_sensor_skips_with_the_reason_when_kafka_is_down_or_the_topic_missing(
    kafka: KafkaForTests,
) -> None:
    with DagsterInstance.ephemeral() as instance:
        down = tick(
            {**kafka.env, "DIANA_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}, instance
        )
        assert isinstance(down, SkipReason) and "Kafka is unreachable" in down.skip_message
        missing = tick(kafka.env_for("no-such-topic"), instance)
        assert (
            isinstance(missing, SkipReason)
            and "topic 'no-such-topic' does not exist" in missing.skip_message
        )


def test_runs_whose_workers_died_are_failed(kafka: KafkaForTests, tmp_path: Path) -> None:
    config = load_config(REPO_ROOT / "experiments.yaml", env=kafka.env)
    definitions = pipeline_definitions(config)
    gone = subprocess.Popen(["true"])
    gone.wait()
    me = f"{os.getpid()}:{psutil.Process().create_time():.3f}"
    host = socket.gethostname()
    with DagsterInstance.ephemeral() as instance:

        def started(job_name: str, pids: str | None, own_tags: bool = True) -> str:
            job = definitions.resolve_job_def(job_name)
            run = instance.create_run_for_job(job, run_config=RUN_CONFIGS.get(job_name))
            if pids is not None:
                owner = run.run_id if own_tags else "a-parent-run"
                tags = {PIDS_TAG: pids, HOST_TAG: host, RUN_TAG: owner}
                instance.add_run_tags(run.run_id, tags)
            instance.run_storage.handle_run_event(run.run_id, _run_event(run))
            return run.run_id

        dead = started(INGEST_JOB, f"{gone.pid}:1.0")
        alive = started(INGEST_JOB, me)
        dead_statistics = started(AUTOMATION_JOB, f"{gone.pid}:1.0")
        # A retry carries its parent's tags (a dead process) until it tags itself: alive.
        retry = started(AUTOMATION_JOB, f"{gone.pid}:1.0", own_tags=False)
        untagged = started(AUTOMATION_JOB, None)
        # Runs being launched: by a code server that died with the daemon, or by a live one.
        served = tmp_path / "code-server.sock"
        code_server = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)", "--socket", str(served)]
        )
        launches = {}
        for name, socket_path in [("dead", tmp_path / "gone.sock"), ("alive", served)]:
            run = instance.create_run_for_job(
                definitions.resolve_job_def(INGEST_JOB), run_config=RUN_CONFIGS[INGEST_JOB]
            )
            grpc_info = json.dumps({"host": "localhost", "socket": str(socket_path)})
            instance.add_run_tags(run.run_id, {GRPC_INFO_TAG: grpc_info})
            instance.run_storage.handle_run_event(run.run_id, _run_event(run, "RUN_STARTING"))
            launches[name] = run.run_id
        instance.event_log_storage.set_concurrency_slots("duckdb", 1)
        claimed = instance.event_log_storage.claim_concurrency_slot("duckdb", dead, "events")
        assert claimed.is_claimed
        assert sorted(fail_dead_runs(instance)) == sorted([dead, dead_statistics])
        assert instance.event_log_storage.get_concurrency_info("duckdb").active_slot_count == 0
        status = {run_id: instance.get_run_by_id(run_id).status for run_id in (alive, retry)}
        assert instance.get_run_by_id(dead).status == DagsterRunStatus.FAILURE
        assert set(status.values()) == {DagsterRunStatus.STARTED}
        # A run that ended (its code server saw the worker die) while waiting for the slot:
        # its claim is dropped; a live run keeps the slot it holds.
        assert instance.event_log_storage.claim_concurrency_slot("duckdb", alive, "events")
        ended = started(INGEST_JOB, me)
        waiting = instance.event_log_storage.claim_concurrency_slot("duckdb", ended, "events")
        assert not waiting.is_claimed
        instance.report_run_failed(instance.get_run_by_id(ended))
        assert free_slots_of_ended_runs(instance) == [ended]
        pool = instance.event_log_storage.get_concurrency_info("duckdb")
        assert {step.run_id for step in pool.pending_steps} == pool.active_run_ids == {alive}
        # Untagged past the grace period: its process never said who it is, so it is dead.
        later = time.time() + UNTAGGED_GRACE_S + 1
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(run_health.time, "time", lambda: later)
            try:
                assert sorted(fail_dead_runs(instance)) == sorted(
                    [retry, untagged, launches["dead"]]
                )
            finally:
                code_server.kill()
        assert instance.get_run_by_id(launches["alive"]).status == DagsterRunStatus.STARTING


def _run_event(run, kind: str = "RUN_START"):
    from dagster._core.events import DagsterEvent, DagsterEventType

    return DagsterEvent(DagsterEventType[kind].value, run.job_name)


def test_offsets_of_an_ingestion_run_that_gave_up_are_requested_again(
    kafka: KafkaForTests,
) -> None:
    from dagster._core.events import DagsterEvent, StepSuccessData

    topic = kafka.new_topic()
    env = kafka.env_for(topic)
    config = load_config(REPO_ROOT / "experiments.yaml", env=env)
    job = pipeline_definitions(config).resolve_job_def(INGEST_JOB)
    ranges = {"ops": {"events": {"config": {"ranges": [{"partition": 1, "start": 5, "end": 9}]}}}}
    windows = {"dagster/asset_partition_range_start": "2026-11-30-10:00",
               "dagster/asset_partition_range_end": "2026-11-30-11:00"}  # fmt: skip
    with DagsterInstance.ephemeral() as instance:
        # Retries are off in an ephemeral instance: a failed run is given up at once.
        unstored = instance.create_run_for_job(job, run_config=ranges, tags=windows)
        stored = instance.create_run_for_job(job, run_config=ranges)
        success = StepSuccessData(duration_ms=1.0)
        event = DagsterEvent("STEP_SUCCESS", INGEST_JOB, step_key="events",
                             event_specific_data=success)  # fmt: skip
        instance.report_dagster_event(event, stored.run_id)
        for run in (unstored, stored):
            instance.report_run_failed(run)
        terminated = instance.create_run_for_job(job, run_config=ranges)
        instance.report_run_canceled(terminated)
        assert tick(env, instance).skip_message.startswith("no new messages")  # not yet
        after_pause = time.time() + run_health.RESUME_AFTER_S + 1
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(run_health.time, "time", lambda: after_pause)
            result = tick(env, instance)
            assert isinstance(result, SensorResult)
            request, for_terminated = sorted(
                result.run_requests, key=lambda r: r.run_key != f"resume/{unstored.run_id}"
            )
            assert request.run_key == f"resume/{unstored.run_id}"
            assert for_terminated.run_key == f"resume/{terminated.run_id}"
            assert request.run_config == ranges
            assert request.tags == {**windows, run_health.RESUMES_TAG: unstored.run_id}
            # The run whose events were stored needs nothing: it is tagged and not looked at again.
            verdict = instance.get_run_by_id(stored.run_id).tags[run_health.RESUMED_TAG]
            assert verdict == f"{stored.run_id}:stored"
            resuming = instance.create_run_for_job(job, run_config=ranges, tags=request.tags)
            instance.create_run_for_job(job, run_config=ranges, tags=for_terminated.tags)
            assert run_health.ingestion_runs_given_up(instance, INGEST_JOB) == []
            tags = instance.get_run_by_id(unstored.run_id).tags
            assert tags[run_health.RESUMED_TAG] == f"{unstored.run_id}:{resuming.run_id}"


def test_an_ingestion_run_never_queued_is_cancelled_and_its_offsets_requested_again(
    kafka: KafkaForTests,
) -> None:
    """Dagster's sensor daemon runs a tick that failed to queue its runs again once only;
    after a second failure the run stays NOT_STARTED, the sensor's cursor past its offsets.
    The sensor used to wait for it for good ("waiting to start"). A run just created is still
    waited for; one older than UNQUEUED_GRACE_S is cancelled, and its offsets requested again."""
    topic = kafka.new_topic()
    env = kafka.env_for(topic)
    config = load_config(REPO_ROOT / "experiments.yaml", env=env)
    job = pipeline_definitions(config).resolve_job_def(INGEST_JOB)
    ranges = {"ops": {"events": {"config": {"ranges": [{"partition": 0, "start": 0, "end": 7}]}}}}
    with DagsterInstance.ephemeral() as instance:
        unqueued = instance.create_run_for_job(job, run_config=ranges)
        held = tick(env, instance)
        assert isinstance(held, SkipReason) and "waiting to start" in held.skip_message
        assert instance.get_run_by_id(unqueued.run_id).status == DagsterRunStatus.NOT_STARTED
        overdue = time.time() + run_health.UNQUEUED_GRACE_S + 1
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(time, "time", lambda: overdue)
            cancelled = tick(env, instance)  # its resume waits out the pause first
        assert isinstance(cancelled, SkipReason) and "no new messages" in cancelled.skip_message
        assert instance.get_run_by_id(unqueued.run_id).status == DagsterRunStatus.CANCELED
        after_pause = overdue + run_health.RESUME_AFTER_S + 1
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(time, "time", lambda: after_pause)
            result = tick(env, instance)
        assert isinstance(result, SensorResult)
        [request] = result.run_requests
        assert request.run_key == f"resume/{unqueued.run_id}"
        assert request.run_config == ranges


def test_a_run_marked_will_retry_whose_retry_never_came_is_resumed() -> None:
    """Dagster tags a failed run "will retry"; if the daemon that would launch the retry was
    killed at that moment, the retry never comes. The CI saw 20,000 offsets lost that way.
    Such a run is resumed once the retry is overdue; one whose retry exists is not."""
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster._core.storage.tags import PARENT_RUN_ID_TAG, ROOT_RUN_ID_TAG, WILL_RETRY_TAG

    config = load_config(REPO_ROOT / "experiments.yaml")
    job = pipeline_definitions(config).resolve_job_def(INGEST_JOB)
    ranges = {"ops": {"events": {"config": {"ranges": [{"partition": 0, "start": 0, "end": 9}]}}}}
    with DagsterInstance.ephemeral() as instance:
        orphaned = instance.create_run_for_job(
            job, run_config=ranges, tags={WILL_RETRY_TAG: "true"}
        )
        retried = instance.create_run_for_job(job, run_config=ranges, tags={WILL_RETRY_TAG: "true"})
        for run in (orphaned, retried):
            instance.report_run_failed(run)
        # As Dagster's retry daemon makes it: parent and root, as fields and as tags.
        family = {PARENT_RUN_ID_TAG: retried.run_id, ROOT_RUN_ID_TAG: retried.run_id}
        retry: DagsterRun = instance.create_run_for_job(
            job,
            run_config=ranges,
            parent_run_id=retried.run_id,
            root_run_id=retried.run_id,
            tags=family,
        )
        assert retry.parent_run_id == retried.run_id

        def given_up_after(seconds: float) -> list[str]:
            later = time.time() + seconds
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(run_health.time, "time", lambda: later)
                return [r.run_id for r in run_health.ingestion_runs_given_up(instance, INGEST_JOB)]

        assert given_up_after(run_health.RESUME_AFTER_S + 1) == []  # the retry may yet come
        overdue = run_health.RETRY_EXPECTED_WITHIN_S + 1
        assert given_up_after(overdue) == [orphaned.run_id]


# ---- under a real daemon --------------------------------------------------------------------


class Daemon:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [DAGSTER_DAEMON, "run", "-w", "workspace.yaml"],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill_everything(self) -> None:
        """kill -9 the daemon and every process under it (code server, run workers, steps)."""
        assert self.process is not None
        root = psutil.Process(self.process.pid)
        family = [root, *root.children(recursive=True)]
        for member in family:
            member.send_signal(signal.SIGKILL)
        psutil.wait_procs(family, timeout=10)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def stored_events(location: StoreLocation) -> int | None:
    """Events in the store, or None while a writer holds the file (or before the first run
    made the tables)."""
    if isinstance(location, Path) and not location.exists():
        return 0
    try:
        with EventStore.open(location, read_only=True, lock_wait_s=0) as store:
            return store.connection.execute("SELECT count(*) FROM events").fetchone()[0]
    except (duckdb.Error, LakeError):
        return None


def query(location: StoreLocation, sql: str, timeout_s: float = 120) -> object:
    """One value from the store, waiting while a run (ingestion or statistics) holds it."""
    with EventStore.open_when_free(location, timeout_s) as store:
        return store.connection.execute(sql).fetchone()[0]


def runs_report(home: Path) -> str:
    """One line per run of the instance: what a timed-out wait shows to explain itself."""
    lines = []
    with DagsterInstance.from_config(str(home)) as instance:
        for record in sorted(instance.get_run_records(), key=lambda r: r.create_timestamp):
            run = record.dagster_run
            ranges = (run.run_config.get("ops", {}).get("events", {}).get("config", {}) or {}).get(
                "ranges", []
            )
            failed = {DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}
            failures = [
                (entry.message or "")[:100]
                for entry in instance.all_logs(run.run_id, of_type=failed)
            ]
            lines.append(
                f"{record.create_timestamp:%H:%M:%S} {run.run_id[:8]} {run.job_name} "
                f"{run.status.value} retry={run.tags.get('dagster/retry_number', 0)} "
                f"ranges={[(r['partition'], r['start'], r['end']) for r in ranges]} {failures}"
            )
    return "\n".join(lines)


def runs_ended(home: Path) -> bool:
    ended = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    with DagsterInstance.from_config(str(home)) as instance:
        return all(run.status in ended for run in instance.get_runs())


def step_failures(home: Path) -> list[str]:
    """Steps that failed in any run (a killed run's steps are not failures: they never end)."""
    with DagsterInstance.from_config(str(home)) as instance:
        return [
            f"{run.job_name} {run.run_id[:8]} {entry.step_key}: {(entry.message or '')[:300]}"
            for run in instance.get_runs()
            for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE)
        ]


def wait_for(
    predicate, timeout_s: float, what: str, log: Path, state: Callable[[], str] | None = None
) -> None:
    """Wait for the predicate; on timeout, fail with the daemon log's tail and `state()`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what}; daemon log tail:\n{log.read_text()[-4000:]}"
                + (f"\n{state()}" if state is not None else "")
            )
        time.sleep(1)


def daemon_state(store: StoreLocation, home: Path) -> Callable[[], str]:
    return lambda: f"stored events: {stored_events(store)}\nruns:\n{runs_report(home)}"


@pytest.fixture(params=["duckdb", "ducklake-parallel"])
def daemon_env(
    request: pytest.FixtureRequest,
    kafka: KafkaForTests,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, str]]:
    """A Dagster home and a topic of its own, with the DuckDB file, or the DuckLake store
    (PostgreSQL of the scale profile) and two ingestion runs at once on six partitions."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(REPO_ROOT / "dagster.yaml")
    parallel = request.param == "ducklake-parallel"
    topic = kafka.new_topic(partitions=6 if parallel else 3)
    env = {
        **kafka.env_for(topic),
        "DAGSTER_HOME": str(home),
        "DIANA_DUCKDB_PATH": str(tmp_path / "events.duckdb"),
        "DIANA_MAX_BATCH_MESSAGES": "20000",
    }
    if parallel:
        env |= request.getfixturevalue("postgres").new_lake(tmp_path)
        env["DIANA_PARALLEL_RUNS"] = "2"
        monkeypatch.setenv("DIANA_POSTGRES_PASSWORD", env["DIANA_POSTGRES_PASSWORD"])
    yield env


def test_daemon_ingests_exactly_and_survives_kill_9(
    daemon_env: dict[str, str], tmp_path: Path
) -> None:
    config = parse_config(SHIPPED_CONFIG.read_text(), env=daemon_env)
    store = config.infrastructure.store_location
    home = Path(daemon_env["DAGSTER_HOME"])
    daemon = Daemon(daemon_env, tmp_path / "daemon.log")
    noise = NoiseRates(duplicate=0.02, malformed=0.02, orphan_click=0.01)
    sent = produce(daemon_env, 150_000, seed=21, noise=noise)
    expected = sum(sent.events.values())
    daemon.start()
    try:
        # Kill everything once ingestion is under way but not done.
        wait_for(
            lambda: (stored_events(store) or 0) > 0, 180, "the first ingested events", daemon.log
        )
        daemon.kill_everything()
        partial = stored_events(store)
        assert partial is not None and partial < expected
        daemon.start()
        wait_for(
            lambda: stored_events(store) == expected,
            420,
            f"{expected} events",
            daemon.log,
            daemon_state(store, home),
        )
        # Every run ended, the killed ones failed by the sensor for a retry: nothing more
        # will run, and what ran must not have added anything.
        wait_for(
            lambda: runs_ended(home), 300, "every run to end", daemon.log, daemon_state(store, home)
        )
        # The killed runs never ended their steps; no step of any run failed.
        assert step_failures(home) == []
        assert query(store, "SELECT count(*) FROM events") == expected
        rejected = query(store, "SELECT count(*) FROM rejected_events")
        assert rejected == sent.noise["malformed messages"]
        covered = query(store, "SELECT sum(end_offset - start_offset) FROM ingested_ranges")
        assert covered == sent.sent  # every offset exactly once
        # The counting state, merged chunk by chunk (or folded) through the kill, equals a
        # recount.
        with EventStore.open(store) as opened:
            assert counting_state.rebuilds(opened.connection) == 0
            assert counting_state.is_current(opened.connection, CountingRules.of(config))
            assert counting_state.differences(opened.connection, CountingRules.of(config)) == []
            end = datetime(2200, 1, 1)
            last = config.partitions.grid.window_start(end - timedelta(hours=1))
            [window] = window_counts(opened.connection, config, [(last, end)]).values()
            recount = cumulative_counts(opened.connection, config, end)
            assert {(c.test_id, c.variant): (c.exposures_total, c.successes_total)
                    for c in window} == {
                key: (c.exposures, c.successes) for key, c in recount.items()
            }  # fmt: skip
            assert sum(c.exposures_total for c in window) > 0
    finally:
        daemon.stop()


SCALE_PARALLEL = {"DIANA_STACK_PROFILE": "scale", "DIANA_EVENT_STORE": "ducklake",
                  "DIANA_PARALLEL_RUNS": "2"}  # fmt: skip


@pytest.mark.parametrize("profile", [{}, SCALE_PARALLEL], ids=["default", "scale-parallel"])
def test_sensor_rides_out_kafka_stopping_and_starting(
    profile: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The scale profile's PostgreSQL runs as its own user when the tests run as root: the
    # stack folder must be reachable by it, which pytest's private folders are not.
    tmp_path = Path(tempfile.mkdtemp(prefix="diana-restart-"))
    tmp_path.chmod(0o755)
    with private_stack(tmp_path / "stack", profile, with_dynamodb=False) as (stack_env, _, stack):
        home = tmp_path / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").symlink_to(REPO_ROOT / "dagster.yaml")
        env = {**stack_env, "DAGSTER_HOME": str(home)}
        monkeypatch.setenv("DIANA_HOME", stack_env["DIANA_HOME"])  # the catalog's password
        store = parse_config(SHIPPED_CONFIG.read_text(), env=env).infrastructure.store_location
        daemon = Daemon(env, tmp_path / "daemon.log")
        try:
            first = produce(env, 2000, seed=31)
            daemon.start()
            wait_for(
                lambda: stored_events(store) == sum(first.events.values()),
                180,
                "the first batch",
                daemon.log,
                daemon_state(store, home),
            )
            stack.processes["kafka"].stop()

            def skipped_for_kafka() -> bool:
                with DagsterInstance.from_config(str(home)) as instance:
                    return any(
                        "Kafka is unreachable" in (tick.skip_reason or "")
                        for state in instance.all_instigator_state()
                        for tick in instance.get_ticks(
                            state.instigator_origin_id, state.selector_id, limit=20
                        )
                    )

            # A tick with Kafka down waits out its metadata timeout, then skips with the reason.
            wait_for(skipped_for_kafka, 90, "a tick skipped because Kafka is down", daemon.log)
            stack.up(with_dynamodb=False)
            second = produce(env, 2000, seed=32)
            total = sum(first.events.values()) + sum(second.events.values())
            wait_for(
                lambda: stored_events(store) == total,
                180,
                "the batch after the restart",
                daemon.log,
                daemon_state(store, home),
            )
            # Every run ended, and no offset was stored twice.
            wait_for(lambda: runs_ended(home), 300, "every run to end", daemon.log)
            covered = query(store, "SELECT sum(end_offset - start_offset) FROM ingested_ranges")
            assert covered == first.sent + second.sent
        finally:
            daemon.stop()
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_daemon_rides_out_postgresql_stopping_and_starting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scale profile with its Dagster instance and the DuckLake catalog on PostgreSQL,
    two ingestion runs at once: PostgreSQL stops while a second batch arrives and the daemon
    fails to reach it; once it is back every event is stored once and every offset once."""
    tmp_path = Path(tempfile.mkdtemp(prefix="diana-pg-restart-"))
    tmp_path.chmod(0o755)  # reachable by the scale profile's PostgreSQL user
    services = {"with_dagster": True, "with_webserver": False, "with_dynamodb": False}
    with private_stack(tmp_path / "stack", SCALE_PARALLEL, **services) as (env, settings, stack):
        instance_env = stack.dagster.instance_env()  # the instance, the catalog
        for key, value in instance_env.items():
            monkeypatch.setenv(key, value)
        env = {**env, **instance_env}
        home = Path(env["DAGSTER_HOME"])
        daemon_log = settings.logs_dir / "dagster-daemon.log"
        store = parse_config(SHIPPED_CONFIG.read_text(), env=env).infrastructure.store_location
        state = daemon_state(store, home)
        first = produce(env, 2000, seed=41)
        wait_for(lambda: stored_events(store) == sum(first.events.values()), 180,
                 "the first batch", daemon_log, state)  # fmt: skip
        stack.postgres.process.stop()
        second = produce(env, 2000, seed=42)
        refused = "Retrying failed database connection"
        wait_for(lambda: refused in daemon_log.read_text(), 120,
                 "the daemon to find PostgreSQL down", daemon_log)  # fmt: skip
        stack.postgres.up()
        total = sum(first.events.values()) + sum(second.events.values())
        wait_for(lambda: stored_events(store) == total, 300,
                 "the batch sent while PostgreSQL was down", daemon_log, state)  # fmt: skip
        wait_for(lambda: runs_ended(home), 300, "every run to end", daemon_log, state)
        covered = query(store, "SELECT sum(end_offset - start_offset) FROM ingested_ranges")
        assert covered == first.sent + second.sent
    shutil.rmtree(tmp_path, ignore_errors=True)
