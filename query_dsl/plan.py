"""From a syntax tree to a plan: names checked against the catalog, parameters bound, values typed,
the time range resolved, cost guards applied. Compilers only ever see a plan.

Filter semantics are two-valued on every backend: a comparison with a missing (null) value is
false, and ``not`` turns it true. So ``to_area_id != 5`` and ``not to_area_id in (5)`` include
rides without a drop-off area, as Elasticsearch's ``must_not`` does.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from query_dsl import guards
from query_dsl.ast import (
    AbsoluteRange,
    And,
    Compare,
    CompareOp,
    FieldDim,
    Filter,
    GeoDim,
    InList,
    IsNull,
    Not,
    Or,
    Param,
    Query,
    TimeDim,
    TimeUnit,
    Value,
)
from query_dsl.catalog import (
    AGGREGATES,
    FIELDS,
    MAX_GEOHASH_PRECISION,
    POINTS,
    RATIOS,
    TIME_FIELDS,
    FieldDef,
    PointDef,
    RatioDef,
    ValueType,
)
from query_dsl.errors import QueryError, QueryLimitExceeded, UnknownName
from query_dsl.timerange import ResolvedRange, parse_instant, previous_period, resolve, zone_of

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True, slots=True)
class MeasurePlan:
    name: str
    fn: str  # an AGGREGATES name, or "ratio"
    field: FieldDef | None = None
    p: float | None = None
    ratio: RatioDef | None = None

    @property
    def approximate_on_es(self) -> bool:
        return self.fn in AGGREGATES and AGGREGATES[self.fn].approximate_on_es

    @property
    def tolerance(self) -> float:
        return AGGREGATES[self.fn].tolerance if self.fn in AGGREGATES else 0.0

    @property
    def value_type(self) -> ValueType:
        if self.fn in ("count", "count_distinct"):
            return ValueType.INTEGER
        if self.fn in ("sum", "min", "max") and self.field is not None:
            return self.field.type
        return ValueType.NUMBER


@dataclass(frozen=True, slots=True)
class DimPlan:
    name: str
    kind: Literal["field", "time", "geo"]
    field: FieldDef | None = None  # field and time dimensions
    unit: TimeUnit | None = None
    zone: str | None = None
    point: PointDef | None = None
    precision: int = 0

    @property
    def value_type(self) -> ValueType:
        if self.kind == "time":
            return ValueType.TIMESTAMP
        if self.kind == "geo":
            return ValueType.STRING
        assert self.field is not None
        return self.field.type


Target = FieldDef | MeasurePlan | DimPlan


@dataclass(frozen=True, slots=True)
class BCompare:
    target: Target
    op: CompareOp
    value: Any  # int | float | str | bool | datetime


@dataclass(frozen=True, slots=True)
class BIn:
    target: Target
    values: tuple[Any, ...]
    negated: bool


@dataclass(frozen=True, slots=True)
class BNull:
    target: Target
    negated: bool


@dataclass(frozen=True, slots=True)
class BAnd:
    items: tuple[BFilter, ...]


@dataclass(frozen=True, slots=True)
class BOr:
    items: tuple[BFilter, ...]


@dataclass(frozen=True, slots=True)
class BNot:
    item: BFilter


BFilter = BCompare | BIn | BNull | BAnd | BOr | BNot


@dataclass(frozen=True, slots=True)
class Plan:
    query: Query
    params: dict[str, Any]
    measures: tuple[MeasurePlan, ...]
    dimensions: tuple[DimPlan, ...]
    filter: BFilter | None
    having: BFilter | None
    order: tuple[tuple[MeasurePlan | DimPlan, bool], ...]  # (column, descending)
    limit: int | None
    range: ResolvedRange
    previous: ResolvedRange | None
    warnings: tuple[str, ...] = field(default=())

    @property
    def columns(self) -> tuple[MeasurePlan | DimPlan, ...]:
        return (*self.dimensions, *self.measures)


def value_type(target: Target) -> ValueType:
    return target.type if isinstance(target, FieldDef) else target.value_type


def _check_measured_field(fn: str, fdef: FieldDef, path: str) -> None:
    """count_distinct counts ids and categories; the other aggregates need a measurable field."""
    if fn == "count_distinct":
        if not fdef.dimension:
            raise QueryError(f"count_distinct applies to id and category fields, not {fdef.name}", path)
    elif not fdef.measurable:
        measurable = ", ".join(n for n, f in FIELDS.items() if f.measurable)
        raise QueryError(f"{fn} applies to measurable fields ({measurable}), not {fdef.name}", path)


def _suggest(name: str, known: list[str]) -> str:
    import difflib  # noqa: PLC0415 - only on the error path

    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _field(name: str, path: str) -> FieldDef:
    found = FIELDS.get(name)
    if found is None:
        raise UnknownName(f"unknown field {name[:64]!r}{_suggest(name, list(FIELDS))}", path)
    return found


class _Planner:
    def __init__(self, query: Query, params: dict[str, Any], limits: guards.Limits) -> None:
        self.query = query
        self.params = params
        self.limits = limits
        self.used: set[str] = set()
        self.zone = zone_of(query.zone)

    # values -------------------------------------------------------------------------------
    def bind(self, value: Value, path: str) -> Any:
        if isinstance(value, Param):
            if value.name not in self.params:
                raise QueryError(f"parameter ${value.name} has no value (add it to params)", path)
            self.used.add(value.name)
            bound = self.params[value.name]
            if isinstance(bound, list | dict):
                raise QueryError(f"parameter ${value.name} must be a single value here", path)
            return bound
        return value

    def typed(self, target: Target, value: Any, path: str) -> Any:
        """``value`` as the target's type, or a clear error; this is where hostile strings stop."""
        vtype = value_type(target)
        name = target.name
        shown = repr(value)[:60]
        if vtype is ValueType.INTEGER:
            if isinstance(value, bool) or not isinstance(value, int):
                raise QueryError(f"{name} expects an integer, got {shown}", path)
            return guards.check_int_literal(value, name, path)
        if vtype is ValueType.NUMBER:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise QueryError(f"{name} expects a number, got {shown}", path)
            if not math.isfinite(value):
                raise QueryError(f"{name} expects a finite number", path)
            return float(value)
        if vtype is ValueType.BOOLEAN:
            if not isinstance(value, bool):
                raise QueryError(f"{name} expects true or false, got {shown}", path)
            return value
        if vtype is ValueType.TIMESTAMP:
            if not isinstance(value, str):
                raise QueryError(f"{name} expects an ISO 8601 date or timestamp string, got {shown}", path)
            try:
                return parse_instant(value, self.zone, path)
            except QueryError as exc:
                raise QueryError(f"{name}: {exc.message.removeprefix(path + ': ')}", path) from exc
        choices = target.choices if isinstance(target, FieldDef) else ()
        if not isinstance(value, str) or (choices and value not in choices):
            allowed = f"one of {', '.join(choices)}" if choices else "a string"
            raise QueryError(f"{name} expects {allowed}, got {shown}", path)
        return value

    # filters ------------------------------------------------------------------------------
    def filter(self, f: Filter, path: str, resolve_target: Any, depth: int = 0) -> BFilter:
        guards.check_depth(depth, path)
        if isinstance(f, And | Or):
            items = tuple(
                self.filter(x, f"{path}[{i}]", resolve_target, depth + 1) for i, x in enumerate(f.items)
            )
            return BAnd(items) if isinstance(f, And) else BOr(items)
        if isinstance(f, Not):
            return BNot(self.filter(f.item, f"{path}.not", resolve_target, depth + 1))
        target: Target = resolve_target(f.field, f"{path}.field")
        if isinstance(f, Compare):
            if f.op not in ("eq", "ne") and value_type(target) in (ValueType.STRING, ValueType.BOOLEAN):
                raise QueryError(f"{target.name} can only be compared with = or !=", path)
            value_path = f"{path}.value"
            return BCompare(target, f.op, self.typed(target, self.bind(f.value, value_path), value_path))
        if isinstance(f, InList):
            if isinstance(f.values, Param):
                raw = self.params.get(f.values.name)
                if not isinstance(raw, list):
                    raise QueryError(f"parameter ${f.values.name} must be a list of values", path)
                self.used.add(f.values.name)
                values: tuple[Any, ...] = tuple(raw)
            else:
                values = tuple(self.bind(v, path) for v in f.values)
            guards.check_list_size(len(values), target.name, path)
            if not values:
                raise QueryError(f"the list for {target.name} is empty", path)
            typed = tuple(self.typed(target, v, f"{path}.values[{i}]") for i, v in enumerate(values))
            return BIn(target, typed, f.negated)
        assert isinstance(f, IsNull)
        return BNull(target, f.negated)

    def where_target(self, name: str, path: str) -> Target:
        return _field(name, path)

    # the whole query ----------------------------------------------------------------------
    def plan(self, now: datetime) -> Plan:
        q = self.query
        guards.check_counts(len(q.measures), len(q.dimensions))
        guards.check_limit(q.limit, self.limits)
        measures = tuple(self.measure(i) for i in range(len(q.measures)))
        dims = tuple(self.dimension(i) for i in range(len(q.dimensions)))
        columns: dict[str, MeasurePlan | DimPlan] = {}
        every: tuple[MeasurePlan | DimPlan, ...] = (*dims, *measures)
        for i, col in enumerate(every):
            if not _NAME.match(col.name):
                raise QueryError(f"{col.name[:64]!r} is not a valid column name ([A-Za-z_][A-Za-z0-9_]*)")
            if col.name in columns:
                raise QueryError(
                    f"two columns are named {col.name!r}: give one an alias with 'as'", f"$[{i}]"
                )
            columns[col.name] = col
        if q.compare and any(d.kind == "time" for d in dims):
            raise QueryError("compare previous_period cannot have time buckets: the periods' buckets differ",
                             "$.compare")  # fmt: skip

        def column(name: str, path: str) -> MeasurePlan | DimPlan:
            if name not in columns:
                raise UnknownName(f"unknown column {name[:64]!r}{_suggest(name, list(columns))}", path)
            return columns[name]

        where = None if q.filter is None else self.filter(q.filter, "$.filter", self.where_target)
        having = None if q.having is None else self.filter(q.having, "$.having", column)
        order = tuple((column(o.column, f"$.order[{i}]"), o.descending) for i, o in enumerate(q.order))
        bounds = None
        if isinstance(q.time_range, AbsoluteRange):
            start = self.bind(q.time_range.start, "$.time_range.from")
            end = self.bind(q.time_range.end, "$.time_range.to")
            for value, key in ((start, "from"), (end, "to")):
                if not isinstance(value, str):
                    raise QueryError("expects an ISO 8601 date or timestamp string", f"$.time_range.{key}")
            bounds = (start, end)
        resolved = resolve(q.time_range, q.zone, now, bounds)
        guards.check_span(resolved.span, [d.unit for d in dims if d.unit is not None])
        previous = previous_period(q.time_range, resolved) if q.compare else None
        unused = sorted(set(self.params) - self.used)
        if unused:
            raise QueryError(f"parameters never used: {', '.join('$' + u for u in unused)}", "$.params")
        return Plan(q, self.params, measures, dims, where, having, order, q.limit, resolved, previous)

    def measure(self, i: int) -> MeasurePlan:
        m = self.query.measures[i]
        path = f"$.measures[{i}]"
        if m.fn in RATIOS:
            if m.field is not None:
                raise QueryError(f"{m.fn} takes no field", path)
            return MeasurePlan(m.name, "ratio", ratio=RATIOS[m.fn])
        spec = AGGREGATES.get(m.fn)
        if spec is None:
            known = [*AGGREGATES, *RATIOS, "p50", "p95"]
            raise UnknownName(f"unknown measure {m.fn[:64]!r}{_suggest(m.fn, known)}", path)
        if not spec.needs_field:
            if m.field is not None:
                raise QueryError(f"{m.fn} takes no field", path)
            return MeasurePlan(m.name, m.fn)
        if m.field is None:
            raise QueryError(f"{m.fn} needs a field, e.g. {m.fn}(lead_time_min)", path)
        fdef = _field(m.field, f"{path}.field")
        _check_measured_field(m.fn, fdef, path)
        if m.fn == "percentile":
            if m.p is None or not 0 < m.p < 100:
                raise QueryError("a percentile needs 0 < p < 100", f"{path}.p")
        elif m.p is not None:
            raise QueryError(f"{m.fn} takes no p", f"{path}.p")
        return MeasurePlan(m.name, m.fn, fdef, m.p)

    def dimension(self, i: int) -> DimPlan:
        d = self.query.dimensions[i]
        path = f"$.dimensions[{i}]"
        if isinstance(d, FieldDim):
            fdef = _field(d.field, path)
            if not fdef.dimension:
                hint = (
                    " (use a time bucket such as day(from_date))" if fdef.type is ValueType.TIMESTAMP else ""
                )
                raise QueryError(f"{fdef.name} cannot be grouped by{hint}", path)
            return DimPlan(d.name, "field", field=fdef)
        if isinstance(d, TimeDim):
            if d.field not in TIME_FIELDS:
                raise UnknownName(f"{d.field[:64]!r} is not a time field ({', '.join(TIME_FIELDS)})", path)
            zone = d.zone or self.query.zone
            zone_of(zone, f"{path}.zone")
            return DimPlan(d.name, "time", field=FIELDS[d.field], unit=d.unit, zone=zone)
        assert isinstance(d, GeoDim)
        if d.field not in POINTS:
            raise UnknownName(f"{d.field[:64]!r} is not a point ({', '.join(POINTS)})", path)
        if not 1 <= d.precision <= MAX_GEOHASH_PRECISION:
            raise QueryLimitExceeded(f"geohash precision must be 1..{MAX_GEOHASH_PRECISION}", path)
        return DimPlan(d.name, "geo", point=POINTS[d.field], precision=d.precision)


def plan_query(
    query: Query, params: dict[str, Any], now: datetime, limits: guards.Limits | None = None
) -> Plan:
    return _Planner(query, params, limits or guards.Limits()).plan(now)
