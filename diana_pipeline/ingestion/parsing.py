"""A chunk of Kafka messages parsed and checked in DuckDB at once, EventValidator for the rest.

events.EventValidator defines what a valid event is and why a message is rejected; message by
message in Python it costs most of an ingestion run. So a run hands DuckDB a chunk's messages
as one string, a line per message, and SQL parses and checks them all, outside the GIL while
the run reads the next chunk. The SQL only ever *accepts*: a message it cannot vouch for goes
through EventValidator, whose verdict, values and reason are final. It vouches for a message
when

- the message is ASCII on one line (checked in Python, a consumed batch at a time) and its
  JSON has the plain shape SHAPE describes: an object whose members are strings without
  escapes, numbers of at most 18 integer digits, null or {}, with no repeated key. This is
  where DuckDB's JSON reader and orjson disagree: DuckDB accepts NaN and Infinity, trailing
  commas and integers beyond 64 bits, and reads the first of two equal keys where orjson
  reads the last; none of these has the plain shape;
- and it passes the validator's checks, each written again in SQL: six non-empty strings of
  at most MAX_FIELD_LENGTH characters, a known test and variant, a timestamp spelled
  YYYY-MM-DDTHH:MM:SS[.fff|.ffffff]Z within the accepted range, a value (if any) within
  ±MAX_ABS_VALUE, no properties (events with properties go through the validator, which
  makes them canonical).

diana_pipeline_tests/ingestion/test_parsing.py holds the two equal over generated messages.
"""

from __future__ import annotations

import duckdb
import numpy as np
from confluent_kafka import Message

from diana_pipeline.events import MAX_ABS_VALUE, MAX_FIELD_LENGTH, EventColumns, EventValidator

_SPACE = r"[ \t\r]*"
_STRING = r'"[^"\\\x00-\x1f]*"'
_NUMBER = r"-?(0|[1-9][0-9]{0,17})(\.[0-9]+)?([eE][-+]?[0-9]+)?"
_VALUE = f"({_STRING}|{_NUMBER}|null|\\{{{_SPACE}\\}})"
_MEMBER = f"{_SPACE}{_STRING}{_SPACE}:{_SPACE}{_VALUE}{_SPACE}"
SHAPE = f"{_SPACE}\\{{({_MEMBER}(,{_MEMBER})*|{_SPACE})\\}}{_SPACE}"
_TIMESTAMP = (  # the JSON text of YYYY-MM-DDTHH:MM:SS[.fff|.ffffff]Z, hours 00-23
    r'"[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]'
    r'(\.[0-9]{3}|\.[0-9]{6})?Z"'
)
# A field's JSON text is a string of 1 to MAX_FIELD_LENGTH characters (none escaped: SHAPE).
_IS_STRING = " AND ".join(
    f"starts_with({c}, '\"') AND len({c}) BETWEEN 3 AND {MAX_FIELD_LENGTH + 2}"
    for c in ("e", "k", "t", "v", "u")
)
_FIELDS = (
    '{"event_id": "JSON", "event_type": "JSON", "test_id": "JSON", "variant": "JSON", '
    '"user_id": "JSON", "timestamp": "JSON", "value": "JSON", "properties": "JSON"}'
)

# Every member of `f` is the JSON text of the field (SQL NULL when absent or null); a string
# without escapes is its characters between two quotes. The value must look like a number
# before its cast: a JSON string casts to DOUBLE too ('"12"' gives 12).
_PARSE = f"""
CREATE OR REPLACE TEMP TABLE {{table}} AS
WITH lines AS (
    SELECT * FROM (
        SELECT unnest(string_split($lines, chr(10))) AS line, unnest(range($count)) AS i
    ) POSITIONAL JOIN message_offsets
),
plain AS (
    SELECT i, kafka_offset, json_transform(line, '{_FIELDS}') AS f, json_keys(line) AS keys
    FROM lines WHERE regexp_full_match(line, '{SHAPE}')
),
fields AS (
    SELECT i, kafka_offset, f.event_id AS e, f.event_type AS k, f.test_id AS t, f.variant AS v,
        f.user_id AS u, f.timestamp AS ts, f.value AS x, f.properties AS p,
        CASE WHEN regexp_full_match(f.timestamp, '{_TIMESTAMP}')
             THEN epoch_us(TRY_CAST(substr(f.timestamp, 2, len(f.timestamp) - 3) AS TIMESTAMP))
        END AS us,
        CASE WHEN regexp_full_match(f.value, '{_NUMBER}')
             THEN TRY_CAST(f.value::VARCHAR AS DOUBLE)
        END AS amount
    FROM plain WHERE len(keys) = len(list_distinct(keys))
),
strings AS (
    SELECT *, substr(t, 2, len(t) - 2) AS test_id, substr(v, 2, len(v) - 2) AS variant
    FROM fields
    WHERE {_IS_STRING}
)
SELECT $partition::BIGINT AS kafka_partition, kafka_offset, substr(e, 2, len(e) - 2) AS event_id,
    substr(k, 2, len(k) - 2) AS event_type, test_id, variant,
    substr(u, 2, len(u) - 2) AS user_id, us AS event_us,
    us - (us - $origin_us) % $size_us AS window_us,
    amount AS value, NULL::VARCHAR AS properties, i
FROM strings
WHERE us BETWEEN $earliest_us AND $latest_us
  AND (x IS NULL OR abs(amount) <= {MAX_ABS_VALUE!r})  -- NULL: not a number
  AND (p IS NULL OR p = '{{}}')
  AND (test_id, variant) IN (SELECT * FROM known_variants)
"""


class MessageBatch:
    """A chunk's messages as the reading thread collects them: the values DuckDB may parse
    (ASCII, one line, not oversized) with their offsets, and the others aside."""

    def __init__(self, partition: int, max_bytes: int) -> None:
        self.partition = partition
        self.max_bytes = max_bytes
        self.lines: list[bytes] = []
        self.offsets: list[int] = []
        self.others: list[tuple[int, bytes | None]] = []

    def __len__(self) -> int:
        return len(self.lines) + len(self.others)

    def add(self, messages: list[Message]) -> None:
        values = [m.value() for m in messages]
        offsets = [m.offset() for m in messages]
        try:  # the usual batch, checked whole at C speed; None (no value) raises TypeError
            if max(map(len, values)) <= self.max_bytes:
                joined = b"\n".join(values)
                if joined.isascii() and joined.count(b"\n") == len(values) - 1:
                    self.lines.extend(values)
                    self.offsets.extend(offsets)
                    return
        except TypeError:
            pass
        for value, offset in zip(values, offsets, strict=True):
            if (
                value is not None
                and len(value) <= self.max_bytes
                and value.isascii()
                and b"\n" not in value
            ):
                self.lines.append(value)
                self.offsets.append(offset)
            else:
                self.others.append((offset, value))


class BatchParser:
    """Parses a MessageBatch into a temp table of events in EventColumns' shape (NULL for no
    value), and gives back the rejected messages with the validator's reasons."""

    def __init__(self, validator: EventValidator) -> None:
        self.validator = validator

    def parse_into(
        self, connection: duckdb.DuckDBPyConnection, batch: MessageBatch, table: str
    ) -> list[tuple[int, int, bytes | None, str]]:
        """Create temp table `table` of the batch's valid events; return the rejected messages
        as (partition, offset, raw, reason)."""
        validator = self.validator
        connection.execute(
            "CREATE OR REPLACE TEMP TABLE known_variants (test_id VARCHAR, variant VARCHAR)"
        )
        connection.executemany(
            "INSERT INTO known_variants VALUES (?, ?)", sorted(validator.variant_pairs)
        )
        connection.register(
            "message_offsets", {"kafka_offset": np.array(batch.offsets, dtype=np.int64)}
        )
        try:
            connection.execute(
                _PARSE.replace("{table}", table),
                {
                    "lines": b"\n".join(batch.lines).decode("ascii"),
                    "count": len(batch.lines),
                    "partition": batch.partition,
                    "origin_us": validator.grid.origin_us,
                    "size_us": validator.grid.size_us,
                    "earliest_us": validator.earliest_us,
                    "latest_us": validator.latest_us,
                },
            )
        finally:
            connection.unregister("message_offsets")
        unvouched = [i for (i,) in connection.execute(
            f"SELECT i FROM range(?) AS r(i) WHERE i NOT IN (SELECT i FROM {table})",
            [len(batch.lines)],
        ).fetchall()]  # fmt: skip
        connection.execute(f"ALTER TABLE {table} DROP COLUMN i")
        others = [(batch.offsets[i], batch.lines[i]) for i in unvouched] + batch.others
        return self._validate(connection, batch.partition, others, table)

    def _validate(
        self,
        connection: duckdb.DuckDBPyConnection,
        partition: int,
        messages: list[tuple[int, bytes | None]],
        table: str,
    ) -> list[tuple[int, int, bytes | None, str]]:
        """EventValidator on the messages the SQL did not vouch for: the valid ones added to
        `table`, the rejected ones returned."""
        columns = EventColumns()
        rejected = []
        for offset, raw in messages:
            reason = self.validator.validate_into(raw, partition, offset, columns)
            if reason is not None:
                rejected.append((partition, offset, raw, reason))
        if len(columns):
            incoming = columns.arrays()
            connection.register("validated_events", incoming)
            try:
                properties = "properties" if "properties" in incoming else "NULL::VARCHAR"
                connection.execute(
                    f"INSERT INTO {table} SELECT kafka_partition, kafka_offset, event_id, "
                    "event_type, test_id, variant, user_id, event_us, window_us, value, "
                    f"{properties} FROM validated_events"
                )
            finally:
                connection.unregister("validated_events")
        return rejected
