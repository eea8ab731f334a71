"""Cost guards: every limit a query must stay within, with an error that says which and why.

Static limits are checked while parsing and planning (before any backend is touched); the
result-size limits are enforced by the backends (``max_groups`` + 1 rows are fetched so an
overflow is seen, never silently cut).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from query_dsl.errors import QueryLimitExceeded

MAX_TEXT_CHARS = 20_000
MAX_DOCUMENT_NODES = 5_000
MAX_DOCUMENT_DEPTH = 32
MAX_FILTER_DEPTH = 12
MAX_LIST_SIZE = 1_000
MAX_MEASURES = 20
MAX_DIMENSIONS = 5
MAX_RELATIVE_COUNT = 1_000
INT_LIMIT = 2**63 - 1

# The longest time range each bucket size may cover: at most a few thousand buckets per series.
MAX_SPAN = {
    "minute": timedelta(days=2),
    "hour": timedelta(days=93),
    "day": timedelta(days=3 * 366),
    "week": timedelta(days=10 * 366),
    "month": timedelta(days=50 * 366),
}
MAX_RANGE = timedelta(days=50 * 366)


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits that depend on the deployment (settings); the defaults suit the local stack."""

    max_groups: int = 10_000  # result groups before having/limit (Elasticsearch buckets)
    max_rows: int = 10_000  # rows returned
    timeout_s: float = 30.0  # PostgreSQL statement_timeout, Elasticsearch timeout, DuckDB interrupt


def _refuse(message: str, path: str = "", **details: Any) -> QueryLimitExceeded:
    return QueryLimitExceeded(message, path, **details)


def check_text_size(text: str) -> None:
    if len(text) > MAX_TEXT_CHARS:
        raise _refuse(f"the query is {len(text)} characters long; the limit is {MAX_TEXT_CHARS}")


def check_depth(depth: int, path: str = "") -> None:
    if depth > MAX_FILTER_DEPTH:
        raise _refuse(f"filters nest deeper than {MAX_FILTER_DEPTH} levels", path)


def check_list_size(size: int, field: str, path: str = "") -> None:
    if size > MAX_LIST_SIZE:
        raise _refuse(f"the list for {field} has {size} values; the limit is {MAX_LIST_SIZE}", path)


def check_int_literal(value: int, what: str, path: str = "") -> int:
    if not -INT_LIMIT <= value <= INT_LIMIT:
        raise _refuse(f"{what} is outside the 64-bit integer range", path)
    return value


def check_relative_count(count: int, path: str = "") -> None:
    if not 1 <= count <= MAX_RELATIVE_COUNT:
        raise _refuse(f"a relative range counts 1..{MAX_RELATIVE_COUNT} units, not {count}", path)


def check_document(doc: object) -> None:
    """Depth and size of a decoded JSON/YAML document, before it is interpreted.

    Counting nodes also stops YAML alias bombs: a shared subtree is counted each time it is reached.
    """
    budget = [MAX_DOCUMENT_NODES]

    def walk(node: object, depth: int) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise _refuse(f"the query document has more than {MAX_DOCUMENT_NODES} elements")
        if depth > MAX_DOCUMENT_DEPTH:
            raise _refuse(f"the query document nests deeper than {MAX_DOCUMENT_DEPTH} levels")
        if isinstance(node, dict):
            for value in node.values():
                walk(value, depth + 1)
        elif isinstance(node, list):
            for value in node:
                walk(value, depth + 1)

    walk(doc, 0)


def check_counts(measures: int, dimensions: int) -> None:
    if measures == 0:
        raise QueryLimitExceeded("a query needs at least one measure", "$.measures")
    if measures > MAX_MEASURES:
        raise _refuse(f"{measures} measures; the limit is {MAX_MEASURES}", "$.measures")
    if dimensions > MAX_DIMENSIONS:
        raise _refuse(f"{dimensions} dimensions; the limit is {MAX_DIMENSIONS}", "$.dimensions")


def check_span(span: timedelta, units: list[str]) -> None:
    if span > MAX_RANGE:
        raise _refuse(f"the time range spans {span.days} days; the limit is {MAX_RANGE.days}", "$.time_range")
    for unit in units:
        if span > MAX_SPAN[unit]:
            raise _refuse(
                f"{unit} buckets may cover at most {MAX_SPAN[unit].days} days; this range spans "
                f"{span.total_seconds() / 86400:g} days: use a coarser bucket or a shorter range",
                "$.time_range",
            )


def check_limit(limit: int | None, limits: Limits) -> None:
    if limit is not None and not 1 <= limit <= limits.max_rows:
        raise _refuse(f"limit must be 1..{limits.max_rows}, not {limit}", "$.limit")


def too_many_groups(limits: Limits, backend: str) -> QueryLimitExceeded:
    return _refuse(
        f"the query has more than {limits.max_groups} groups on {backend}: filter more, use coarser "
        "buckets, or add a limit",
        max_groups=limits.max_groups,
    )
