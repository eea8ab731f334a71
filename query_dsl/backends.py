"""Running a plan: PostgreSQL (full history), Elasticsearch (the hot window), the S3 archive
(DuckDB over Parquet), or ``auto``, which picks by the time range and says why.

Clients are created on first use and closed by :meth:`QueryEngine.close`; the API passes its own
PostgreSQL pool. The archive is read through pyarrow's S3 filesystem (DuckDB's httpfs extension
cannot be installed here), pruned to the ``dt=`` days of the range, and scanned by DuckDB.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
import orjson
from elasticsearch import AsyncElasticsearch
from elasticsearch import exceptions as es_errors

from query_dsl import result
from query_dsl.compile_duckdb import ARCHIVE_VIEW, compile_duckdb
from query_dsl.compile_es import compile_es
from query_dsl.compile_pg import compile_pg
from query_dsl.errors import QueryBackendUnavailable, QueryError, QueryLimitExceeded, QueryTimeout
from query_dsl.normalize import canonical
from query_dsl.plan import Plan
from query_dsl.settings import QuerySettings
from query_dsl.timerange import ResolvedRange, iso_utc

Backend = Literal["postgres", "elasticsearch", "archive"]
BACKENDS: tuple[str, ...] = ("postgres", "elasticsearch", "archive", "auto")
POOL_WAIT_S = 5.0


class ArchiveReader:
    """Parquet files of the archive, as a pyarrow dataset DuckDB can scan."""

    def __init__(self, settings: QuerySettings) -> None:
        self.settings = settings
        self._fs: Any = None

    def filesystem(self) -> Any:
        if self._fs is None:
            from pyarrow import fs  # noqa: PLC0415 - pyarrow is heavy; only archive queries need it

            endpoint = self.settings.s3_endpoint
            scheme, _, host = endpoint.partition("://")
            self._fs = fs.S3FileSystem(
                access_key=self.settings.s3_access_key,
                secret_key=self.settings.s3_secret_key,
                endpoint_override=host or endpoint,
                scheme=scheme if host else "http",
                region="us-east-1",
                allow_bucket_creation=False,
            )
        return self._fs

    @property
    def base(self) -> str:
        return f"{self.settings.s3_bucket}/{self.settings.archive_prefix.strip('/')}"

    def files(self, time_range: ResolvedRange) -> list[str]:
        """Parquet files of the ``dt=`` partitions (UTC days) that can hold the range."""
        from pyarrow import fs  # noqa: PLC0415

        first = time_range.start.astimezone(UTC).date().isoformat()
        last = (time_range.end - timedelta(microseconds=1)).astimezone(UTC).date().isoformat()
        filesystem = self.filesystem()
        days = filesystem.get_file_info(fs.FileSelector(self.base, allow_not_found=True))
        paths: list[str] = []
        for info in days:
            day = info.base_name.removeprefix("dt=")
            if (
                info.type == fs.FileType.Directory
                and info.base_name.startswith("dt=")
                and first <= day <= last
            ):
                found = filesystem.get_file_info(fs.FileSelector(info.path, recursive=True))
                listed = self._listed(filesystem, info.path, found)
                paths.extend(
                    f.path
                    for f in found
                    if f.path.endswith(".parquet") and (listed is None or f.path in listed)
                )
        return sorted(paths)

    def _listed(self, filesystem: Any, day_path: str, found: list[Any]) -> set[str] | None:
        """The objects the archiver's manifest lists for a day (None: no manifest, take every file).

        Files a manifest does not list belong to a rewrite in progress or an interrupted run.
        """
        manifest = f"{day_path}/_manifest.json"
        if not any(f.path == manifest for f in found):
            return None
        with filesystem.open_input_stream(manifest) as stream:
            body = orjson.loads(stream.read())
        return {f"{self.settings.s3_bucket}/{o['key']}" for o in body["objects"]}

    def query(self, time_range: ResolvedRange, sql: str, params: list[Any], timeout_s: float) -> list[Any]:
        import duckdb  # noqa: PLC0415
        import pyarrow.dataset as ds  # noqa: PLC0415

        from xrides.ride import parquet_schema  # noqa: PLC0415

        schema = parquet_schema()
        files = self.files(time_range)
        dataset = (
            ds.dataset(files, schema=schema, format="parquet", filesystem=self.filesystem())
            if files
            else ds.dataset(schema.empty_table())
        )
        con = duckdb.connect(config={"threads": 2})
        timer = threading.Timer(timeout_s, con.interrupt)
        try:
            con.execute("SET TimeZone = 'UTC'")
            con.register(ARCHIVE_VIEW, dataset)
            timer.start()
            return con.execute(sql, params).fetchall()
        except duckdb.InterruptException as exc:
            raise QueryTimeout(f"the archive query ran longer than {timeout_s:g} s") from exc
        finally:
            timer.cancel()
            con.close()


class QueryEngine:
    """Runs and explains plans; one per process."""

    def __init__(
        self, settings: QuerySettings, pool: Callable[[], asyncpg.Pool | None] | None = None
    ) -> None:
        self.settings = settings
        self.limits = settings.limits
        self._external_pool = pool
        self._own_pool: asyncpg.Pool | None = None
        self._es: AsyncElasticsearch | None = None
        self.archive = ArchiveReader(settings)

    async def close(self) -> None:
        if self._es is not None:
            await self._es.close()
        if self._own_pool is not None:
            await self._own_pool.close()

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

    # explaining ---------------------------------------------------------------------------
    def compiled(self, plan: Plan, backend: Backend, time_range: ResolvedRange, tail: bool) -> dict[str, Any]:
        s, limits = self.settings, self.limits
        if backend == "postgres":
            return compile_pg(plan, s.query_pg_table, limits.max_rows, time_range, tail).explain()
        if backend == "elasticsearch":
            return compile_es(
                plan, s.es_rides_prefix, limits.max_groups, limits.timeout_s, time_range
            ).explain()
        out = compile_duckdb(plan, limits.max_rows, time_range, tail).explain()
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
            "warnings": [*plan.warnings, *warnings],
        }
        if plan.previous is not None:
            out["previous_range"] = plan.previous.as_dict()
        return out

    # running ------------------------------------------------------------------------------
    async def run(self, plan: Plan, backend: str = "auto", now: datetime | None = None) -> result.Result:
        now = now or datetime.now(UTC)
        chosen, why, warnings = self.choose(plan, backend, now)
        started = time.perf_counter()
        rows = await self.fetch(plan, chosen, plan.range, tail=True)
        if plan.previous is not None:
            before = await self.fetch(plan, chosen, plan.previous, tail=False)
            rows = result.merge_previous(plan, rows, before)
        cols, table = result.table(plan, chosen, rows)
        return result.Result(
            backend=chosen,
            range=plan.range,
            columns=cols,
            rows=table,
            previous_range=plan.previous,
            warnings=[*plan.warnings, *warnings],
            elapsed_ms=(time.perf_counter() - started) * 1000,
            backend_reason=why,
        )

    async def fetch(
        self, plan: Plan, backend: Backend, time_range: ResolvedRange, tail: bool
    ) -> list[result.Row]:
        if backend == "postgres":
            rows = await self._postgres(plan, time_range, tail)
        elif backend == "elasticsearch":
            rows = await self._elasticsearch(plan, time_range)
            if tail:
                rows = result.apply_tail(plan, rows)
        else:
            rows = await self._archive(plan, time_range, tail)
        result.check_rows(rows, plan if tail else _untailed(plan), self.limits, backend)
        return rows

    async def _pool(self) -> asyncpg.Pool:
        if self._external_pool is not None:
            deadline = time.monotonic() + POOL_WAIT_S
            while (pool := self._external_pool()) is None:  # the API connects in the background at start
                if time.monotonic() > deadline:
                    raise QueryBackendUnavailable("PostgreSQL is not connected yet", retry_after_s=2)
                await asyncio.sleep(0.1)
            return pool
        if self._own_pool is None:
            try:
                self._own_pool = await asyncpg.create_pool(self.settings.pg_dsn, min_size=1, max_size=2)
            except (OSError, asyncpg.PostgresError) as exc:
                raise QueryBackendUnavailable(f"PostgreSQL is not reachable: {exc}") from exc
        return self._own_pool

    async def _postgres(self, plan: Plan, time_range: ResolvedRange, tail: bool) -> list[result.Row]:
        compiled = compile_pg(plan, self.settings.query_pg_table, self.limits.max_rows, time_range, tail)
        pool = await self._pool()
        try:
            async with pool.acquire() as conn, conn.transaction(readonly=True):
                timeout_ms = str(int(self.limits.timeout_s * 1000))
                await conn.execute("SELECT set_config('statement_timeout', $1, true)", timeout_ms)
                records = await conn.fetch(compiled.sql, *compiled.params)
        except asyncpg.QueryCanceledError as exc:
            raise QueryTimeout(f"PostgreSQL cancelled the query after {self.limits.timeout_s:g} s") from exc
        except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError) as exc:
            raise QueryBackendUnavailable(f"PostgreSQL is not reachable: {exc}") from exc
        return result.sql_rows(plan, compiled.labels, [tuple(r) for r in records])

    def _client(self) -> AsyncElasticsearch:
        if self._es is None:
            self._es = AsyncElasticsearch(self.settings.es_url, request_timeout=self.limits.timeout_s + 5)
        return self._es

    async def _elasticsearch(self, plan: Plan, time_range: ResolvedRange) -> list[result.Row]:
        s = self.settings
        compiled = compile_es(
            plan, s.es_rides_prefix, self.limits.max_groups, self.limits.timeout_s, time_range
        )
        try:
            response = await self._client().search(
                index=compiled.index,
                body=compiled.body,
                ignore_unavailable=True,
                allow_no_indices=True,
                request_cache=s.query_es_request_cache,
            )
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
        return result.es_rows(plan, dict(response.body), self.limits)

    async def _archive(self, plan: Plan, time_range: ResolvedRange, tail: bool) -> list[result.Row]:
        compiled = compile_duckdb(plan, self.limits.max_rows, time_range, tail)
        try:
            records = await asyncio.to_thread(
                self.archive.query, time_range, compiled.sql, list(compiled.params), self.limits.timeout_s
            )
        except OSError as exc:
            raise QueryBackendUnavailable(f"the archive is not reachable: {exc}") from exc
        return result.sql_rows(plan, compiled.labels, records)


def _untailed(plan: Plan) -> Plan:
    """The previous period is fetched whole: its row count is checked without the user's limit."""
    from dataclasses import replace  # noqa: PLC0415

    return replace(plan, limit=None)
