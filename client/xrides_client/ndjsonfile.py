"""Rides from NDJSON, one JSON object per line, sent as they are (the platform judges them)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import TextIO

from xrides_client.csvfile import Row, Unreadable


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def read_ndjson(stream: TextIO, defaults: Mapping[str, object] | None = None) -> Iterator[Row | Unreadable]:
    """``defaults`` fill fields a line does not have (see :func:`~xrides_client.csvfile.read_csv`)."""
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line, parse_constant=_no_constants)
        except ValueError as exc:
            yield Unreadable(number, f"not JSON: {exc}")
            continue
        if not isinstance(value, dict):
            yield Unreadable(number, f"a JSON {type(value).__name__}, not an object")
            continue
        for key, default in (defaults or {}).items():
            value.setdefault(key, default)
        yield value
