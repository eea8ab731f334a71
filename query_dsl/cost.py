"""Cost checks before a query runs: each engine's own estimate, refused with 400 and the reason.

- PostgreSQL: ``EXPLAIN`` (no ``ANALYZE``: nothing runs) of the very statement, with its
  parameters; its total cost against ``query_pg_max_cost``. Planner cost units are roughly a
  sequential page read each; on this machine 1,000,000 units took about 1 s (docs/query-dsl.md).
- Elasticsearch: the groups a composite aggregation would read, estimated as the product of each
  dimension's values (a field's known domain, time buckets counted from the range, a histogram's
  (max - min) / width, a ``cardinality`` of the range for id fields), at most the rides in the
  range, against ``query_es_max_groups``; a scan (customer and driver fields) counts the range's
  rides against ``query_es_max_scan_rows``. One ``size: 0`` request answers every unknown.
- The archive: the Parquet bytes of the range's days against ``query_archive_max_bytes``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from query_dsl.catalog import FieldDef
from query_dsl.compile_es import range_filters
from query_dsl.errors import QueryLimitExceeded
from query_dsl.plan import DimPlan, Plan
from query_dsl.timerange import ResolvedRange

_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400, "month": 28 * 86400}


@dataclass(frozen=True, slots=True)
class Estimate:
    backend: str
    value: float
    limit: float
    what: str  # "cost", "groups", "rides", "bytes"

    @property
    def over(self) -> bool:
        return self.value > self.limit

    def refuse(self) -> QueryLimitExceeded:
        hint = {
            "cost": "narrow the time range, filter on an indexed field (from_area_id, travel_type_id) "
            "or use fewer derived fields",
            "groups": "filter more, use coarser buckets, or run it on postgres",
            "rides": "narrow the time range or run it on postgres",
            "bytes": "narrow the time range",
        }[self.what]
        return QueryLimitExceeded(
            f"{self.backend} estimates this query at {self.value:,.0f} {self.what}, over its limit of "
            f"{self.limit:,.0f}: {hint}",
            estimate=self.value,
            limit=self.limit,
            backend=self.backend,
        )


def pg_total_cost(explained: Any) -> float:
    """The top node's total cost from ``EXPLAIN (FORMAT JSON)``."""
    document = explained[0] if isinstance(explained, list) else explained
    return float(document["Plan"]["Total Cost"])


def _time_buckets(d: DimPlan, time_range: ResolvedRange) -> int:
    assert d.unit is not None
    return max(1, math.ceil(time_range.span.total_seconds() / _UNIT_SECONDS[d.unit]) + 1)


def unknown_fields(plan: Plan) -> tuple[list[FieldDef], list[FieldDef]]:
    """Fields whose number of values must be asked: (terms fields, histogram fields)."""
    terms = [
        d.field for d in plan.dimensions if d.kind == "field" and d.field is not None and not d.field.domain
    ]
    histograms = [d.field for d in plan.dimensions if d.kind == "histogram" and d.field is not None]
    return terms, histograms


def estimate_body(plan: Plan, time_range: ResolvedRange) -> dict[str, Any] | None:
    """The request that answers the unknowns (None: the estimate needs no request)."""
    terms, histograms = unknown_fields(plan)
    if not terms and not histograms:
        return None
    aggs: dict[str, Any] = {}
    for f in terms:
        aggs[f"card_{f.name}"] = {"cardinality": {"field": f.es, "precision_threshold": 1000}}
    for f in histograms:
        aggs[f"min_{f.name}"] = {"min": {"field": f.es}}
        aggs[f"max_{f.name}"] = {"max": {"field": f.es}}
    return {
        "size": 0,
        "track_total_hits": True,
        "query": {"bool": {"filter": range_filters(plan, time_range)}},
        "aggs": aggs,
    }


def estimate_groups(plan: Plan, time_range: ResolvedRange, answer: dict[str, Any] | None) -> float:
    """Groups of a composite aggregation: the product of the dimensions' sizes, at most the rides."""
    aggs = (answer or {}).get("aggregations") or {}
    groups = 1.0
    for d in plan.dimensions:
        if d.kind == "time":
            groups *= _time_buckets(d, time_range)
            continue
        assert d.field is not None
        if d.kind == "histogram":
            low = (aggs.get(f"min_{d.field.name}") or {}).get("value")
            high = (aggs.get(f"max_{d.field.name}") or {}).get("value")
            span = 0.0 if low is None or high is None else high - low
            groups *= math.floor(span / d.width) + 1 + (1 if d.field.nullable else 0)
        elif d.field.domain:
            groups *= d.field.domain + (1 if d.field.nullable else 0)
        else:
            groups *= max(1, (aggs.get(f"card_{d.field.name}") or {}).get("value") or 1)
    if answer is not None:
        groups = min(groups, float(answer["hits"]["total"]["value"]))
    return groups
