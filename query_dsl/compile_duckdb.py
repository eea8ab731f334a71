"""A plan as DuckDB SQL over the archive's Parquet rows (registered as the view ``rides``).

The same statement as PostgreSQL's (:mod:`query_dsl.compile_pg`) but for DuckDB's spelling of
time zones, percentiles and lists; Parquet coordinates are already doubles.
"""

from __future__ import annotations

from typing import Any

from query_dsl.catalog import FieldDef, PointDef
from query_dsl.compile_pg import CompiledSql, SqlCompiler
from query_dsl.plan import DimPlan, Plan
from query_dsl.timerange import ResolvedRange

ARCHIVE_VIEW = "rides"


class DuckDbCompiler(SqlCompiler):
    def field_sql(self, f: FieldDef) -> str:
        return f.duckdb

    def time_bucket(self, d: DimPlan) -> str:
        assert d.field is not None
        assert d.unit is not None
        zone = self.param(d.zone)
        return f"timezone({zone}, date_trunc('{d.unit}', timezone({zone}, {self.field_sql(d.field)})))"

    def percentile(self, expr: str, p: float) -> str:
        return f"quantile_cont({expr}, {p / 100:.6g})"

    def float_cast(self, expr: str) -> str:
        return f"CAST({expr} AS DOUBLE)"

    def in_list(self, expr: str, values: tuple[Any, ...]) -> str:
        return f"{expr} IN ({', '.join(self.param(v) for v in values)})"

    def point_sql(self, point: PointDef) -> tuple[str, str]:
        return point.lat, point.lon


def compile_duckdb(plan: Plan, max_rows: int, time_range: ResolvedRange, tail: bool) -> CompiledSql:
    return DuckDbCompiler(plan, ARCHIVE_VIEW, max_rows).compile(time_range, tail)
