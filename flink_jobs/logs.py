"""Log lines (the ``logs`` topic, written by xrides/logs.py) as index actions for ``logs-YYYY.MM.DD``.

The job only reshapes: the day comes from ``@timestamp``, the document id from ``event.id`` (a
hash of the line when a producer set none), so replaying the topic rewrites the same documents.
Pure Python, no PyFlink.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from xrides.search.templates import LOG_PROPERTIES

# Top-level names the template maps as objects: a line whose ``extra=`` used one of them for a
# plain value (``error="..."``) would be refused, so such a value is moved aside.
_OBJECT_FIELDS = frozenset(name for name, spec in LOG_PROPERTIES.items() if "properties" in spec)


def log_action(raw: bytes, prefix: str) -> dict[str, Any]:
    """One ``index`` action for a JSON log line, or ``dead`` when it is not one."""
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return {"op": "dead", "reason": f"log line is not JSON: {exc}"[:1000], "raw": raw.decode("latin-1")}
    timestamp = line.get("@timestamp") if isinstance(line, dict) else None
    if not isinstance(timestamp, str) or len(timestamp) < 10 or timestamp[4] != "-":
        return {"op": "dead", "reason": "log line without an ISO @timestamp", "raw": raw.decode("latin-1")}
    doc: dict[str, Any] = {}
    for key, value in line.items():
        moved = key in _OBJECT_FIELDS and not isinstance(value, dict)
        doc[f"{key}_value" if moved else key] = value
    event_id = doc.get("event.id")
    if not isinstance(event_id, str) or not event_id:
        event_id = hashlib.sha1(raw, usedforsecurity=False).hexdigest()
    day = timestamp[:10].replace("-", ".")
    # Log lines never change: version 1 makes a replayed line a no-op (external_gte).
    return {"op": "index", "index": f"{prefix}{day}", "id": event_id, "version": 1, "doc": doc}
