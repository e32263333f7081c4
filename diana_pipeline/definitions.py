"""The one Definitions object of Diana (workspace.yaml and `dagster ... -m` point here)."""

from __future__ import annotations

from dagster import Definitions

from diana_pipeline.config import config_path, load_config
from diana_pipeline.jobs import traffic_job
from diana_pipeline.resources import ExperimentsResource

# Validated here, at load: a bad experiments.yaml fails the code location with a message that
# names the field, and nothing starts half-configured.
CONFIG_FILE = config_path()
EXPERIMENTS = load_config(CONFIG_FILE)

defs = Definitions(
    jobs=[traffic_job],
    resources={"experiments": ExperimentsResource(config_file=str(CONFIG_FILE))},
)
