"""Where posterior records (docs/design.md §5) go, each sink a plain client with no Dagster in it:

- records.py: the record schema, one JSON line, CSV cells, and the way back; every sink uses it.
- console_log.py: `PosteriorLog`, one `Posterior ► {...}` line per record in a logger.
- csv_files.py: `PosteriorCsvFiles`, one `posteriors_<date>.csv` per UTC day in a folder.
- dynamodb_table.py: `PosteriorTable`, the DynamoDB table `ab_posteriors`.
- kafka_topic.py: `PosteriorTopic`, the compacted `output_topic` in Kafka.

Each has `write(records, span)` (span: the windows the records are of) and, where a sink can be
read back, `read(span)`. The IO managers (io_managers/) pick the sink a run writes to; the
diana-analyze CLI reads the sinks directly."""
