"""Dagster resources: how assets reach the configuration and the servers."""

from diana_pipeline.resources.experiments import ExperimentsResource

__all__ = ["ExperimentsResource"]
