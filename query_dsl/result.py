"""Results: typed columns (each saying whether it is exact), rows, and the steps shared by backends.

Backends hand over raw values; here they become the same Python values whatever the source
(time buckets as ISO 8601 in the bucket's zone, geohash cells as strings, ratios as floats), and
Elasticsearch's buckets get the having/order/limit that SQL does in the database, with the same
null and tie-breaking rules. Steps every backend shares run here for all of them: filling empty
time buckets, and arithmetic between measures where the database did not do it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from query_dsl import guards
from query_dsl.ast import BinOp, Expr, Num, Ref
from query_dsl.catalog import FieldDef, ValueType
from query_dsl.compile_es import MISSING, MISSING_NUMBER, MISSING_TIME_BEFORE_MS
from query_dsl.errors import QueryBackendUnavailable, QueryLimitExceeded, QueryTimeout
from query_dsl.plan import BAnd, BCompare, BFilter, BIn, BNot, BNull, BOr, DimPlan, MeasurePlan, Plan
from query_dsl.timerange import ResolvedRange, floor_local, shift, zone_of

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
    next_cursor: str | None = None  # a listing with more rows: send it as "cursor" for the next page
    freshness: dict[str, Any] | None = None  # how recent the engine's rides are (query_dsl.freshness)

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
        if self.next_cursor is not None:
            out["next_cursor"] = self.next_cursor
        if self.freshness is not None:
            out["freshness"] = self.freshness
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


def bucket_time(value: datetime | int | str, zone: str) -> str:
    if isinstance(value, str):
        moment = datetime.fromisoformat(value)
    elif isinstance(value, int | float):
        moment = datetime.fromtimestamp(value / 1000, UTC)
    else:
        moment = value
    return moment.astimezone(ZoneInfo(zone)).isoformat()


def dim_value(d: DimPlan, raw: Any) -> Any:
    if d.kind == "time":
        assert d.zone is not None
        if raw is None or (isinstance(raw, int) and raw < MISSING_TIME_BEFORE_MS):
            return None
        return bucket_time(raw, d.zone)
    if raw is None or (raw == MISSING and not isinstance(raw, bool) and d.kind == "field"):
        return None
    if d.kind == "histogram" and raw <= MISSING_NUMBER / 2:
        return None
    return _number(raw, d.value_type)


def measure_value(m: MeasurePlan, raw: Any) -> Any:
    return _number(raw, m.value_type)


def field_value(f: FieldDef, raw: Any, zone: str) -> Any:
    """A listed field's value, the same from every engine (timestamps in the query's zone)."""
    if raw is None:
        return None
    if f.type is ValueType.TIMESTAMP:
        return bucket_time(raw, zone)
    return _number(raw, f.type)


def calc_value(expr: Expr, row: Row) -> float | None:
    """Arithmetic over a row's measures in doubles, as SQL computes it: null in, null out; x / 0 is null."""
    if isinstance(expr, Num):
        return expr.value
    if isinstance(expr, Ref):
        value = row.get(expr.name)
        return None if value is None else float(value)
    assert isinstance(expr, BinOp)
    left, right = calc_value(expr.left, row), calc_value(expr.right, row)
    if left is None or right is None:
        return None
    if expr.op == "/":
        return None if right == 0 else left / right
    value = left + right if expr.op == "+" else left - right if expr.op == "-" else left * right
    return value if math.isfinite(value) else None


def add_calcs(plan: Plan, rows: list[Row]) -> list[Row]:
    for m in plan.measures:
        if m.expr is not None:
            for row in rows:
                row[m.name] = calc_value(m.expr, row)
    return rows


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


def listing_rows(plan: Plan, records: list[Any]) -> tuple[list[Row], tuple[Any, ...] | None]:
    """SQL listing rows (``c<i>`` fields, ``k<i>`` sort keys): the page, and the last row's keys
    when there is another page (one row more than the limit was fetched)."""
    assert plan.limit is not None
    rows: list[Row] = []
    for record in records[: plan.limit]:
        rows.append({f.name: field_value(f, record[i], plan.query.zone) for i, f in enumerate(plan.select)})
    if len(records) <= plan.limit:
        return rows, None
    last = records[plan.limit - 1]
    return rows, tuple(last[len(plan.select) :])


def es_listing_rows(plan: Plan, hits: list[dict[str, Any]]) -> tuple[list[Row], tuple[Any, ...] | None]:
    assert plan.limit is not None
    rows = [
        {f.name: field_value(f, hit["_source"].get(f.es), plan.query.zone) for f in plan.select}
        for hit in hits[: plan.limit]
    ]
    if len(hits) <= plan.limit:
        return rows, None
    source = hits[plan.limit - 1]["_source"]
    keys = tuple(_key_value(f, source.get(f.es)) for f, _ in plan.order if isinstance(f, FieldDef))
    return rows, keys


def _key_value(f: FieldDef, raw: Any) -> Any:
    if f.type is ValueType.TIMESTAMP:
        return datetime.fromisoformat(raw)
    return _number(raw, f.type)


def _es_measure(m: MeasurePlan, agg: dict[str, Any], count: int) -> Any:
    """A leaf's value; ``agg`` is empty when no index matched the range (then there is no group
    but the root, and its measures are what SQL gives for no rows)."""
    if m.where is not None:  # a filter aggregation around the metric
        count = agg.get("doc_count", 0)
        agg = agg.get("v", {})
    if m.ratio is not None:
        return None if count == 0 else (agg.get("value") or 0.0) / count
    if m.fn == "count":
        return count
    if m.fn == "count_distinct":
        return agg.get("value") or 0
    if m.fn == "percentile":
        return next(iter(agg.get("values", {}).values()), None)
    if m.fn == "sum":
        return agg.get("value") or 0
    return agg.get("value")


def _es_leaf(plan: Plan, bucket: dict[str, Any], keys: list[Any]) -> Row:
    row: Row = {}
    for d, key in zip(plan.dimensions, keys, strict=True):
        row[d.name] = key if d.kind == "geo" else dim_value(d, key)
    count = bucket["doc_count"]
    for i, m in enumerate(plan.measures):
        if m.expr is None:
            row[m.name] = measure_value(m, _es_measure(m, bucket.get(f"m{i}", {}), count))
    return row


def _check_response(response: dict[str, Any], limits: guards.Limits) -> None:
    """A timed-out or partial answer is refused, never returned: Elasticsearch answers 200 with the
    shards that succeeded when others fail (a circuit breaker, a node leaving), and their groups
    would silently be missing from the result."""
    if response.get("timed_out"):
        raise QueryTimeout(f"Elasticsearch timed out after {limits.timeout_s:g} s")
    shards = response.get("_shards") or {}
    if shards.get("failed"):
        reasons = {str((f.get("reason") or {}).get("type", "unknown")) for f in shards.get("failures", [])}
        raise QueryBackendUnavailable(
            f"Elasticsearch answered from {shards.get('successful', 0)} of {shards.get('total', 0)} shards"
            f" ({', '.join(sorted(reasons)) or 'no reason given'}): a partial answer is not returned"
        )


def es_rows(plan: Plan, response: dict[str, Any], limits: guards.Limits) -> list[Row]:
    """Rows of a nested (or dimensionless) aggregation."""
    _check_response(response, limits)
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
    return add_calcs(plan, rows)


def composite_page(plan: Plan, response: dict[str, Any], limits: guards.Limits) -> tuple[list[Row], Any]:
    """One page of a composite aggregation: its rows and the key to continue after (None: done)."""
    _check_response(response, limits)
    agg = (response.get("aggregations") or {}).get("groups")
    if agg is None:  # no index matched the range
        return [], None
    rows = [
        _es_leaf(plan, bucket, [bucket["key"][f"d{i}"] for i in range(len(plan.dimensions))])
        for bucket in agg["buckets"]
    ]
    return rows, agg.get("after_key") if agg["buckets"] else None


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
    if isinstance(column, DimPlan) and column.kind == "time" and value is not None:
        return datetime.fromisoformat(value)  # instants, not their spelling in a zone
    return value


def sort_items(plan: Plan) -> list[tuple[MeasurePlan | DimPlan, bool]]:
    """Per-group columns (ascending), the requested order, then every other dimension."""
    items: list[tuple[MeasurePlan | DimPlan, bool]] = [(d, False) for d in plan.per]
    for column, desc in plan.order:
        assert isinstance(column, MeasurePlan | DimPlan)
        if column not in plan.per:
            items.append((column, desc))
    named = {c.name for c, _ in items}
    items.extend((d, False) for d in plan.dimensions if d.name not in named)
    return items


def order_rows(plan: Plan, rows: list[Row]) -> list[Row]:
    keys = sort_items(plan)

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
    """Having, order and limit in Python (Elasticsearch, and any backend once buckets are filled)."""
    if plan.having is not None:
        rows = [r for r in rows if holds(plan.having, r)]
    rows = order_rows(plan, rows)
    if plan.limit is None:
        return rows
    if not plan.per:
        return rows[: plan.limit]
    kept: list[Row] = []
    seen: dict[tuple[Any, ...], int] = {}
    for row in rows:
        group = tuple(row[d.name] for d in plan.per)
        seen[group] = seen.get(group, 0) + 1
        if seen[group] <= plan.limit:
            kept.append(row)
    return kept


def check_rows(rows: list[Row], plan: Plan, limits: guards.Limits, backend: str) -> None:
    if (plan.limit is None or plan.per) and len(rows) > limits.max_rows:
        raise QueryLimitExceeded(
            f"the result has more than {limits.max_rows} rows on {backend}: add a limit or filter more",
            max_rows=limits.max_rows,
        )


# Empty buckets ----------------------------------------------------------------------------


def time_buckets(d: DimPlan, time_range: ResolvedRange, max_buckets: int) -> list[str]:
    """Every bucket of ``d`` that overlaps the range, spelt as :func:`bucket_time` spells them.

    Days, weeks and months step through the local calendar; minutes and hours are cut from each
    instant by its own offset (as the engines cut them), so instants are sampled every quarter hour
    (every minute for minute buckets) and each bucket they fall in is kept once.
    """
    assert d.unit is not None
    assert d.zone is not None
    zone = zone_of(d.zone)
    out: dict[str, None] = {}
    for start in _bucket_starts(d, zone, time_range):
        out[bucket_time(start, d.zone)] = None
        if len(out) > max_buckets:
            raise QueryLimitExceeded(
                f"filling the empty buckets would give more than {max_buckets} rows: use a coarser "
                "bucket or a shorter range",
                "$.fill",
            )
    return list(out)


def _bucket_starts(d: DimPlan, zone: ZoneInfo, time_range: ResolvedRange) -> Iterator[datetime]:
    assert d.unit is not None
    if d.unit in ("minute", "hour"):
        step = timedelta(minutes=1 if d.unit == "minute" else 15)
        moment = time_range.start
        while moment < time_range.end:
            local = moment.astimezone(zone)
            cut = timedelta(minutes=local.minute if d.unit == "hour" else 0, seconds=local.second,
                            microseconds=local.microsecond)  # fmt: skip
            yield moment - cut
            moment = moment - cut + step if d.unit == "minute" else moment + step
        return
    local = floor_local(time_range.start, d.unit, zone)
    moment = shift(local, d.unit, 0, zone)
    count = 0
    while moment < time_range.end:
        yield moment
        count += 1
        moment = shift(local, d.unit, count, zone)


def fill_rows(plan: Plan, rows: list[Row], max_rows: int) -> list[Row]:
    """Every time bucket for every combination of the other dimensions that has rides: counts and
    sums 0, other measures null. Done before having, order and limit, the same on every engine."""
    d = plan.time_dimension
    assert d is not None
    buckets = time_buckets(d, plan.range, max_rows)
    others = [x for x in plan.dimensions if x is not d]
    present = {tuple(r[x.name] for x in plan.dimensions): r for r in rows}
    combos = list(dict.fromkeys(tuple(r[x.name] for x in others) for r in rows)) or (
        [()] if not others else []
    )
    if len(combos) * len(buckets) > max_rows:
        raise QueryLimitExceeded(
            f"filling the empty buckets would give more than {max_rows} rows: filter more or use a "
            "coarser bucket",
            "$.fill",
        )
    out: list[Row] = []
    for combo in combos:
        values = dict(zip((x.name for x in others), combo, strict=True))
        for bucket in buckets:
            values[d.name] = bucket
            key = tuple(values[x.name] for x in plan.dimensions)
            found = present.get(key)
            if found is None:
                found = dict(values)
                for m in plan.aggregates:
                    found[m.name] = 0 if m.zero_when_empty else None
            out.append(found)
    return add_calcs(plan, out)


# Shaping ----------------------------------------------------------------------------------


def columns(plan: Plan, backend: str) -> list[Column]:
    if plan.listing:
        return [Column(f.name, f.type.value, True) for f in plan.select]
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
