"""Console sink: one readable log line per posterior record, `Posterior ► {...}` (the record
as JSON after the prefix, so a line can be read back by whoever watches the log)."""

from __future__ import annotations

import logging

from diana_pipeline.sinks.records import Record, to_json
from diana_pipeline.windows import EVERY_WINDOW, WindowSpan

PREFIX = "Posterior ► "


class PosteriorLog:
    """Posterior records as log lines in one logger (in a run, the run's own log)."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log

    def write(self, records: list[Record], span: WindowSpan = EVERY_WINDOW) -> int:
        """Log every record; returns how many. A log only grows: re-materialised windows are
        logged again, so `span` changes nothing."""
        for record in records:
            self.log.info(PREFIX + to_json(record))
        return len(records)
