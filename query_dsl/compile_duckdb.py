"""A plan as DuckDB SQL over the archive's Parquet rows (registered as the view ``rides``).

The same statement as PostgreSQL's (:mod:`query_dsl.compile_pg`) but for DuckDB's spelling of
time zones, percentiles and lists; Parquet coordinates are already doubles. Elasticsearch's row
scans (customer and driver fields) run through this compiler too, over the scanned rides.
"""

from __future__ import annotations

from typing import Any

from query_dsl.catalog import SERVICE_ZONE, PointDef
from query_dsl.compile_pg import CompiledSql, SqlCompiler
from query_dsl.plan import Plan
from query_dsl.timerange import ResolvedRange
from xrides.ride.enrich import Dialect

ARCHIVE_VIEW = "rides"


class DuckDbCompiler(SqlCompiler):
    dialect: Dialect = "duckdb"

    def local_time(self, ts: str, zone: str) -> str:
        return f"timezone({zone}, {ts})"

    def truncate_local(self, unit: str, ts: str, zone: str) -> str:
        return f"timezone({zone}, date_trunc('{unit}', timezone({zone}, {ts})))"

    def percentile(self, expr: str, p: float, where: str) -> str:
        return f"quantile_cont({expr}, {p / 100:.6g}){where}"

    def float_cast(self, expr: str) -> str:
        return f"CAST({expr} AS DOUBLE)"

    def in_list(self, expr: str, values: tuple[Any, ...]) -> str:
        return f"{expr} IN ({', '.join(self.param(v) for v in values)})"

    def point_sql(self, point: PointDef) -> tuple[str, str]:
        return point.lat, point.lon

    def number_param(self, value: float) -> str:
        return f"CAST({self.param(float(value))} AS DOUBLE)"


def compile_duckdb(
    plan: Plan, max_rows: int, time_range: ResolvedRange, tail: bool, zone: str = SERVICE_ZONE
) -> CompiledSql:
    return DuckDbCompiler(plan, ARCHIVE_VIEW, max_rows, zone).compile(time_range, tail)
