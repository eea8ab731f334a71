"""Choosing a backend, checking the cost, running a plan on it, and saying how fresh the answer is.

PostgreSQL runs through an asyncpg pool of its own (on the read replica when one is configured),
in a read-only transaction with a statement timeout. Elasticsearch through the async client: a
composite aggregation page by page, a nested one for geohash cells, a sorted search for listings,
or a scan of the range's rides (customer and driver fields) that DuckDB then aggregates. The archive
through :mod:`query_dsl.archive` (pyarrow's S3 filesystem, DuckDB under a memory limit).

Before anything runs, :meth:`QueryEngine.check_cost` asks the engine's own estimate
(:mod:`query_dsl.cost`); after, :mod:`query_dsl.freshness` says how recent the engine's rides are.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
import orjson
from elasticsearch import AsyncElasticsearch, helpers
from elasticsearch import exceptions as es_errors

from query_dsl import cost, result
from query_dsl.archive import ArchiveReader
from query_dsl.compile_duckdb import compile_duckdb
from query_dsl.compile_es import CompiledEs, compile_es
from query_dsl.compile_pg import CompiledSql, compile_pg
from query_dsl.errors import QueryBackendUnavailable, QueryError, QueryLimitExceeded, QueryTimeout
from query_dsl.freshness import FreshnessProbe
from query_dsl.listing import encode_cursor
from query_dsl.normalize import canonical
from query_dsl.plan import MeasurePlan, Plan, filter_targets
from query_dsl.settings import QuerySettings
from query_dsl.timerange import ResolvedRange, iso_utc

Backend = Literal["postgres", "elasticsearch", "archive"]
BACKENDS: tuple[str, ...] = ("postgres", "elasticsearch", "archive", "auto")
SCAN_PAGE = 5_000
TIMESTAMP_FIELDS = ("from_date", "to_date", "booking_created")


def _arrow_rides(sources: list[dict[str, Any]]) -> Any:
    """Elasticsearch documents as the archive's Arrow table (raw fields; timestamps parsed)."""
    import pyarrow as pa  # noqa: PLC0415

    from xrides.ride import RIDE_FIELDS, parquet_schema  # noqa: PLC0415

    columns: dict[str, list[Any]] = {}
    for spec in RIDE_FIELDS:
        values = [doc.get(spec.name) for doc in sources]
        if spec.name in TIMESTAMP_FIELDS:
            values = [None if v is None else datetime.fromisoformat(v) for v in values]
        columns[spec.name] = values
    return pa.Table.from_pydict(columns, schema=parquet_schema())


class QueryEngine:
    """Runs and explains plans; one per process."""

    def __init__(self, settings: QuerySettings) -> None:
        self.settings = settings
        self.limits = settings.limits
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._es: AsyncElasticsearch | None = None
        self.archive = ArchiveReader(settings)
        self.freshness = FreshnessProbe(settings, self._pg_pool, self._client, self.archive.days)

    async def close(self) -> None:
        self.freshness.close()
        if self._es is not None:
            await self._es.close()
        if self._pool is not None:
            await self._pool.close()

    # choosing -----------------------------------------------------------------------------
    def choose(self, plan: Plan, backend: str, now: datetime) -> tuple[Backend, str, list[str]]:
        """(backend, why, warnings) for the plan's range (and its previous period, if compared)."""
        if backend not in BACKENDS:
            raise QueryError(f"backend must be one of {', '.join(BACKENDS)}, not {backend[:20]!r}", "backend")
        earliest = (plan.previous or plan.range).start
        hot_start = now - timedelta(days=self.settings.hot_days)
        retention = self.settings.query_pg_retention_days
        pg_start = None if retention <= 0 else now - timedelta(days=retention)
        warnings: list[str] = []
        if backend == "auto":
            if plan.windows and (pg_start is None or earliest >= pg_start):
                # PostgreSQL computes windows natively; Elasticsearch would scan every ride of the range
                return (
                    "postgres",
                    "auto: customer and driver fields are windows PostgreSQL computes in SQL",
                    [],
                )
            if earliest >= hot_start:
                return (
                    "elasticsearch",
                    f"auto: the range starts within the last {self.settings.hot_days} days",
                    [],
                )
            if pg_start is None or earliest >= pg_start:
                return "postgres", "auto: the range starts before the Elasticsearch window", []
            return "archive", f"auto: the range starts before PostgreSQL's {retention} days", []
        if backend == "elasticsearch" and earliest < hot_start:
            warnings.append(
                f"Elasticsearch holds only the last {self.settings.hot_days} days (from "
                f"{iso_utc(hot_start)}): earlier rides are missing from this result"
            )
        if backend == "archive" and plan.range.end > hot_start:
            warnings.append(
                f"the archive receives rides once they are {self.settings.hot_days} days old: rides after "
                f"{iso_utc(hot_start)} may be missing from this result"
            )
        if backend == "postgres" and pg_start is not None and earliest < pg_start:
            warnings.append(f"PostgreSQL keeps {retention} days: earlier rides are missing from this result")
        chosen: Backend = backend  # type: ignore[assignment]
        return chosen, "requested", warnings

    @staticmethod
    def notes(plan: Plan, backend: Backend) -> list[str]:
        """What the answer's shape implies: approximations that can move rows, window semantics."""
        out: list[str] = []
        if backend == "elasticsearch":
            approximate = {m.name for m in plan.measures if m.approximate_on_es}
            used = {c.name for c, _ in plan.order} | {
                t.name for t in filter_targets(plan.having) if isinstance(t, MeasurePlan)
            }
            moving = sorted(approximate & used)
            if moving and (plan.limit is not None or plan.having is not None):
                out.append(
                    f"order or having uses approximate columns ({', '.join(moving)}): rows near the "
                    "cut-off may differ from an exact backend's"
                )
        if plan.windows:
            out.append(
                "customer and driver fields count rides within the query's range only: a customer "
                "whose earlier rides fall before the range is 'new' here"
            )
        return out

    # explaining ---------------------------------------------------------------------------
    def compiled(self, plan: Plan, backend: Backend, time_range: ResolvedRange, tail: bool) -> dict[str, Any]:
        if backend == "postgres":
            return self._pg_statement(plan, time_range, tail).explain()
        if backend == "elasticsearch":
            out = self._es_request(plan, time_range).explain()
            if out["mode"] == "scan":
                out["then"] = self._duck_statement(plan, time_range, tail=False).explain()
            return out
        out = self._duck_statement(plan, time_range, tail).explain()
        out["files"] = f"s3://{self.archive.base}/dt=<each UTC day of the range>/*.parquet"
        return out

    def explain(self, plan: Plan, backend: str, now: datetime) -> dict[str, Any]:
        chosen, why, warnings = self.choose(plan, backend, now)
        statements = [{"period": "current", **self.compiled(plan, chosen, plan.range, True)}]
        if plan.previous is not None:
            statements.append({"period": "previous", **self.compiled(plan, chosen, plan.previous, False)})
        out: dict[str, Any] = {
            "backend": chosen,
            "backend_reason": why,
            "query": canonical(plan.query, plan.params or None),
            "range": plan.range.as_dict(),
            "columns": [c.as_dict() for c in result.columns(plan, chosen)],
            "statements": statements,
            "warnings": [*plan.warnings, *warnings, *self.notes(plan, chosen)],
        }
        if plan.previous is not None:
            out["previous_range"] = plan.previous.as_dict()
        return out

    # statements ---------------------------------------------------------------------------
    def _sql_tail(self, plan: Plan, tail: bool) -> bool:
        """SQL applies having/order/limit itself unless buckets are filled first (then Python does)."""
        return tail and not plan.fill

    def _pg_statement(self, plan: Plan, time_range: ResolvedRange, tail: bool) -> CompiledSql:
        s = self.settings
        return compile_pg(
            plan, s.query_pg_table, self.limits.max_rows, time_range, self._sql_tail(plan, tail), s.local_zone
        )

    def _duck_statement(self, plan: Plan, time_range: ResolvedRange, tail: bool) -> CompiledSql:
        return compile_duckdb(
            plan, self.limits.max_rows, time_range, self._sql_tail(plan, tail), self.settings.local_zone
        )

    def _es_request(self, plan: Plan, time_range: ResolvedRange) -> CompiledEs:
        s = self.settings
        return compile_es(plan, s.es_rides_prefix, self.limits.max_groups, self.limits.timeout_s, time_range)

    # running ------------------------------------------------------------------------------
    async def run(self, plan: Plan, backend: str = "auto", now: datetime | None = None) -> result.Result:
        now = now or datetime.now(UTC)
        chosen, why, warnings = self.choose(plan, backend, now)
        started = time.perf_counter()
        if self.settings.query_cost_check:
            await self.check_cost(plan, chosen)
        cursor = None
        if plan.listing:
            rows, last = await self.fetch_listing(plan, chosen)
            if last is not None:
                cursor = encode_cursor(plan.query, plan.params, plan.range, last)
        else:
            rows = await self.fetch(plan, chosen, plan.range, tail=True)
            if plan.previous is not None:
                before = await self.fetch(plan, chosen, plan.previous, tail=False)
                rows = result.merge_previous(plan, rows, before)
        cols, table = result.table(plan, chosen, rows)
        out = result.Result(
            backend=chosen,
            range=plan.range,
            columns=cols,
            rows=table,
            previous_range=plan.previous,
            warnings=[*plan.warnings, *warnings, *self.notes(plan, chosen)],
            elapsed_ms=(time.perf_counter() - started) * 1000,
            backend_reason=why,
            next_cursor=cursor,
        )
        if self.settings.query_freshness:
            fresh = await self.freshness.of(chosen)
            out.freshness = fresh.as_dict()
            out.warnings.extend(fresh.warnings(plan.range, now))
        return out

    async def fetch(
        self, plan: Plan, backend: Backend, time_range: ResolvedRange, tail: bool
    ) -> list[result.Row]:
        if backend == "postgres":
            compiled = self._pg_statement(plan, time_range, tail)
            rows = result.sql_rows(plan, compiled.labels, await self._postgres(compiled))
        elif backend == "elasticsearch":
            rows = await self._elasticsearch(plan, time_range)
        else:
            compiled = self._duck_statement(plan, time_range, tail)
            rows = result.sql_rows(plan, compiled.labels, await self._archive(plan, time_range, compiled))
        if plan.fill and tail:
            rows = result.fill_rows(plan, rows, self.limits.max_rows)
        if tail and (backend == "elasticsearch" or plan.fill):
            rows = result.apply_tail(plan, rows)
        result.check_rows(rows, plan if tail else _untailed(plan), self.limits, backend)
        return rows

    async def fetch_listing(
        self, plan: Plan, backend: Backend
    ) -> tuple[list[result.Row], tuple[Any, ...] | None]:
        if backend == "elasticsearch" and not plan.windows:
            compiled = self._es_request(plan, plan.range)
            response = await self._search(compiled.index, compiled.body)
            return result.es_listing_rows(plan, response["hits"]["hits"])
        if backend == "postgres":
            records = await self._postgres(self._pg_statement(plan, plan.range, True))
        elif backend == "elasticsearch":
            statement = self._duck_statement(plan, plan.range, True)
            records = await self._scan_then_duck(plan, plan.range, statement)
        else:
            records = await self._archive(plan, plan.range, self._duck_statement(plan, plan.range, True))
        return result.listing_rows(plan, records)

    # cost ---------------------------------------------------------------------------------
    async def check_cost(self, plan: Plan, backend: Backend) -> cost.Estimate | None:
        """Refuse (400) what the engine estimates beyond its limit; returns the estimate."""
        s = self.settings
        estimate: cost.Estimate | None = None
        if backend == "postgres":
            compiled = self._pg_statement(plan, plan.range, True)
            explained = await self._postgres(compiled, explain=True)
            estimate = cost.Estimate("postgres", cost.pg_total_cost(explained), s.query_pg_max_cost, "cost")
        elif backend == "elasticsearch":
            estimate = await self._es_estimate(plan)
        else:
            files = await asyncio.to_thread(self.archive.files, _day_range(plan))
            total = float(sum(size for _, size in files))
            estimate = cost.Estimate("archive", total, float(s.query_archive_max_bytes), "bytes")
        if estimate is not None and estimate.over:
            raise estimate.refuse()
        return estimate

    async def _es_estimate(self, plan: Plan) -> cost.Estimate | None:
        s = self.settings
        compiled = self._es_request(plan, plan.range)
        if compiled.mode == "scan":
            body = {"query": compiled.body["query"]}
            counting = self._client().count(
                index=compiled.index, body=body, ignore_unavailable=True, allow_no_indices=True
            )
            counted = await self._call_es(counting)
            return cost.Estimate("elasticsearch", float(counted["count"]), s.query_es_max_scan_rows, "rides")
        if compiled.mode != "composite":
            return None
        request = cost.estimate_body(plan, plan.range)
        answer = None if request is None else await self._search(compiled.index, request)
        groups = cost.estimate_groups(plan, plan.range, answer)
        return cost.Estimate("elasticsearch", groups, float(s.query_es_max_groups), "groups")

    # PostgreSQL ---------------------------------------------------------------------------
    async def _pg_pool(self) -> asyncpg.Pool:
        async with self._pool_lock:
            if self._pool is None:
                try:
                    self._pool = await asyncpg.create_pool(
                        self.settings.query_dsn, min_size=1, max_size=self.settings.query_pg_pool_size
                    )
                except (OSError, asyncpg.PostgresError) as exc:
                    raise QueryBackendUnavailable(f"PostgreSQL is not reachable: {exc}") from exc
            return self._pool

    async def _postgres(self, compiled: CompiledSql, explain: bool = False) -> Any:
        pool = await self._pg_pool()
        sql = f"EXPLAIN (FORMAT JSON) {compiled.sql}" if explain else compiled.sql
        try:
            async with pool.acquire() as conn, conn.transaction(readonly=True):
                timeout_ms = str(int(self.limits.timeout_s * 1000))
                await conn.execute("SELECT set_config('statement_timeout', $1, true)", timeout_ms)
                if explain:
                    return orjson.loads(await conn.fetchval(sql, *compiled.params))
                return [tuple(r) for r in await conn.fetch(sql, *compiled.params)]
        except asyncpg.QueryCanceledError as exc:
            raise QueryTimeout(f"PostgreSQL cancelled the query after {self.limits.timeout_s:g} s") from exc
        except asyncpg.DataError as exc:  # class 22: e.g. arithmetic out of range in a calc
            raise QueryError(f"PostgreSQL could not compute the answer: {exc}") from exc
        except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError) as exc:
            raise QueryBackendUnavailable(f"PostgreSQL is not reachable: {exc}") from exc
        except asyncpg.CannotConnectNowError as exc:
            raise QueryBackendUnavailable(f"PostgreSQL is starting or stopping: {exc}") from exc

    # Elasticsearch ------------------------------------------------------------------------
    def _client(self) -> AsyncElasticsearch:
        if self._es is None:
            self._es = AsyncElasticsearch(self.settings.es_url, request_timeout=self.limits.timeout_s + 5)
        return self._es

    async def _call_es(self, call: Any) -> dict[str, Any]:
        try:
            response = await call
        except es_errors.ConnectionTimeout as exc:
            raise QueryTimeout(f"Elasticsearch did not answer within {self.limits.timeout_s:g} s") from exc
        except es_errors.ConnectionError as exc:
            raise QueryBackendUnavailable(f"Elasticsearch is not reachable: {exc}") from exc
        except es_errors.ApiError as exc:
            if "too_many_buckets" in str(exc):
                raise QueryLimitExceeded(
                    f"Elasticsearch refused: too many buckets ({str(exc)[:200]})"
                ) from exc
            raise QueryBackendUnavailable(f"Elasticsearch failed: {str(exc)[:300]}") from exc
        return dict(response.body) if hasattr(response, "body") else dict(response)

    async def _search(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call_es(
            self._client().search(
                index=index,
                body=body,
                ignore_unavailable=True,
                allow_no_indices=True,
                request_cache=self.settings.query_es_request_cache if body.get("size") == 0 else None,
            )
        )

    async def _elasticsearch(self, plan: Plan, time_range: ResolvedRange) -> list[result.Row]:
        compiled = self._es_request(plan, time_range)
        if compiled.mode == "scan":
            statement = self._duck_statement(plan, time_range, tail=False)
            records = await self._scan_then_duck(plan, time_range, statement)
            return result.sql_rows(plan, statement.labels, records)
        if compiled.mode == "composite":
            return await self._composite(plan, compiled)
        return result.es_rows(plan, await self._search(compiled.index, compiled.body), self.limits)

    async def _composite(self, plan: Plan, compiled: CompiledEs) -> list[result.Row]:
        """Every group, page by page; past ``query_es_max_groups`` the query is refused."""
        rows: list[result.Row] = []
        body = compiled.body
        cap = self.settings.query_es_max_groups
        while True:
            page, after = result.composite_page(plan, await self._search(compiled.index, body), self.limits)
            rows.extend(page)
            if len(rows) > cap:
                raise cost.Estimate("elasticsearch", len(rows), cap, "groups").refuse()
            if after is None:
                return result.add_calcs(plan, rows)
            body = {**body, "aggs": {"groups": {**body["aggs"]["groups"]}}}
            body["aggs"]["groups"]["composite"] = {**body["aggs"]["groups"]["composite"], "after": after}

    async def _scan_then_duck(
        self, plan: Plan, time_range: ResolvedRange, statement: CompiledSql
    ) -> list[Any]:
        """The range's rides from Elasticsearch, then the DuckDB statement over them."""
        compiled = self._es_request(plan, time_range)
        sources: list[dict[str, Any]] = []
        cap = self.settings.query_es_max_scan_rows
        try:
            async for hit in helpers.async_scan(
                self._client(),
                index=compiled.index,
                query={"query": compiled.body["query"]},
                _source=compiled.body["_source"],
                size=SCAN_PAGE,
                ignore_unavailable=True,
                allow_no_indices=True,
            ):
                sources.append(hit["_source"])
                if len(sources) > cap:
                    raise cost.Estimate("elasticsearch", len(sources), cap, "rides").refuse()
        except es_errors.ConnectionError as exc:
            raise QueryBackendUnavailable(f"Elasticsearch is not reachable: {exc}") from exc
        table = _arrow_rides(sources)
        return await asyncio.to_thread(
            self.archive.duck.run, table, statement.sql, list(statement.params), self.limits.timeout_s
        )

    # the archive --------------------------------------------------------------------------
    async def _archive(self, plan: Plan, time_range: ResolvedRange, compiled: CompiledSql) -> list[Any]:
        try:
            files = await asyncio.to_thread(self.archive.files, _day_range(plan, time_range))
            return await asyncio.to_thread(
                self.archive.query,
                [path for path, _ in files],
                compiled.sql,
                list(compiled.params),
                self.limits.timeout_s,
            )
        except OSError as exc:
            raise QueryBackendUnavailable(f"the archive is not reachable: {exc}") from exc


def _day_range(plan: Plan, time_range: ResolvedRange | None = None) -> ResolvedRange | None:
    """The pickup days a range can touch: its own, or every day for another time field."""
    return (time_range or plan.range) if plan.time_field.name == "from_date" else None


def _untailed(plan: Plan) -> Plan:
    """The previous period is fetched whole: its row count is checked without the user's limit."""
    from dataclasses import replace  # noqa: PLC0415

    return replace(plan, limit=None, per=())


__all__ = ["BACKENDS", "ArchiveReader", "Backend", "QueryEngine"]
