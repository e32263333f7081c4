# The Diana code location, for the dagster-webserver and dagster-daemon services of
# docker-compose.yml. Kafka and DynamoDB Local come from their own images there.
FROM python:3.11-slim

WORKDIR /opt/diana
COPY pyproject.toml README.md ./
COPY diana_pipeline ./diana_pipeline
# [k8s]: the run launcher of deploy/helm/values.yaml (runs as Kubernetes Jobs)
RUN pip install --no-cache-dir '.[k8s]'
COPY experiments.yaml workspace.yaml ./

ENV DAGSTER_HOME=/opt/dagster/dagster_home \
    DIANA_CONFIG=/opt/diana/experiments.yaml \
    PYTHONUNBUFFERED=1
RUN mkdir -p "$DAGSTER_HOME" /opt/diana/data
