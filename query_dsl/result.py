"""Results: typed columns (each saying whether it is exact), rows, and the steps shared by backends.

Backends hand over raw values; here they become the same Python values whatever the source
(time buckets as ISO 8601 in the bucket's zone, geohash cells as strings, ratios as floats), and
Elasticsearch's buckets get the having/order/limit that SQL does in the database, with the same
null and tie-breaking rules.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from query_dsl import guards
from query_dsl.catalog import ValueType
from query_dsl.compile_es import MISSING
from query_dsl.errors import QueryLimitExceeded, QueryTimeout
from query_dsl.plan import BAnd, BCompare, BFilter, BIn, BNot, BNull, BOr, DimPlan, MeasurePlan, Plan
from query_dsl.timerange import ResolvedRange

Row = dict[str, Any]
GEOHASH_ALPHABET = "0123456789bcdefghjkmnpqrstuvwxyz"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str
    exact: bool
    tolerance: float = 0.0  # relative error an approximate column may have

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "exact": self.exact}
        if not self.exact:
            out["tolerance"] = self.tolerance
        return out


@dataclass(slots=True)
class Result:
    backend: str
    range: ResolvedRange
    columns: list[Column]
    rows: list[list[Any]]
    previous_range: ResolvedRange | None = None
    warnings: list[str] = field(default_factory=list)
    elapsed_ms: float = 0.0
    backend_reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "backend": self.backend,
            "backend_reason": self.backend_reason,
            "range": self.range.as_dict(),
            "columns": [c.as_dict() for c in self.columns],
            "rows": self.rows,
            "warnings": self.warnings,
        }
        if self.previous_range is not None:
            out["previous_range"] = self.previous_range.as_dict()
        return out


# Values -----------------------------------------------------------------------------------


def geohash(lat_cell: int, lon_cell: int, precision: int) -> str:
    """The geohash of a cell given its row (latitude) and column (longitude) indices."""
    total = 5 * precision
    lat_bits, lon_bits = total // 2, (total + 1) // 2
    bits = 0
    for t in range(total):  # the first bit is longitude's, then they alternate
        cell, width = (lon_cell, lon_bits) if t % 2 == 0 else (lat_cell, lat_bits)
        bits = (bits << 1) | ((cell >> (width - 1 - t // 2)) & 1)
    return "".join(GEOHASH_ALPHABET[(bits >> (5 * (precision - 1 - i))) & 31] for i in range(precision))


def geohash_cells(text: str) -> tuple[int, int]:
    """The inverse of :func:`geohash`: (latitude row, longitude column)."""
    bits = 0
    for char in text:
        bits = (bits << 5) | GEOHASH_ALPHABET.index(char)
    total = 5 * len(text)
    lat = lon = 0
    for t in range(total):
        bit = (bits >> (total - 1 - t)) & 1
        if t % 2 == 0:
            lon = (lon << 1) | bit
        else:
            lat = (lat << 1) | bit
    return lat, lon


def _number(value: Any, vtype: ValueType) -> Any:
    if value is None:
        return None
    if vtype is ValueType.INTEGER:
        return int(value)
    if vtype is ValueType.BOOLEAN:
        return bool(value)
    if isinstance(value, Decimal | int | float):
        return float(value)
    return value


def bucket_time(value: datetime | int, zone: str) -> str:
    moment = datetime.fromtimestamp(value / 1000, UTC) if isinstance(value, int) else value
    return moment.astimezone(ZoneInfo(zone)).isoformat()


def dim_value(d: DimPlan, raw: Any) -> Any:
    if d.kind == "time":
        assert d.zone is not None
        return bucket_time(raw, d.zone)
    if raw is None or (raw == MISSING and not isinstance(raw, bool)):
        return None
    return _number(raw, d.value_type)


def measure_value(m: MeasurePlan, raw: Any) -> Any:
    return _number(raw, m.value_type)


def sql_rows(plan: Plan, labels: tuple[str, ...], records: list[Any]) -> list[Row]:
    rows = []
    for record in records:
        values = dict(zip(labels, record, strict=True))
        row: Row = {}
        for i, d in enumerate(plan.dimensions):
            if d.kind == "geo":
                row[d.name] = geohash(int(values[f"d{i}a"]), int(values[f"d{i}b"]), d.precision)
            else:
                row[d.name] = dim_value(d, values[f"d{i}"])
        for i, m in enumerate(plan.measures):
            row[m.name] = measure_value(m, values[f"m{i}"])
        rows.append(row)
    return rows


def _es_measure(m: MeasurePlan, agg: dict[str, Any], count: int) -> Any:
    if m.ratio is not None:
        return None if count == 0 else (agg.get("value") or 0.0) / count
    if m.fn == "count":
        return count
    if m.fn == "percentile":
        return next(iter(agg["values"].values()), None)
    if m.fn == "sum":
        return agg.get("value") or 0
    return agg.get("value")


def _es_leaf(plan: Plan, bucket: dict[str, Any], keys: list[Any]) -> Row:
    row: Row = {}
    for d, key in zip(plan.dimensions, keys, strict=True):
        row[d.name] = key if d.kind == "geo" else dim_value(d, key)
    count = bucket["doc_count"]
    for i, m in enumerate(plan.measures):
        row[m.name] = measure_value(m, _es_measure(m, bucket.get(f"m{i}", {}), count))
    return row


def es_rows(plan: Plan, response: dict[str, Any], limits: guards.Limits) -> list[Row]:
    if response.get("timed_out"):
        raise QueryTimeout(f"Elasticsearch timed out after {limits.timeout_s:g} s")
    rows: list[Row] = []
    root = {**response.get("aggregations", {}), "doc_count": response["hits"]["total"]["value"]}

    def walk(bucket: dict[str, Any], level: int, keys: list[Any]) -> None:
        if level == len(plan.dimensions):
            rows.append(_es_leaf(plan, bucket, keys))
            if len(rows) > limits.max_groups:
                raise guards.too_many_groups(limits, "elasticsearch")
            return
        # No index matched the range (an empty period of a comparison): no aggregation, no groups.
        agg = bucket.get(f"d{level}")
        if agg is None:
            return
        if len(agg["buckets"]) > limits.max_groups or agg.get("sum_other_doc_count", 0) > 0:
            raise guards.too_many_groups(limits, "elasticsearch")
        for child in agg["buckets"]:
            walk(child, level + 1, [*keys, child["key"]])

    walk(root, 0, [])
    return rows


# Having, order, limit (Elasticsearch) -----------------------------------------------------

_TESTS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
}


def holds(f: BFilter, row: Row) -> bool:
    """Two-valued, as in SQL with COALESCE(..., FALSE): a comparison with null is false."""
    if isinstance(f, BAnd):
        return all(holds(x, row) for x in f.items)
    if isinstance(f, BOr):
        return any(holds(x, row) for x in f.items)
    if isinstance(f, BNot):
        return not holds(f.item, row)
    value = row.get(f.target.name)
    if isinstance(f, BNull):
        return (value is not None) if f.negated else (value is None)
    if isinstance(f, BIn):
        return (value in f.values) != f.negated if value is not None else f.negated
    assert isinstance(f, BCompare)
    if value is None:
        return f.op == "ne"
    return bool(_TESTS[f.op](value, f.value))


def sort_key(plan: Plan, column: MeasurePlan | DimPlan, value: Any) -> Any:
    if isinstance(column, DimPlan) and column.kind == "geo" and value is not None:
        return geohash_cells(value)  # as SQL orders cells: by row (south to north), then column
    return value


def order_rows(plan: Plan, rows: list[Row]) -> list[Row]:
    keys: list[tuple[MeasurePlan | DimPlan, bool]] = list(plan.order)
    named = {c.name for c, _ in keys}
    keys.extend((d, False) for d in plan.dimensions if d.name not in named)

    def compare(a: Row, b: Row) -> int:
        for column, desc in keys:
            x, y = sort_key(plan, column, a[column.name]), sort_key(plan, column, b[column.name])
            if x == y:
                continue
            if x is None or y is None:  # NULLS LAST either way
                return 1 if x is None else -1
            less = x < y
            return (1 if less else -1) if desc else (-1 if less else 1)
        return 0

    return sorted(rows, key=functools.cmp_to_key(compare))


def apply_tail(plan: Plan, rows: list[Row]) -> list[Row]:
    if plan.having is not None:
        rows = [r for r in rows if holds(plan.having, r)]
    rows = order_rows(plan, rows)
    return rows if plan.limit is None else rows[: plan.limit]


def check_rows(rows: list[Row], plan: Plan, limits: guards.Limits, backend: str) -> None:
    if plan.limit is None and len(rows) > limits.max_rows:
        raise QueryLimitExceeded(
            f"the result has more than {limits.max_rows} rows on {backend}: add a limit or filter more",
            max_rows=limits.max_rows,
        )


# Shaping ----------------------------------------------------------------------------------


def columns(plan: Plan, backend: str) -> list[Column]:
    out = [Column(d.name, d.value_type.value, True) for d in plan.dimensions]
    for m in plan.measures:
        exact = not (backend == "elasticsearch" and m.approximate_on_es)
        tolerance = 0.0 if exact else m.tolerance
        out.append(Column(m.name, m.value_type.value, exact, tolerance))
        if plan.previous is not None:
            out.append(Column(f"{m.name}_previous", m.value_type.value, exact, tolerance))
            out.append(Column(f"{m.name}_change", ValueType.NUMBER.value, exact, tolerance * 2))
    return out


def merge_previous(plan: Plan, rows: list[Row], previous: list[Row]) -> list[Row]:
    """Each row gets ``<measure>_previous`` and ``<measure>_change`` ((now - before) / before)."""
    index = {tuple(r[d.name] for d in plan.dimensions): r for r in previous}
    for row in rows:
        before = index.get(tuple(row[d.name] for d in plan.dimensions), {})
        for m in plan.measures:
            old, new = before.get(m.name), row[m.name]
            row[f"{m.name}_previous"] = old
            row[f"{m.name}_change"] = None if not old or new is None else (new - old) / old
    return rows


def table(plan: Plan, backend: str, rows: list[Row]) -> tuple[list[Column], list[list[Any]]]:
    cols = columns(plan, backend)
    return cols, [[row.get(c.name) for c in cols] for row in rows]
