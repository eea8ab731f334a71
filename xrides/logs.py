"""Structured JSON logs: one line per event, Elastic Common Schema field names.

Every platform process calls :func:`setup_logging` once in ``main()``. Context such as the request
id or the Kafka partition/offset goes in ``extra=`` and lands as top-level keys, so a log search
can join the API's lines with the persister's by ``request.id`` or ``booking_id``.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

# LogRecord's own attributes; anything else on a record came from ``extra=``.
_RESERVED = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "@timestamp": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "log.level": record.levelname.lower(),
            "log.logger": record.name,
            "service.name": self.service,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["error.stack_trace"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def setup_logging(service: str, level: str = "INFO") -> None:
    """Send every logger's records to stdout as JSON lines (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_xrides", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    handler._xrides = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # kafka-python is chatty at INFO about every reconnect; its warnings still come through.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    # Its selector warns about its own slow tasks under CPU contention: noise, not our events.
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
