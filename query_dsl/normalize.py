"""The canonical JSON of a query: one spelling per meaning, so equal queries print equal text.

Objects everywhere (no string shorthands), keys in a fixed order, defaults left out, and the
text form's sugar (``p95(x)``, ``field:(a or b)``, ``today``) spelled out.
"""

from __future__ import annotations

import json
from typing import Any

from query_dsl.ast import (
    AbsoluteRange,
    And,
    AnyMeasure,
    Calc,
    Compare,
    Dimension,
    FieldDim,
    Filter,
    GeoDim,
    HistogramDim,
    InList,
    IsNull,
    Not,
    Or,
    Param,
    Query,
    RelativeRange,
    TimeDim,
    Value,
    expr_text,
)


def _value(value: Value) -> Any:
    return f"${value.name}" if isinstance(value, Param) else value


def _measure(m: AnyMeasure) -> dict[str, Any]:
    if isinstance(m, Calc):
        return {"calc": expr_text(m.expr), "as": m.alias}
    out: dict[str, Any] = {"fn": m.fn}
    if m.field is not None:
        out["field"] = m.field
    if m.p is not None:
        out["p"] = int(m.p) if m.p.is_integer() else m.p
    if m.where is not None:
        out["where"] = filter_json(m.where)
    if m.alias:
        out["as"] = m.alias
    return out


def _dimension(d: Dimension) -> dict[str, Any]:
    out: dict[str, Any]
    if isinstance(d, FieldDim):
        out = {"field": d.field}
    elif isinstance(d, TimeDim):
        out = {"time": d.field, "unit": d.unit}
        if d.zone is not None:
            out["zone"] = d.zone
    elif isinstance(d, HistogramDim):
        out = {"histogram": d.field, "width": int(d.width) if d.width.is_integer() else d.width}
    else:
        assert isinstance(d, GeoDim)
        out = {"geohash": d.field, "precision": d.precision}
    if d.alias:
        out["as"] = d.alias
    return out


def filter_json(f: Filter) -> dict[str, Any]:
    if isinstance(f, And):
        return {"and": [filter_json(x) for x in f.items]}
    if isinstance(f, Or):
        return {"or": [filter_json(x) for x in f.items]}
    if isinstance(f, Not):
        return {"not": filter_json(f.item)}
    if isinstance(f, Compare):
        return {"field": f.field, "op": f.op, "value": _value(f.value)}
    if isinstance(f, InList):
        values = _value(f.values) if isinstance(f.values, Param) else [_value(v) for v in f.values]
        return {"field": f.field, "op": "not_in" if f.negated else "in", "values": values}
    assert isinstance(f, IsNull)
    return {"field": f.field, "op": "is_not_null" if f.negated else "is_null"}


def _extras(query: Query) -> dict[str, Any]:
    """The keys of the shapes added later (top N per group, filled buckets, listings)."""
    out: dict[str, Any] = {}
    if query.time_field != Query.__dataclass_fields__["time_field"].default:
        out["time_field"] = query.time_field
    if query.per:
        out["per"] = list(query.per)
    if query.fill:
        out["fill"] = "zero"
    if query.cursor is not None:
        out["cursor"] = query.cursor
    return out


def canonical(query: Query, params: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = (
        {"select": list(query.select)}
        if query.select
        else {"measures": [_measure(m) for m in query.measures]}
    )
    if query.dimensions:
        out["dimensions"] = [_dimension(d) for d in query.dimensions]
    if query.filter is not None:
        out["filter"] = filter_json(query.filter)
    tr = query.time_range
    if isinstance(tr, RelativeRange):
        out["time_range"] = tr.text()
    else:
        assert isinstance(tr, AbsoluteRange)
        out["time_range"] = {"from": _value(tr.start), "to": _value(tr.end)}
    out["zone"] = query.zone
    if query.compare is not None:
        out["compare"] = query.compare
    if query.having is not None:
        out["having"] = filter_json(query.having)
    if query.order:
        out["order"] = [{"by": o.column, "desc": o.descending} for o in query.order]
    if query.limit is not None:
        out["limit"] = query.limit
    out.update(_extras(query))
    if params:
        out["params"] = params
    return out


def canonical_text(query: Query, params: dict[str, Any] | None = None) -> str:
    return json.dumps(canonical(query, params), indent=2, ensure_ascii=False)
