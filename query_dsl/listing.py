"""Listings of rides (``select``): their order, and the cursor that pages through them.

Pagination is by keyset, never by offset: a page ends at a row, and the next page starts after that
row's sort values. So a page costs the same however deep it is, rows added meanwhile never shift a
page, and the same cursor works on every engine (SQL ``WHERE (keys) > (values)``, Elasticsearch
``search_after``). The sort always ends with ``booking_id``, the ride's key, so every row has one
place. Only fields that always have a value can order a listing (a null has no place in a keyset).

The cursor is opaque to clients: base64 of the query's fingerprint (the canonical query without
its cursor and limit), the resolved time range (a relative range such as ``last 2 days`` is pinned
by the first page, so later pages do not slide), and the last row's sort values. A cursor from
another query is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import replace
from datetime import datetime
from typing import Any

from query_dsl.ast import Query
from query_dsl.catalog import FIELDS, FieldDef, ValueType
from query_dsl.errors import QueryError
from query_dsl.normalize import canonical
from query_dsl.timerange import ResolvedRange, iso_utc

KEY = FIELDS["booking_id"]
MAX_CURSOR_CHARS = 2_000

OrderKeys = tuple[tuple[FieldDef, bool], ...]


def order_keys(requested: OrderKeys, time_field: FieldDef | None = None) -> OrderKeys:
    """The requested order (default: the time field, oldest first), then ``booking_id``."""
    for i, (f, _) in enumerate(requested):
        if f.nullable:
            raise QueryError(
                f"a listing is ordered by fields that always have a value; {f.name} can be null",
                f"$.order[{i}]",
            )
    keys = requested or ((time_field or FIELDS["from_date"], False),)
    if not any(f is KEY for f, _ in keys):
        keys = (*keys, (KEY, False))
    return keys


def fingerprint(query: Query, params: dict[str, Any]) -> str:
    body = canonical(replace(query, cursor=None, limit=None), params or None)
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]


def _plain(value: Any) -> Any:
    return iso_utc(value) if isinstance(value, datetime) else value


def encode_cursor(
    query: Query, params: dict[str, Any], time_range: ResolvedRange, last: tuple[Any, ...]
) -> str:
    body = {
        "q": fingerprint(query, params),
        "r": [iso_utc(time_range.start), iso_utc(time_range.end)],
        "k": [_plain(v) for v in last],
    }
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _typed(f: FieldDef, value: Any) -> Any:
    ok = {
        ValueType.INTEGER: isinstance(value, int) and not isinstance(value, bool),
        ValueType.NUMBER: isinstance(value, int | float) and not isinstance(value, bool),
        ValueType.BOOLEAN: isinstance(value, bool),
        ValueType.STRING: isinstance(value, str) and (not f.choices or value in f.choices),
        ValueType.TIMESTAMP: isinstance(value, str),
    }[f.type]
    if not ok:
        raise ValueError(f.name)
    if f.type is ValueType.TIMESTAMP:
        return datetime.fromisoformat(value)
    return float(value) if f.type is ValueType.NUMBER else value


def _check_cursor(ok: bool) -> None:
    if not ok:
        raise ValueError("a cursor of another query")


def decode_cursor(
    query: Query, params: dict[str, Any], keys: OrderKeys
) -> tuple[ResolvedRange, tuple[Any, ...]]:
    """The pinned range and the keyset of a cursor, or 400 if it is not one of this query's."""
    text = query.cursor or ""
    if len(text) > MAX_CURSOR_CHARS:
        raise QueryError("the cursor is too long to be one this service made", "$.cursor")
    try:
        body = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        start, end = (datetime.fromisoformat(x) for x in body["r"])
        values = body["k"]
        _check_cursor(body["q"] == fingerprint(query, params) and isinstance(values, list))
        after = tuple(_typed(f, v) for (f, _), v in zip(keys, values, strict=True))
    except (ValueError, KeyError, TypeError, binascii.Error, json.JSONDecodeError) as exc:
        raise QueryError(
            "the cursor is not one this query returned (use the next_cursor of the same query's "
            "previous page)",
            "$.cursor",
        ) from exc
    return ResolvedRange(start, end, query.zone, f"{start.isoformat()} .. {end.isoformat()} (cursor)"), after
