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

from query_dsl import guards, listing
from query_dsl.ast import (
    AbsoluteRange,
    And,
    BinOp,
    Calc,
    Compare,
    CompareOp,
    Expr,
    FieldDim,
    Filter,
    GeoDim,
    HistogramDim,
    InList,
    IsNull,
    Measure,
    Not,
    Num,
    Or,
    Param,
    Query,
    Ref,
    TimeDim,
    TimeUnit,
    Value,
    expr_refs,
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
DEFAULT_PAGE = 100  # rows of a listing without a limit


@dataclass(frozen=True, slots=True)
class MeasurePlan:
    name: str
    fn: str  # an AGGREGATES name, "ratio", or "calc" (arithmetic over other measures)
    field: FieldDef | None = None
    p: float | None = None
    ratio: RatioDef | None = None
    where: BFilter | None = None  # a filtered measure
    expr: Expr | None = None  # calc: its expression, with Refs to ``refs``
    refs: tuple[MeasurePlan, ...] = ()  # calc: the measures it names

    @property
    def approximate_on_es(self) -> bool:
        if self.fn == "calc":
            return any(r.approximate_on_es for r in self.refs)
        return self.fn in AGGREGATES and AGGREGATES[self.fn].approximate_on_es

    @property
    def tolerance(self) -> float:
        if self.fn == "calc":  # relative error of products and quotients (docs/query-dsl.md)
            return sum(r.tolerance for r in self.refs)
        return AGGREGATES[self.fn].tolerance if self.fn in AGGREGATES else 0.0

    @property
    def value_type(self) -> ValueType:
        if self.fn in ("count", "count_distinct"):
            return ValueType.INTEGER
        if self.fn in ("sum", "min", "max") and self.field is not None:
            return self.field.type
        return ValueType.NUMBER

    @property
    def zero_when_empty(self) -> bool:
        """What an empty group holds: 0 for counts and sums, null for the rest (means, extremes)."""
        return self.fn in ("count", "count_distinct", "sum")


@dataclass(frozen=True, slots=True)
class DimPlan:
    name: str
    kind: Literal["field", "time", "geo", "histogram"]
    field: FieldDef | None = None  # field, time and histogram dimensions
    unit: TimeUnit | None = None
    zone: str | None = None
    point: PointDef | None = None
    precision: int = 0
    width: float = 0.0  # histogram

    @property
    def value_type(self) -> ValueType:
        if self.kind == "time":
            return ValueType.TIMESTAMP
        if self.kind == "geo":
            return ValueType.STRING
        assert self.field is not None
        if self.kind == "histogram":
            integral = self.field.type is ValueType.INTEGER and self.width.is_integer()
            return ValueType.INTEGER if integral else ValueType.NUMBER
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


def filter_targets(f: BFilter | None) -> list[Target]:
    if f is None:
        return []
    if isinstance(f, BAnd | BOr):
        return [t for item in f.items for t in filter_targets(item)]
    if isinstance(f, BNot):
        return filter_targets(f.item)
    return [f.target]


@dataclass(frozen=True, slots=True)
class Plan:
    query: Query
    params: dict[str, Any]
    measures: tuple[MeasurePlan, ...]
    dimensions: tuple[DimPlan, ...]
    filter: BFilter | None
    having: BFilter | None
    order: tuple[tuple[MeasurePlan | DimPlan | FieldDef, bool], ...]  # (column, descending)
    limit: int | None
    range: ResolvedRange
    previous: ResolvedRange | None
    warnings: tuple[str, ...] = field(default=())
    per: tuple[DimPlan, ...] = ()  # top-``limit`` rows within each group of these dimensions
    fill: bool = False  # every time bucket of the range, empty ones included
    time_field: FieldDef = FIELDS["from_date"]
    select: tuple[FieldDef, ...] = ()  # a listing of rides (no measures)
    after: tuple[Any, ...] | None = None  # a listing's keyset: the previous page's last sort values

    @property
    def columns(self) -> tuple[MeasurePlan | DimPlan, ...]:
        return (*self.dimensions, *self.measures)

    @property
    def listing(self) -> bool:
        return bool(self.select)

    @property
    def aggregates(self) -> tuple[MeasurePlan, ...]:
        """The measures computed by the engines (calcs are arithmetic over these)."""
        return tuple(m for m in self.measures if m.fn != "calc")

    @property
    def windows(self) -> tuple[FieldDef, ...]:
        """Customer and driver fields the query uses: computed over the range before filtering."""
        used: list[FieldDef] = []
        fields: list[FieldDef] = [*self.select, *(o for o, _ in self.order if isinstance(o, FieldDef))]
        fields += [d.field for d in self.dimensions if d.field is not None]
        fields += [m.field for m in self.measures if m.field is not None]
        targets = [*filter_targets(self.filter), *(t for m in self.measures for t in filter_targets(m.where))]
        fields += [t for t in targets if isinstance(t, FieldDef)]
        for f in fields:
            if f.window_sql and f not in used:
                used.append(f)
        return tuple(used)

    @property
    def time_dimension(self) -> DimPlan | None:
        return next((d for d in self.dimensions if d.kind == "time"), None)


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
    elif fn == "percentile" and fdef.flag:
        # percentile_cont of 0s and 1s is 0, 1 or a fraction of the rank; TDigest (Elasticsearch)
        # cannot estimate that within any tolerance: the share is avg(flag).
        raise QueryError(f"a percentile of the 0/1 flag {fdef.name} says nothing: use avg({fdef.name})", path)


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
            return self.in_list(f, target, path)
        assert isinstance(f, IsNull)
        return BNull(target, f.negated)

    def in_list(self, f: InList, target: Target, path: str) -> BIn:
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
        return BIn(target, tuple(dict.fromkeys(typed)), f.negated)

    def where_target(self, name: str, path: str) -> Target:
        return _field(name, path)

    # the whole query ----------------------------------------------------------------------
    def plan(self, now: datetime) -> Plan:
        q = self.query
        if q.select:
            return self.listing_plan(now)
        guards.check_counts(len(q.measures), len(q.dimensions))
        guards.check_limit(q.limit, self.limits)
        measures = self.measures()
        dims = tuple(self.dimension(i) for i in range(len(q.dimensions)))
        columns = self.columns((*dims, *measures))
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
        per = tuple(column(name, f"$.per[{i}]") for i, name in enumerate(q.per))
        self.check_shape(dims, per)
        resolved, previous, time_field = self.time_range(now, dims)
        self.check_unused()
        return Plan(
            q, self.params, measures, dims, where, having, order, q.limit, resolved, previous,
            per=tuple(d for d in per if isinstance(d, DimPlan)), fill=q.fill, time_field=time_field,
        )  # fmt: skip

    def columns(self, every: tuple[MeasurePlan | DimPlan, ...]) -> dict[str, MeasurePlan | DimPlan]:
        columns: dict[str, MeasurePlan | DimPlan] = {}
        for i, col in enumerate(every):
            if not _NAME.match(col.name):
                raise QueryError(f"{col.name[:64]!r} is not a valid column name ([A-Za-z_][A-Za-z0-9_]*)")
            if col.name in columns:
                raise QueryError(
                    f"two columns are named {col.name!r}: give one an alias with 'as'", f"$[{i}]"
                )
            columns[col.name] = col
        return columns

    def check_shape(self, dims: tuple[DimPlan, ...], per: tuple[MeasurePlan | DimPlan, ...]) -> None:
        q = self.query
        if per:
            if q.limit is None:
                raise QueryError("'per' needs a limit: the top N rows of each group", "$.per")
            if any(not isinstance(d, DimPlan) for d in per):
                raise QueryError("'per' names dimension columns (the groups to rank within)", "$.per")
            if len(set(per)) == len(dims):
                raise QueryError("'per' must leave at least one dimension to rank", "$.per")
        if q.fill:
            times = [d for d in dims if d.kind == "time"]
            if len(times) != 1:
                raise QueryError(
                    "fill needs exactly one time bucket dimension (day(from_date), ...)", "$.fill"
                )

    def time_range(
        self, now: datetime, dims: tuple[DimPlan, ...]
    ) -> tuple[ResolvedRange, ResolvedRange | None, FieldDef]:
        q = self.query
        time_field = _field(q.time_field, "$.time_field")
        if time_field.type is not ValueType.TIMESTAMP:
            raise QueryError(f"time_field must be one of {', '.join(TIME_FIELDS)}", "$.time_field")
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
        return resolved, previous, time_field

    def check_unused(self) -> None:
        unused = sorted(set(self.params) - self.used)
        if unused:
            raise QueryError(f"parameters never used: {', '.join('$' + u for u in unused)}", "$.params")

    # listings -----------------------------------------------------------------------------
    def listing_plan(self, now: datetime) -> Plan:
        q = self.query
        for key, present in (
            ("dimensions", q.dimensions), ("having", q.having), ("compare", q.compare), ("per", q.per),
            ("fill", q.fill),
        ):  # fmt: skip
            if present:
                raise QueryError(f"a listing (select) has no {key}: it returns rides, not groups", f"$.{key}")
        guards.check_limit(q.limit, self.limits)
        if len(q.select) > len(FIELDS):
            raise QueryLimitExceeded(f"select lists at most {len(FIELDS)} fields", "$.select")
        select = tuple(_field(name, f"$.select[{i}]") for i, name in enumerate(q.select))
        if len(set(select)) != len(select):
            raise QueryError("a field is selected twice", "$.select")
        where = None if q.filter is None else self.filter(q.filter, "$.filter", self.where_target)
        resolved, _, time_field = self.time_range(now, ())
        requested = tuple((_field(o.column, f"$.order[{i}]"), o.descending) for i, o in enumerate(q.order))
        order = listing.order_keys(requested, time_field)
        after = None
        if q.cursor is not None:
            resolved, after = listing.decode_cursor(q, self.params, order)
        self.check_unused()
        limit = q.limit or DEFAULT_PAGE
        return Plan(
            q, self.params, (), (), where, None, order, limit, resolved, None,
            time_field=time_field, select=select, after=after,
        )  # fmt: skip

    # measures and dimensions --------------------------------------------------------------
    def measures(self) -> tuple[MeasurePlan, ...]:
        out: list[MeasurePlan] = []
        for i, m in enumerate(self.query.measures):
            path = f"$.measures[{i}]"
            if isinstance(m, Calc):
                out.append(self.calc(m, {p.name: p for p in out}, path))
                continue
            planned = self.measure(m, path)
            if m.where is not None:
                where = self.filter(m.where, f"{path}.where", self.where_target, 1)
                planned = MeasurePlan(
                    planned.name, planned.fn, planned.field, planned.p, planned.ratio, where
                )
            out.append(planned)
        return tuple(out)

    def calc(self, c: Calc, before: dict[str, MeasurePlan], path: str) -> MeasurePlan:
        refs: list[MeasurePlan] = []
        for name in expr_refs(c.expr):
            if name not in before:
                raise UnknownName(
                    f"{name[:64]!r} in the expression is not a measure listed before it"
                    f"{_suggest(name, list(before))}",
                    f"{path}.calc",
                )
            if before[name] not in refs:
                refs.append(before[name])
        _check_numbers(c.expr, f"{path}.calc")
        return MeasurePlan(c.alias, "calc", expr=c.expr, refs=tuple(refs))

    def measure(self, m: Measure, path: str) -> MeasurePlan:
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
                    " (use a time bucket such as day(from_date))" if fdef.type is ValueType.TIMESTAMP
                    else " (use a histogram such as histogram(lead_time_min, 15))"
                )  # fmt: skip
                raise QueryError(f"{fdef.name} cannot be grouped by{hint}", path)
            return DimPlan(d.name, "field", field=fdef)
        if isinstance(d, TimeDim):
            if d.field not in TIME_FIELDS:
                raise UnknownName(f"{d.field[:64]!r} is not a time field ({', '.join(TIME_FIELDS)})", path)
            zone = d.zone or self.query.zone
            zone_of(zone, f"{path}.zone")
            return DimPlan(d.name, "time", field=FIELDS[d.field], unit=d.unit, zone=zone)
        if isinstance(d, HistogramDim):
            fdef = _field(d.field, path)
            if not fdef.numeric:
                raise QueryError(f"a histogram needs a number field, not {fdef.name}", path)
            if not (math.isfinite(d.width) and d.width > 0):
                raise QueryError("a histogram's width must be a positive number", f"{path}.width")
            if d.width < 1e-6 or d.width > 1e12:
                raise QueryLimitExceeded("a histogram's width must be within 1e-6 .. 1e12", f"{path}.width")
            return DimPlan(d.name, "histogram", field=fdef, width=float(d.width))
        assert isinstance(d, GeoDim)
        if d.field not in POINTS:
            raise UnknownName(f"{d.field[:64]!r} is not a point ({', '.join(POINTS)})", path)
        if not 1 <= d.precision <= MAX_GEOHASH_PRECISION:
            raise QueryLimitExceeded(f"geohash precision must be 1..{MAX_GEOHASH_PRECISION}", path)
        return DimPlan(d.name, "geo", point=POINTS[d.field], precision=d.precision)


def _check_numbers(expr: Expr, path: str) -> None:
    if isinstance(expr, Num) and not math.isfinite(expr.value):
        raise QueryError("numbers in an expression must be finite", path)
    if isinstance(expr, BinOp):
        _check_numbers(expr.left, path)
        _check_numbers(expr.right, path)
    assert isinstance(expr, Num | Ref | BinOp)


def plan_query(
    query: Query, params: dict[str, Any], now: datetime, limits: guards.Limits | None = None
) -> Plan:
    return _Planner(query, params, limits or guards.Limits()).plan(now)
