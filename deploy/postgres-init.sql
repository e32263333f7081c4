-- The DuckLake catalog's database (docs/scale.md), beside the Dagster instance's (POSTGRES_DB).
CREATE DATABASE diana;
