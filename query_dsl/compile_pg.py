"""A plan as one SQL statement for PostgreSQL (and, through :mod:`query_dsl.compile_duckdb`, DuckDB).

Identifiers come only from the catalog and from ``d<i>``/``m<i>`` column labels made here; every
value a query carries (and the time zone) is a ``$n`` parameter. The only literals written into
the text are numbers this module computes: percentile fractions and geohash cell counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from query_dsl.catalog import RANGE_FIELD, FieldDef, PointDef
from query_dsl.errors import QueryError
from query_dsl.plan import BAnd, BCompare, BFilter, BIn, BNot, BNull, BOr, DimPlan, MeasurePlan, Plan
from query_dsl.timerange import ResolvedRange

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


def cell_bits(precision: int) -> tuple[int, int]:
    """Geohash bits of (latitude, longitude): 5 per character, longitude takes the odd one."""
    total = 5 * precision
    return total // 2, (total + 1) // 2


class SqlCompiler:
    """PostgreSQL; :class:`query_dsl.compile_duckdb.DuckDbCompiler` overrides the dialect hooks."""

    def __init__(self, plan: Plan, table: str, max_rows: int) -> None:
        self.plan = plan
        self.table = table
        self.max_rows = max_rows
        self.params: list[Any] = []

    # dialect hooks ------------------------------------------------------------------------
    def field_sql(self, f: FieldDef) -> str:
        return f.pg

    def time_bucket(self, d: DimPlan) -> str:
        assert d.field is not None
        assert d.unit is not None
        return f"date_trunc('{d.unit}', {self.field_sql(d.field)}, {self.param(d.zone)})"

    def percentile(self, expr: str, p: float) -> str:
        return f"percentile_cont({p / 100:.6g}) WITHIN GROUP (ORDER BY {expr})"

    def float_cast(self, expr: str) -> str:
        return f"({expr})::float8"

    def in_list(self, expr: str, values: tuple[Any, ...]) -> str:
        return f"{expr} = ANY({self.param(list(values))})"

    def point_sql(self, point: PointDef) -> tuple[str, str]:
        return f"{point.lat}::float8", f"{point.lon}::float8"

    # building blocks ----------------------------------------------------------------------
    def param(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

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
        if d.kind == "geo":
            return list(self.geo_cells(d))
        if d.kind == "time":
            return [self.time_bucket(d)]
        assert d.field is not None
        return [self.field_sql(d.field)]

    def measure_expr(self, m: MeasurePlan) -> str:
        if m.ratio is not None:
            return f"{self.float_cast(f'sum({m.ratio.flag})')} / count(*)"
        if m.fn == "count":
            return "count(*)"
        assert m.field is not None
        expr = self.field_sql(m.field)
        if m.fn == "count_distinct":
            return f"count(DISTINCT {expr})"
        if m.fn == "sum":
            return f"COALESCE(sum({expr}), 0)"
        if m.fn == "avg":
            return f"avg({self.float_cast(expr)})"
        if m.fn == "percentile":
            assert m.p is not None
            return self.percentile(self.float_cast(expr), m.p)
        return f"{m.fn}({expr})"  # min, max: names from the catalog's aggregate list

    def target_expr(self, target: FieldDef | MeasurePlan | DimPlan) -> tuple[str, bool]:
        """The SQL of a filter's target and whether it can be null."""
        if isinstance(target, FieldDef):
            return self.field_sql(target), target.nullable
        if isinstance(target, MeasurePlan):
            return self.measure_expr(target), target.fn not in ("count", "count_distinct", "sum")
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

    # the statement ------------------------------------------------------------------------
    def compile(self, time_range: ResolvedRange, tail: bool) -> CompiledSql:
        """``tail``: apply having/order/limit (the previous period of a comparison skips them)."""
        plan = self.plan
        where = [
            f"{RANGE_FIELD} >= {self.param(time_range.start)}",
            f"{RANGE_FIELD} < {self.param(time_range.end)}",
        ]
        if plan.filter is not None:
            where.append(self.predicate(plan.filter))
        select, labels, group, dim_labels = self._dimensions(where)
        measure_labels: dict[str, str] = {}
        for i, m in enumerate(plan.measures):
            select.append(f"{self.measure_expr(m)} AS m{i}")
            labels.append(f"m{i}")
            measure_labels[m.name] = f"m{i}"
        sql = f"SELECT {', '.join(select)}\nFROM {self.table}\nWHERE {' AND '.join(where)}"
        if group:
            sql += f"\nGROUP BY {', '.join(group)}"
        limit = self.max_rows + 1  # one more than allowed: an overflow is seen, not cut
        if tail:
            sql += self._tail(dim_labels, measure_labels)
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

    def _tail(self, dim_labels: dict[str, list[str]], measure_labels: dict[str, str]) -> str:
        """HAVING and ORDER BY; ties broken by the dimensions, so every backend gives the same rows."""
        plan = self.plan
        sql = ""
        if plan.having is not None:
            sql += f"\nHAVING {self.predicate(plan.having)}"
        order: list[str] = []
        seen: set[str] = set()
        for column, desc in plan.order:
            seen.add(column.name)
            for label in dim_labels.get(column.name) or [measure_labels[column.name]]:
                order.append(f"{label} {'DESC' if desc else 'ASC'} NULLS LAST")
        for d in plan.dimensions:
            if d.name not in seen:
                order.extend(f"{label} ASC NULLS LAST" for label in dim_labels[d.name])
        if order:
            sql += f"\nORDER BY {', '.join(order)}"
        return sql


def compile_pg(plan: Plan, table: str, max_rows: int, time_range: ResolvedRange, tail: bool) -> CompiledSql:
    return SqlCompiler(plan, quote_table(table), max_rows).compile(time_range, tail)
