"""Structured logs: the client logs through ``logging.getLogger("xrides_client")`` with context in
``extra=`` (Elastic Common Schema names where one exists, ``xrides.*`` otherwise), the same
convention as the platform's own processes, so a log search joins both sides by ``request.id``.

:class:`JsonFormatter` renders those records as one JSON object per line; attach it to any handler,
or call :func:`log_json_to` (the command line does, on stderr).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, TextIO

# LogRecord's own attributes; anything else on a record came from ``extra=``.
_RESERVED = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "@timestamp": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "log.level": record.levelname.lower(),
            "log.logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["error.stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def log_json_to(stream: TextIO, level: int = logging.WARNING) -> logging.Handler:
    """Send the client's logs to ``stream`` as JSON lines; returns the handler (to remove it later)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("xrides_client")
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler
