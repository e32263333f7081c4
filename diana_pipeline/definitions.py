"""The one Definitions object of Diana (workspace.yaml and `dagster ... -m` point here)."""

import warnings

from dagster import BetaWarning, Definitions, in_process_executor

from diana_pipeline.assets.ingestion import build_events
from diana_pipeline.assets.statistics import build_statistics
from diana_pipeline.config import config_path, load_config
from diana_pipeline.jobs import INGEST_JOB, ingest_job, lake_maintenance, traffic_job
from diana_pipeline.resources import pipeline_resources
from diana_pipeline.sensors import build_kafka_sensor, build_metrics_sensor

# Single-run backfills (BackfillPolicy) are a beta parameter that we rely on knowingly; its
# warning would otherwise open every run's log and every command's output.
warnings.filterwarnings("ignore", category=BetaWarning)

# Validated here, at load: a bad experiments.yaml fails the code location with a message that
# names the field, and nothing starts half-configured.
CONFIG_FILE = config_path()
EXPERIMENTS = load_config(CONFIG_FILE)

events = build_events(EXPERIMENTS)
statistics_assets, statistics_job, statistics_schedule, statistics_automation = build_statistics(
    EXPERIMENTS
)

maintenance_jobs, maintenance_schedules = lake_maintenance(EXPERIMENTS)

defs = Definitions(
    # Every job is a short chain of steps on one DuckDB file, which only one step may write
    # at a time anyway: a process per step (the multiprocess default) would add seconds of
    # start-up to each step and nothing in parallel.
    executor=in_process_executor,
    assets=[events, *statistics_assets],
    jobs=[traffic_job, ingest_job, statistics_job, *maintenance_jobs],
    schedules=[statistics_schedule, *maintenance_schedules],
    sensors=[
        build_kafka_sensor(EXPERIMENTS, INGEST_JOB),
        statistics_automation,
        *build_metrics_sensor(EXPERIMENTS),
    ],
    resources=pipeline_resources(EXPERIMENTS, CONFIG_FILE),
)
