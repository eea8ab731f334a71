"""A plan as one SQL statement for PostgreSQL (and, through :mod:`query_dsl.compile_duckdb`, DuckDB).

Identifiers come only from the catalog and from ``d<i>``/``m<i>``/``c<i>`` column labels made here;
every value a query carries (and the time zone of buckets) is a ``$n`` parameter. The only literals
written into the text are numbers this module computes (percentile fractions, geohash cell counts,
the row limit) and the service zone of the enriched fields, which comes from settings and is
checked as a zone name.

Shapes:

- an aggregation: ``SELECT dims, measures FROM source WHERE range AND filter GROUP BY ... HAVING
  ... ORDER BY ... LIMIT``; a filtered measure is an aggregate with ``FILTER (WHERE ...)``, a calc
  is arithmetic over the aggregates (``/`` by ``NULLIF(.., 0)``: null, as in Python, not an error);
- top N per group: the same, ranked by ``row_number() OVER (PARTITION BY ...)`` and cut outside;
- a listing: ``SELECT fields FROM source WHERE range AND filter AND (keys) > (cursor) ORDER BY
  keys LIMIT page + 1`` (one more row says whether there is a next page);
- ``source`` is the table, or, when the query uses customer or driver fields, the range's rides
  with those window functions computed over them (then filtered outside).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from query_dsl.ast import BinOp, Expr, Num, Ref
from query_dsl.catalog import SERVICE_ZONE, FieldDef, PointDef
from query_dsl.errors import QueryError
from query_dsl.plan import BAnd, BCompare, BFilter, BIn, BNot, BNull, BOr, DimPlan, MeasurePlan, Plan
from query_dsl.timerange import ResolvedRange, zone_of
from xrides.ride.enrich import Dialect

_SQL_OPS = {"eq": "=", "ne": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_TABLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?$")


@dataclass(frozen=True, slots=True)
class CompiledSql:
    sql: str
    params: tuple[Any, ...]
    labels: tuple[str, ...]  # the select list's labels, in order (geo dimensions take two)

    def explain(self) -> dict[str, Any]:
        return {"sql": self.sql, "params": [_show(p) for p in self.params]}


def _show(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_show(v) for v in value]
    return value


def quote_table(name: str) -> str:
    """A configured (never user-given) table name, checked and quoted."""
    if not _TABLE.match(name):
        raise ValueError(f"invalid table name in settings: {name!r}")
    return ".".join(f'"{part}"' for part in name.split("."))


def service_zone(name: str) -> str:
    """The configured zone of the enriched hour/weekday fields, checked before it is written into SQL."""
    zone_of(name, "local_zone")
    return name


def cell_bits(precision: int) -> tuple[int, int]:
    """Geohash bits of (latitude, longitude): 5 per character, longitude takes the odd one."""
    total = 5 * precision
    return total // 2, (total + 1) // 2


class SqlCompiler:
    """PostgreSQL; :class:`query_dsl.compile_duckdb.DuckDbCompiler` overrides the dialect hooks."""

    dialect: Dialect = "pg"

    def __init__(self, plan: Plan, table: str, max_rows: int, zone: str = SERVICE_ZONE) -> None:
        self.plan = plan
        self.table = table
        self.max_rows = max_rows
        self.zone = service_zone(zone)
        self.params: list[Any] = []
        self._measures: dict[str, str] = {}  # one text (and one set of $n) per measure
        self._dims: dict[str, list[str]] = {}

    # dialect hooks ------------------------------------------------------------------------
    def field_sql(self, f: FieldDef) -> str:
        if f.window_sql:
            return f.name  # a column of the window subquery
        return f.sql(self.dialect, self.zone)

    def local_time(self, ts: str, zone: str) -> str:
        return f"({ts} AT TIME ZONE {zone})"

    def truncate_local(self, unit: str, ts: str, zone: str) -> str:
        return f"date_trunc('{unit}', {ts}, {zone})"

    def percentile(self, expr: str, p: float, where: str) -> str:
        return f"percentile_cont({p / 100:.6g}) WITHIN GROUP (ORDER BY {expr}){where}"

    def float_cast(self, expr: str) -> str:
        return f"({expr})::float8"

    def in_list(self, expr: str, values: tuple[Any, ...]) -> str:
        return f"{expr} = ANY({self.param(list(values))})"

    def point_sql(self, point: PointDef) -> tuple[str, str]:
        return f"{point.lat}::float8", f"{point.lon}::float8"

    def number_param(self, value: float) -> str:
        return f"{self.param(float(value))}::float8"

    # building blocks ----------------------------------------------------------------------
    def param(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def time_bucket(self, d: DimPlan) -> str:
        """Day, week and month start at local midnight. Minutes and hours are cut from the instant
        by its own local offset, so the hour repeated at an autumn clock change is two buckets
        (02:00+02:00 and 02:00+01:00), as in Elasticsearch, not one."""
        assert d.field is not None
        assert d.unit is not None
        ts = self.field_sql(d.field)
        zone = self.param(d.zone)
        if d.unit in ("minute", "hour"):
            local = self.local_time(ts, zone)
            return f"({ts} - ({local} - date_trunc('{d.unit}', {local})))"
        return self.truncate_local(d.unit, ts, zone)

    def geo_cells(self, d: DimPlan) -> tuple[str, str]:
        assert d.point is not None
        lat, lon = self.point_sql(d.point)
        lat_bits, lon_bits = cell_bits(d.precision)
        lat_cells, lon_cells = 2**lat_bits, 2**lon_bits
        return (
            f"least(floor(({lat} + 90.0) / 180.0 * {lat_cells}), {lat_cells - 1})",
            f"least(floor(({lon} + 180.0) / 360.0 * {lon_cells}), {lon_cells - 1})",
        )

    def dim_exprs(self, d: DimPlan) -> list[str]:
        if d.name not in self._dims:
            self._dims[d.name] = self._dim_exprs(d)
        return self._dims[d.name]

    def _dim_exprs(self, d: DimPlan) -> list[str]:
        if d.kind == "geo":
            return list(self.geo_cells(d))
        if d.kind == "time":
            return [self.time_bucket(d)]
        assert d.field is not None
        if d.kind == "histogram":
            # the same double arithmetic as Elasticsearch's histogram: floor(value / width) * width
            width = self.number_param(d.width)
            return [f"floor({self.float_cast(self.field_sql(d.field))} / {width}) * {width}"]
        return [self.field_sql(d.field)]

    def measure_expr(self, m: MeasurePlan) -> str:
        if m.name not in self._measures:
            self._measures[m.name] = self._measure_expr(m)
        return self._measures[m.name]

    def _measure_expr(self, m: MeasurePlan) -> str:
        if m.expr is not None:
            return self.calc(m.expr, {r.name: r for r in m.refs})
        where = "" if m.where is None else f" FILTER (WHERE {self.predicate(m.where)})"
        if m.ratio is not None:
            return f"{self.float_cast(f'sum({m.ratio.flag}){where}')} / count(*){where}"
        if m.fn == "count":
            return f"count(*){where}"
        assert m.field is not None
        expr = self.field_sql(m.field)
        if m.fn == "count_distinct":
            return f"count(DISTINCT {expr}){where}"
        if m.fn == "sum":
            return f"COALESCE(sum({expr}){where}, 0)"
        if m.fn == "avg":
            return f"avg({self.float_cast(expr)}){where}"
        if m.fn == "percentile":
            assert m.p is not None
            return self.percentile(self.float_cast(expr), m.p, where)
        return f"{m.fn}({expr}){where}"  # min, max: names from the catalog's aggregate list

    def calc(self, expr: Expr, refs: dict[str, MeasurePlan]) -> str:
        if isinstance(expr, Num):
            return self.number_param(expr.value)
        if isinstance(expr, Ref):
            return self.float_cast(self.measure_expr(refs[expr.name]))
        assert isinstance(expr, BinOp)
        left, right = self.calc(expr.left, refs), self.calc(expr.right, refs)
        if expr.op == "/":
            return f"({left} / NULLIF({right}, 0))"
        return f"({left} {expr.op} {right})"

    def target_expr(self, target: FieldDef | MeasurePlan | DimPlan) -> tuple[str, bool]:
        """The SQL of a filter's target and whether it can be null."""
        if isinstance(target, FieldDef):
            return self.field_sql(target), target.nullable
        if isinstance(target, MeasurePlan):
            return self.measure_expr(target), not target.zero_when_empty
        raise QueryError(f"having applies to measures; filter {target.name} with where", "$.having")

    def predicate(self, f: BFilter) -> str:
        if isinstance(f, BAnd):
            return "(" + " AND ".join(self.predicate(x) for x in f.items) + ")"
        if isinstance(f, BOr):
            return "(" + " OR ".join(self.predicate(x) for x in f.items) + ")"
        if isinstance(f, BNot):
            return f"NOT {self.predicate(f.item)}"
        expr, nullable = self.target_expr(f.target)
        if isinstance(f, BNull):
            return f"({expr} IS {'NOT ' if f.negated else ''}NULL)"
        if isinstance(f, BCompare):
            if f.op == "ne":  # two-valued: "not equal" includes a missing value
                return f"NOT {self._two_valued(f'{expr} = {self.param(f.value)}', nullable)}"
            return self._two_valued(f"{expr} {_SQL_OPS[f.op]} {self.param(f.value)}", nullable)
        assert isinstance(f, BIn)
        test = self._two_valued(self.in_list(expr, f.values), nullable)
        return f"NOT {test}" if f.negated else test

    @staticmethod
    def _two_valued(test: str, nullable: bool) -> str:
        return f"COALESCE({test}, FALSE)" if nullable else f"({test})"

    # sources ------------------------------------------------------------------------------
    def source(self, time_range: ResolvedRange) -> tuple[str, list[str]]:
        """FROM and the WHERE conditions (the range; within the window subquery when there is one)."""
        column = self.field_sql(self.plan.time_field)
        in_range = [
            f"{column} >= {self.param(time_range.start)}",
            f"{column} < {self.param(time_range.end)}",
        ]
        windows = self.plan.windows
        if not windows:
            return self.table, in_range
        computed = ", ".join(f"{f.window_sql} AS {f.name}" for f in windows)
        inner = f"SELECT *, {computed}\nFROM {self.table}\nWHERE {' AND '.join(in_range)}"
        return f"({inner}) AS r", []

    # the statements -----------------------------------------------------------------------
    def compile(self, time_range: ResolvedRange, tail: bool) -> CompiledSql:
        """``tail``: apply having/order/limit (the previous period of a comparison skips them)."""
        plan = self.plan
        if plan.listing:
            return self.compile_listing(time_range)
        source, where = self.source(time_range)
        if plan.filter is not None:
            where.append(self.predicate(plan.filter))
        select, labels, group, dim_labels = self._dimensions(where)
        measure_labels: dict[str, str] = {}
        for i, m in enumerate(plan.measures):
            select.append(f"{self.measure_expr(m)} AS m{i}")
            labels.append(f"m{i}")
            measure_labels[m.name] = f"m{i}"
        ranked = tail and bool(plan.per)
        if ranked:
            select.append(f"row_number() OVER ({self._ranking()}) AS rank_in_group")
        sql = f"SELECT {', '.join(select)}\nFROM {source}"
        if where:
            sql += f"\nWHERE {' AND '.join(where)}"
        if group:
            sql += f"\nGROUP BY {', '.join(group)}"
        limit = self.max_rows + 1  # one more than allowed: an overflow is seen, not cut
        if tail and plan.having is not None:
            sql += f"\nHAVING {self.predicate(plan.having)}"
        if ranked:
            assert plan.limit is not None
            sql = (
                f"SELECT {', '.join(labels)}\nFROM ({sql}) AS ranked\n"
                f"WHERE rank_in_group <= {int(plan.limit)}{self._order(dim_labels, measure_labels)}"
            )
        elif tail:
            sql += self._order(dim_labels, measure_labels)
            if plan.limit is not None:
                limit = plan.limit
        sql += f"\nLIMIT {int(limit)}"
        return CompiledSql(sql, tuple(self.params), tuple(labels))

    def _dimensions(self, where: list[str]) -> tuple[list[str], list[str], list[str], dict[str, list[str]]]:
        """SELECT items, their labels and GROUP BY positions of the dimensions (adds to ``where``)."""
        select: list[str] = []
        labels: list[str] = []
        group: list[str] = []
        dim_labels: dict[str, list[str]] = {}
        for i, d in enumerate(self.plan.dimensions):
            exprs = self.dim_exprs(d)
            names = [f"d{i}"] if len(exprs) == 1 else [f"d{i}a", f"d{i}b"]
            dim_labels[d.name] = names
            for expr, label in zip(exprs, names, strict=True):
                select.append(f"{expr} AS {label}")
                labels.append(label)
                group.append(str(len(select)))
            if d.point is not None:  # a ride without the point is in no cell (as in Elasticsearch)
                where.append(f"{d.point.lat} IS NOT NULL AND {d.point.lon} IS NOT NULL")
        return select, labels, group, dim_labels

    def _sort_items(self) -> list[tuple[MeasurePlan | DimPlan, bool]]:
        """Per-group columns first (ascending), the requested order, then every other dimension."""
        plan = self.plan
        items: list[tuple[MeasurePlan | DimPlan, bool]] = [(d, False) for d in plan.per]
        for column, desc in plan.order:
            assert isinstance(column, MeasurePlan | DimPlan)
            if column not in plan.per:
                items.append((column, desc))
        named = {c.name for c, _ in items}
        items.extend((d, False) for d in plan.dimensions if d.name not in named)
        return items

    def _order(self, dim_labels: dict[str, list[str]], measure_labels: dict[str, str]) -> str:
        """ORDER BY; ties broken by the dimensions, so every backend gives the same rows."""
        order = []
        for column, desc in self._sort_items():
            for label in dim_labels.get(column.name) or [measure_labels[column.name]]:
                order.append(f"{label} {'DESC' if desc else 'ASC'} NULLS LAST")
        return f"\nORDER BY {', '.join(order)}" if order else ""

    def _ranking(self) -> str:
        """The window that ranks rows within each group of ``per`` (same expressions as grouped)."""
        partition = [e for d in self.plan.per for e in self.dim_exprs(d)]
        order: list[str] = []
        for column, desc in self._sort_items()[len(self.plan.per) :]:
            exprs = self.dim_exprs(column) if isinstance(column, DimPlan) else [self.measure_expr(column)]
            order.extend(f"{e} {'DESC' if desc else 'ASC'} NULLS LAST" for e in exprs)
        return f"PARTITION BY {', '.join(partition)} ORDER BY {', '.join(order)}"

    def compile_listing(self, time_range: ResolvedRange) -> CompiledSql:
        plan = self.plan
        source, where = self.source(time_range)
        if plan.filter is not None:
            where.append(self.predicate(plan.filter))
        keys = [(self.field_sql(f), desc) for f, desc in plan.order if isinstance(f, FieldDef)]
        if plan.after is not None:
            where.append(self._keyset(keys, plan.after))
        select = [f"{self.field_sql(f)} AS c{i}" for i, f in enumerate(plan.select)]
        select += [f"{expr} AS k{i}" for i, (expr, _) in enumerate(keys)]
        labels = [f"c{i}" for i in range(len(plan.select))] + [f"k{i}" for i in range(len(keys))]
        sql = f"SELECT {', '.join(select)}\nFROM {source}"
        if where:
            sql += f"\nWHERE {' AND '.join(where)}"
        sql += "\nORDER BY " + ", ".join(f"{expr} {'DESC' if desc else 'ASC'}" for expr, desc in keys)
        assert plan.limit is not None
        sql += f"\nLIMIT {int(plan.limit) + 1}"
        return CompiledSql(sql, tuple(self.params), tuple(labels))

    def _keyset(self, keys: list[tuple[str, bool]], after: tuple[Any, ...]) -> str:
        """Rows after ``after`` in the order of ``keys``: (k1 > v1) OR (k1 = v1 AND k2 > v2) ..."""
        values = [self.param(v) for v in after]
        alternatives = []
        for i, (expr, desc) in enumerate(keys):
            equal = [f"{keys[j][0]} = {values[j]}" for j in range(i)]
            alternatives.append(" AND ".join([*equal, f"{expr} {'<' if desc else '>'} {values[i]}"]))
        return "(" + " OR ".join(f"({a})" for a in alternatives) + ")"


def compile_pg(
    plan: Plan, table: str, max_rows: int, time_range: ResolvedRange, tail: bool, zone: str = SERVICE_ZONE
) -> CompiledSql:
    return SqlCompiler(plan, quote_table(table), max_rows, zone).compile(time_range, tail)
