#!/bin/sh
# The Dagster instance of a compose container: the project's dagster.yaml, with its storage in
# PostgreSQL (dagster-postgres-storage.yaml) in the scale profile, as `diana-stack up --profile
# scale` writes it; then the container's command.
set -eu
cat /opt/diana/dagster.yaml > "$DAGSTER_HOME/dagster.yaml"
if [ "${DIANA_STACK_PROFILE:-default}" = scale ]; then
  printf '\n' >> "$DAGSTER_HOME/dagster.yaml"
  cat /opt/diana/deploy/dagster-postgres-storage.yaml >> "$DAGSTER_HOME/dagster.yaml"
fi
exec "$@"
