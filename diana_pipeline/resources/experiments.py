"""The experiments file as a Dagster resource, so runs read the file the code location loaded."""

from __future__ import annotations

from dagster import ConfigurableResource

from diana_pipeline.config import ExperimentsConfig, load_config


class ExperimentsResource(ConfigurableResource):
    """experiments.yaml: infrastructure, output sink, windows and tests."""

    config_file: str

    def load(self) -> ExperimentsConfig:
        return load_config(self.config_file)
