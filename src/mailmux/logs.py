"""Log output: the usual text lines, or one JSON object per line (`--log-format json`).

A JSON line has `ts` (UTC, ISO 8601), `level`, `logger` and `msg`, plus the
structured fields a call site passes with `extra=` (see `FIELDS`), so a log
pipeline can filter on `vendor` or `message_id` without parsing sentences.
Only the fields listed are copied: whatever else a record carries (a
library's own attributes) stays out, and mailmux never passes a body or a
key in one. The level check happens before any formatting, so a disabled
debug line costs one cached comparison.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Literal

import orjson

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

#: The structured fields a log call may carry in `extra=`.
FIELDS = ("vendor", "message_id", "outcome", "reason", "event", "latency_ms", "shape")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in FIELDS:
            found = record.__dict__.get(name)
            if found is not None:
                line[name] = found
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure(level: str, log_format: LogFormat) -> None:
    """Send every logger's records to stderr in `log_format`."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
