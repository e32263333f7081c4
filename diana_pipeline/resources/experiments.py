"""The experiments file as a Dagster resource, so runs read the file the code location loaded."""

from __future__ import annotations

from dagster import ConfigurableResource, InitResourceContext

from diana_pipeline.config import ExperimentsConfig, load_config
from diana_pipeline.run_health import worker_tags


class ExperimentsResource(ConfigurableResource):
    """experiments.yaml: infrastructure, output sink, windows and tests."""

    config_file: str

    def setup_for_execution(self, context: InitResourceContext) -> None:
        # Every job uses this resource, so every run says here which process runs it: the
        # Kafka sensor fails runs whose process died (run_health.py).
        if context.instance is not None and context.run is not None:
            run_id = context.run.run_id
            context.instance.add_run_tags(run_id, worker_tags(run_id))

    def load(self) -> ExperimentsConfig:
        return load_config(self.config_file)
