"""Dagster's PostgreSQL storage (dagster-postgres) with connections kept per process.

dagster-postgres opens a new connection for every read and write of the instance (SQLAlchemy's
NullPool, so that short-lived DagsterInstance objects hold none), and only the webserver keeps
one open. Each new connection costs PostgreSQL a backend process and a SCRAM-SHA-256
handshake, about 8 ms of CPU here; a run writes dozens of events and the daemon polls every
second, so on a small machine the instance's connections took the CPU the runs needed
(docs/scale.md, "Freshness in the scale profile"). These classes keep one connection per
storage and process and open more only while several threads use it at once, as the
webserver does (`optimize_for_webserver`, without its statement timeout).

dagster.yaml names them instead of `storage: postgres` (deploy/dagster-postgres-storage.yaml);
their config is dagster-postgres's."""

from __future__ import annotations

from typing import Any

from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

NO_STATEMENT_TIMEOUT = 0  # PostgreSQL's "none": runs and the daemon wait as they did before
POOL_RECYCLE_S = 3600  # reconnect hourly, past any idle cut-off of a proxy in between
MAX_OVERFLOW = 10  # connections beyond the kept one while threads (the daemon's) overlap


def _keep_connections(storage: Any) -> Any:
    storage.optimize_for_webserver(NO_STATEMENT_TIMEOUT, POOL_RECYCLE_S, MAX_OVERFLOW)
    return storage


# dagster-postgres's from_config_value builds its own class's object; each keeps its
# connections once built.
class PooledPostgresRunStorage(PostgresRunStorage):
    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> PostgresRunStorage:
        return _keep_connections(super().from_config_value(inst_data, config_value))


class PooledPostgresEventLogStorage(PostgresEventLogStorage):
    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> PostgresEventLogStorage:
        return _keep_connections(super().from_config_value(inst_data, config_value))


class PooledPostgresScheduleStorage(PostgresScheduleStorage):
    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> PostgresScheduleStorage:
        return _keep_connections(super().from_config_value(inst_data, config_value))
