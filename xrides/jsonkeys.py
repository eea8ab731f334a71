"""JSON objects with a key twice are refused, not guessed at.

Parsers disagree on which duplicate wins (orjson and the standard library keep the last, others the
first), so a document whose meaning depends on the parser is an error wherever the platform reads
JSON: ride bodies (``ingest_service/body.py``) and query documents (``query_dsl/parse_json.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def pairs_hook(error: Callable[[str], Exception]) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """An ``object_pairs_hook`` for ``json.loads`` that raises ``error(message)`` on a repeated key."""

    def build(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise error(
                    f"duplicate key {key[:40]!r} in a JSON object: which value was meant is ambiguous"
                )
            out[key] = value
        return out

    return build
