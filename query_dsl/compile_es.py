"""A plan as an Elasticsearch search: a bool filter and a tree of bucket aggregations.

Dimensions nest (``terms`` / ``date_histogram`` with ``time_zone`` / ``geohash_grid``), metrics sit
in the leaves. Nothing here needs a script (the cluster has none): derived dimensions are stored
fields written by the Flink job, and ratios, having, order and limit are computed from the
buckets in :mod:`query_dsl.result`. ``cardinality`` and ``percentiles`` are approximate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from query_dsl.catalog import RANGE_FIELD, FieldDef, ValueType
from query_dsl.errors import QueryError
from query_dsl.plan import BAnd, BCompare, BFilter, BIn, BNot, BNull, BOr, DimPlan, MeasurePlan, Plan
from query_dsl.timerange import ResolvedRange, iso_utc

MISSING = -1  # terms bucket of rides without a value (ids are never negative)
CARDINALITY_PRECISION = 40_000  # Elasticsearch's maximum: exact-ish below it
TDIGEST_COMPRESSION = 200
MAX_LISTED_INDICES = 93  # past this, a wildcard (the range filter still limits the shards searched)


@dataclass(frozen=True, slots=True)
class CompiledEs:
    index: str
    body: dict[str, Any]

    def explain(self) -> dict[str, Any]:
        return {"index": self.index, "body": self.body}


def _es_value(value: Any) -> Any:
    return iso_utc(value) if isinstance(value, datetime) else value


def daily_indices(prefix: str, time_range: ResolvedRange) -> str:
    """The ``<prefix>YYYY.MM.DD`` indices (UTC days) that can hold the range."""
    first = time_range.start.astimezone(UTC).date()
    last = (time_range.end - timedelta(microseconds=1)).astimezone(UTC).date()
    days = (last - first).days + 1
    if days > MAX_LISTED_INDICES:
        return f"{prefix}*"
    return ",".join(f"{prefix}{(first + timedelta(days=i)).strftime('%Y.%m.%d')}" for i in range(days))


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
        terms = {"terms": {name: [_es_value(v) for v in f.values]}}
        return {"bool": {"must_not": [terms]}} if f.negated else terms
    assert isinstance(f, BCompare)
    value = _es_value(f.value)
    if f.op == "eq":
        return {"term": {name: value}}
    if f.op == "ne":
        return {"bool": {"must_not": [{"term": {name: value}}]}}
    return {"range": {name: {f.op: value}}}


def _dimension_agg(d: DimPlan, size: int) -> dict[str, Any]:
    if d.kind == "time":
        assert d.field is not None
        return {
            "date_histogram": {
                "field": d.field.es,
                "calendar_interval": d.unit,
                "time_zone": d.zone,
                "min_doc_count": 1,
            }
        }
    if d.kind == "geo":
        assert d.point is not None
        return {
            "geohash_grid": {"field": d.point.es, "precision": d.precision, "size": size, "shard_size": size}
        }
    assert d.field is not None
    terms: dict[str, Any] = {"field": d.field.es, "size": size, "shard_size": size}
    if d.field.nullable:
        terms["missing"] = MISSING
    return {"terms": terms}


def _metric_aggs(measures: tuple[MeasurePlan, ...]) -> dict[str, Any]:
    aggs: dict[str, Any] = {}
    for i, m in enumerate(measures):
        if m.ratio is not None:
            aggs[f"m{i}"] = {"sum": {"field": m.ratio.flag}}
        elif m.fn == "count":
            continue  # the bucket's doc_count
        elif m.fn == "count_distinct":
            assert m.field is not None
            aggs[f"m{i}"] = {
                "cardinality": {"field": m.field.es, "precision_threshold": CARDINALITY_PRECISION}
            }
        elif m.fn == "percentile":
            assert m.field is not None
            assert m.p is not None
            aggs[f"m{i}"] = {
                "percentiles": {
                    "field": m.field.es,
                    "percents": [m.p],
                    "tdigest": {"compression": TDIGEST_COMPRESSION},
                }
            }
        else:
            assert m.field is not None
            if m.field.type is ValueType.BOOLEAN:
                raise QueryError(f"{m.fn} does not apply to {m.field.name}")
            aggs[f"m{i}"] = {m.fn: {"field": m.field.es}}
    return aggs


def compile_es(
    plan: Plan, prefix: str, max_groups: int, timeout_s: float, time_range: ResolvedRange
) -> CompiledEs:
    filters: list[dict[str, Any]] = [
        {"range": {RANGE_FIELD: {"gte": iso_utc(time_range.start), "lt": iso_utc(time_range.end)}}}
    ]
    if plan.filter is not None:
        filters.append(es_query(plan.filter))
    aggs = _metric_aggs(plan.measures)
    for i in reversed(range(len(plan.dimensions))):
        level = _dimension_agg(plan.dimensions[i], max_groups + 1)
        if aggs:
            level["aggs"] = aggs
        aggs = {f"d{i}": level}
    body: dict[str, Any] = {
        "size": 0,
        "track_total_hits": True,
        "timeout": f"{int(timeout_s * 1000)}ms",
        "query": {"bool": {"filter": filters}},
    }
    if aggs:
        body["aggs"] = aggs
    return CompiledEs(daily_indices(prefix, time_range), body)
