"""A plan as Elasticsearch requests: a bool filter, and bucket aggregations or a sorted search.

- **Groups** are a ``composite`` aggregation (terms, ``date_histogram`` with ``time_zone``,
  ``histogram`` sources) read page by page with ``after``, so a top N over a field with more than
  10,000 values (``user_id``) is exact and never hits ``search.max_buckets``: every group is read
  (up to ``query_es_max_groups``, checked first by the cost estimate) and having/order/limit are
  applied to all of them in :mod:`query_dsl.result`. ``geohash_grid`` cannot be a composite
  source, so a query with a geohash dimension nests ``terms`` / ``geohash_grid`` aggregations as
  before (at most ``query_max_groups`` per level).
- **Measures** sit in the leaves; a filtered measure is a ``filter`` aggregation around its metric.
  Ratios and calcs are computed from the leaves. ``cardinality`` and ``percentiles`` are
  approximate.
- **A listing** is a search sorted by its keys (then ``booking_id``) with ``search_after``.
- **Customer and driver fields** (window functions over the range) have no aggregation: the
  range's rides are scanned and the DuckDB statement runs over them (:mod:`query_dsl.backends`).

Nothing here needs a script (the cluster has none): derived fields are stored by the Flink job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from query_dsl.catalog import RANGE_FIELD, FieldDef, ValueType
from query_dsl.errors import QueryError
from query_dsl.plan import BAnd, BCompare, BFilter, BIn, BNot, BNull, BOr, DimPlan, MeasurePlan, Plan
from query_dsl.timerange import ResolvedRange, iso_utc
from xrides.ride import RIDE_FIELDS

MISSING = -1  # nested terms bucket of rides without a value (ids are never negative)
MISSING_NUMBER = -(2.0**52)  # nested histogram bucket of rides without the value
MISSING_TIME = "1970-01-01T00:00:00Z"  # nested date_histogram bucket of rides without the time
MISSING_TIME_BEFORE_MS = 366 * 86_400_000  # keys before this are that bucket (no ride is from 1970)
CARDINALITY_PRECISION = 40_000  # Elasticsearch's maximum: exact-ish below it
# Per group, a cardinality holds ~8 bytes x its threshold on every shard: 40,000 over thousands of
# groups trips the request circuit breaker (measured: 400 MB on one day's index for 1,200 groups).
# Grouped distinct counts take 10,000 (exact-ish below it, HyperLogLog++ past it, within the
# declared 1 %), and a page of them is cut to CARDINALITY_PAGE_BYTES per shard.
GROUPED_CARDINALITY_PRECISION = 10_000
CARDINALITY_PAGE_BYTES = 16 * 1024 * 1024
TDIGEST_COMPRESSION = 200
MAX_LISTED_INDICES = 93  # past this, a wildcard (the range filter still limits the shards searched)
MAX_BUCKETS = 65_536  # search.max_buckets: a page of groups times their filter aggregations stays below


@dataclass(frozen=True, slots=True)
class CompiledEs:
    index: str
    body: dict[str, Any]
    mode: str = "aggregate"  # aggregate | composite | listing | scan

    def explain(self) -> dict[str, Any]:
        return {"index": self.index, "mode": self.mode, "body": self.body}


def es_value(value: Any) -> Any:
    return iso_utc(value) if isinstance(value, datetime) else value


def daily_indices(prefix: str, time_range: ResolvedRange) -> str:
    """The ``<prefix>YYYY.MM.DD`` indices (UTC days) that can hold the range."""
    first = time_range.start.astimezone(UTC).date()
    last = (time_range.end - timedelta(microseconds=1)).astimezone(UTC).date()
    days = (last - first).days + 1
    if days > MAX_LISTED_INDICES:
        return f"{prefix}*"
    return ",".join(f"{prefix}{(first + timedelta(days=i)).strftime('%Y.%m.%d')}" for i in range(days))


def indices(plan: Plan, prefix: str, time_range: ResolvedRange) -> str:
    """Indices are days of the pickup: a range on another time field may find rides in any of them."""
    if plan.time_field.name == RANGE_FIELD:
        return daily_indices(prefix, time_range)
    return f"{prefix}*"


def es_query(f: BFilter) -> dict[str, Any]:
    if isinstance(f, BAnd):
        return {"bool": {"filter": [es_query(x) for x in f.items]}}
    if isinstance(f, BOr):
        return {"bool": {"should": [es_query(x) for x in f.items], "minimum_should_match": 1}}
    if isinstance(f, BNot):
        return {"bool": {"must_not": [es_query(f.item)]}}
    if not isinstance(f.target, FieldDef):
        raise QueryError("having is evaluated on the buckets, not in the query", "$.having")
    name = f.target.es
    if isinstance(f, BNull):
        exists = {"exists": {"field": name}}
        return exists if f.negated else {"bool": {"must_not": [exists]}}
    if isinstance(f, BIn):
        terms = {"terms": {name: [es_value(v) for v in f.values]}}
        return {"bool": {"must_not": [terms]}} if f.negated else terms
    assert isinstance(f, BCompare)
    value = es_value(f.value)
    if f.op == "eq":
        return {"term": {name: value}}
    if f.op == "ne":
        return {"bool": {"must_not": [{"term": {name: value}}]}}
    return {"range": {name: {f.op: value}}}


def range_filters(plan: Plan, time_range: ResolvedRange) -> list[dict[str, Any]]:
    span = {"gte": iso_utc(time_range.start), "lt": iso_utc(time_range.end)}
    filters: list[dict[str, Any]] = [{"range": {plan.time_field.es: span}}]
    if plan.filter is not None:
        filters.append(es_query(plan.filter))
    return filters


def _nested_agg(d: DimPlan, size: int) -> dict[str, Any]:
    if d.kind == "time":
        assert d.field is not None
        dated: dict[str, Any] = {
            "field": d.field.es,
            "calendar_interval": d.unit,
            "time_zone": d.zone,
            "min_doc_count": 1,
        }
        if d.field.nullable:  # SQL groups a missing time as null; Elasticsearch would drop the ride
            dated["missing"] = MISSING_TIME
        return {"date_histogram": dated}
    if d.kind == "geo":
        assert d.point is not None
        return {
            "geohash_grid": {"field": d.point.es, "precision": d.precision, "size": size, "shard_size": size}
        }
    assert d.field is not None
    if d.kind == "histogram":
        numbered: dict[str, Any] = {"field": d.field.es, "interval": d.width, "min_doc_count": 1}
        if d.field.nullable:
            numbered["missing"] = MISSING_NUMBER
        return {"histogram": numbered}
    terms: dict[str, Any] = {"field": d.field.es, "size": size, "shard_size": size}
    if d.field.nullable:
        terms["missing"] = MISSING
    return {"terms": terms}


def _composite_source(d: DimPlan) -> dict[str, Any]:
    assert d.field is not None
    if d.kind == "time":
        return {
            "date_histogram": {
                "field": d.field.es,
                "calendar_interval": d.unit,
                "time_zone": d.zone,
                "missing_bucket": d.field.nullable,
            }
        }
    if d.kind == "histogram":
        return {"histogram": {"field": d.field.es, "interval": d.width, "missing_bucket": d.field.nullable}}
    return {"terms": {"field": d.field.es, "missing_bucket": d.field.nullable}}


def _metric(m: MeasurePlan, grouped: bool) -> dict[str, Any] | None:
    """The metric aggregation of a measure (None: the bucket's doc_count is the answer)."""
    if m.ratio is not None:
        return {"sum": {"field": m.ratio.flag}}
    if m.fn == "count":
        return None
    assert m.field is not None
    if m.fn == "count_distinct":
        threshold = GROUPED_CARDINALITY_PRECISION if grouped else CARDINALITY_PRECISION
        return {"cardinality": {"field": m.field.es, "precision_threshold": threshold}}
    if m.fn == "percentile":
        assert m.p is not None
        return {
            "percentiles": {
                "field": m.field.es,
                "percents": [m.p],
                "tdigest": {"compression": TDIGEST_COMPRESSION},
            }
        }
    if m.field.type is ValueType.BOOLEAN:
        raise QueryError(f"{m.fn} does not apply to {m.field.name}")
    return {m.fn: {"field": m.field.es}}


def metric_aggs(plan: Plan) -> dict[str, Any]:
    aggs: dict[str, Any] = {}
    for i, m in enumerate(plan.measures):
        if m.fn == "calc":
            continue  # arithmetic over the others, in Python
        metric = _metric(m, bool(plan.dimensions))
        if m.where is not None:
            aggs[f"m{i}"] = {"filter": es_query(m.where), **({"aggs": {"v": metric}} if metric else {})}
        elif metric is not None:
            aggs[f"m{i}"] = metric
    return aggs


def composite_page_size(plan: Plan, max_groups: int) -> int:
    """Groups per request: filter aggregations are buckets too, and a request holds at most
    ``search.max_buckets`` of them."""
    per_group = 1 + sum(1 for m in plan.measures if m.where is not None)
    size = min(10_000, max_groups + 1, (MAX_BUCKETS - 1) // per_group)
    # distinct counts per group: the page fits the breaker's budget (GROUPED_CARDINALITY_PRECISION)
    distinct = sum(1 for m in plan.measures if m.fn == "count_distinct")
    if distinct:
        size = min(size, CARDINALITY_PAGE_BYTES // (distinct * GROUPED_CARDINALITY_PRECISION * 8))
    return max(1, size)


def _base(plan: Plan, timeout_s: float, time_range: ResolvedRange) -> dict[str, Any]:
    return {
        "size": 0,
        "track_total_hits": True,
        "timeout": f"{int(timeout_s * 1000)}ms",
        "query": {"bool": {"filter": range_filters(plan, time_range)}},
    }


def compile_es(
    plan: Plan, prefix: str, max_groups: int, timeout_s: float, time_range: ResolvedRange
) -> CompiledEs:
    """The aggregation request (a composite one reads further pages with ``after``)."""
    index = indices(plan, prefix, time_range)
    if plan.windows:
        return CompiledEs(index, scan_body(plan, time_range), "scan")
    if plan.listing:
        return CompiledEs(index, listing_body(plan, timeout_s, time_range), "listing")
    body = _base(plan, timeout_s, time_range)
    metrics = metric_aggs(plan)
    if plan.dimensions and not any(d.kind == "geo" for d in plan.dimensions):
        composite = {
            "size": composite_page_size(plan, max_groups),
            "sources": [{f"d{i}": _composite_source(d)} for i, d in enumerate(plan.dimensions)],
        }
        body["aggs"] = {"groups": {"composite": composite, **({"aggs": metrics} if metrics else {})}}
        return CompiledEs(index, body, "composite")
    aggs = metrics
    for i in reversed(range(len(plan.dimensions))):
        level = _nested_agg(plan.dimensions[i], max_groups + 1)
        if aggs:
            level["aggs"] = aggs
        aggs = {f"d{i}": level}
    if aggs:
        body["aggs"] = aggs
    return CompiledEs(index, body)


# Listings and scans -------------------------------------------------------------------------


def sort_value(f: FieldDef, value: Any) -> Any:
    """A cursor value as Elasticsearch sorts it: dates in epoch milliseconds, booleans as 0/1."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, bool):
        return int(value)
    return value


def listing_body(plan: Plan, timeout_s: float, time_range: ResolvedRange) -> dict[str, Any]:
    keys = [(f, desc) for f, desc in plan.order if isinstance(f, FieldDef)]
    assert plan.limit is not None
    body: dict[str, Any] = {
        "size": plan.limit + 1,
        "track_total_hits": False,
        "timeout": f"{int(timeout_s * 1000)}ms",
        "query": {"bool": {"filter": range_filters(plan, time_range)}},
        "sort": [{f.es: {"order": "desc" if desc else "asc"}} for f, desc in keys],
        "_source": {"includes": sorted({f.es for f in (*plan.select, *(k for k, _ in keys))})},
    }
    if plan.after is not None:
        body["search_after"] = [sort_value(f, v) for (f, _), v in zip(keys, plan.after, strict=True)]
    return body


def scan_body(plan: Plan, time_range: ResolvedRange) -> dict[str, Any]:
    """The rides of the range (every one: windows are computed before the filter), raw fields only."""
    span = {"gte": iso_utc(time_range.start), "lt": iso_utc(time_range.end)}
    return {"query": {"range": {plan.time_field.es: span}}, "_source": [f.name for f in RIDE_FIELDS]}
