"""`diana-stack up | down | status`: Kafka, DynamoDB Local and Dagster as local processes.

Everything the stack writes lives under one folder (``$DIANA_HOME``, default ``.diana``):
``logs/`` (one log per server), ``pids/``, ``kafka/`` (config and data), ``dynamodb/``
(tables), ``postgres/`` (the scale profile's cluster) and ``dagster_home/`` (the Dagster
instance: the project's dagster.yaml, with its storage in PostgreSQL in the scale profile).
Each server lives in a module of its own; this one composes them.
"""

from __future__ import annotations

import logging

from diana_pipeline.local_stack.dagster import Dagster
from diana_pipeline.local_stack.dynamodb import DynamoDBLocal
from diana_pipeline.local_stack.kafka import Kafka
from diana_pipeline.local_stack.postgres import Postgres
from diana_pipeline.local_stack.processes import ComponentStatus
from diana_pipeline.local_stack.settings import StackSettings

log = logging.getLogger(__name__)


class LocalStack:
    """The servers of one stack folder; every method is safe to call in any state."""

    COMPONENTS = ("postgres", "kafka", "dynamodb", "dagster-webserver", "dagster-daemon")
    PROFILES = ("default", "scale")  # scale: PostgreSQL too, and Dagster's storage in it

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.postgres = Postgres(settings)
        self.kafka = Kafka(settings)
        self.dynamodb = DynamoDBLocal(settings)
        self.dagster = Dagster(settings, self.postgres)
        # In COMPONENTS order: the order they start in, and the reverse of the order they stop.
        self.processes = {
            process.name: process
            for server in (self.postgres, self.kafka, self.dynamodb, self.dagster)
            for process in server.processes
        }

    def up(
        self,
        with_dagster: bool = False,
        with_dynamodb: bool = True,
        with_kafka: bool = True,
        with_webserver: bool = True,
    ) -> None:
        """Start what is not running; with Dagster, its webserver too unless
        `with_webserver` is False."""
        s = self.settings
        s.home.mkdir(parents=True, exist_ok=True)
        log.info("stack folder: %s (logs in %s), profile %s", s.home, s.logs_dir, s.profile)
        if s.profile == "scale":
            self.postgres.up()
        if with_kafka:
            self.kafka.up()
        if with_dynamodb:
            self.dynamodb.up()
        if with_dagster:
            self.dagster.up(webserver=with_webserver)

    def down(self) -> list[str]:
        """Stop every server of this folder (Dagster first, Kafka last). Returns what stopped."""
        stopped = []
        for name in reversed(self.COMPONENTS):
            if self.processes[name].stop():
                log.info("%-17s stopped", name)
                stopped.append(name)
        if not stopped:
            log.info("nothing was running under %s", self.settings.home)
        return stopped

    def status(self) -> list[ComponentStatus]:
        shown = [*self.kafka.status(), *self.dynamodb.status(), *self.dagster.status()]
        postgres = self.postgres.status()
        if self.settings.profile == "scale" or postgres[0].running:
            shown = postgres + shown
        return shown
