"""The archive as a query engine: the archiver's Parquet files in S3, read through pyarrow, queried by
DuckDB under a memory limit.

DuckDB's httpfs extension cannot be installed here, so the files are listed and opened through
pyarrow's S3 filesystem: only the ``dt=`` days (UTC pickup days) the range can touch, and within a
day only the files its manifest lists (others belong to a rewrite in progress). DuckDB runs the
same statement as PostgreSQL in its own dialect (:mod:`query_dsl.compile_duckdb`) over them, with
``memory_limit`` and a thread count per query, interrupted at the query's time limit. Elasticsearch's
scans for customer and driver fields use the same :class:`DuckRunner` over the scanned rides.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, timedelta
from typing import Any

import orjson

from query_dsl.compile_duckdb import ARCHIVE_VIEW
from query_dsl.errors import QueryLimitExceeded, QueryTimeout
from query_dsl.settings import QuerySettings
from query_dsl.timerange import ResolvedRange


class DuckRunner:
    """DuckDB statements over an Arrow dataset, bounded in memory, threads and time."""

    def __init__(self, settings: QuerySettings) -> None:
        self.settings = settings

    def run(self, dataset: Any, sql: str, params: list[Any], timeout_s: float) -> list[Any]:
        import duckdb  # noqa: PLC0415

        s = self.settings
        con = duckdb.connect(
            config={"threads": s.query_duckdb_threads, "memory_limit": f"{s.query_duckdb_memory_mb}MB"}
        )
        timer = threading.Timer(timeout_s, con.interrupt)
        try:
            con.execute("SET TimeZone = 'UTC'")
            con.register(ARCHIVE_VIEW, dataset)
            timer.start()
            return con.execute(sql, params).fetchall()
        except duckdb.InterruptException as exc:
            raise QueryTimeout(f"the DuckDB query ran longer than {timeout_s:g} s") from exc
        except duckdb.OutOfMemoryException as exc:
            raise QueryLimitExceeded(
                f"the query needs more than DuckDB's {s.query_duckdb_memory_mb} MB: narrow the range or "
                "use fewer groups"
            ) from exc
        finally:
            timer.cancel()
            con.close()


class ArchiveReader:
    """Parquet files of the archive, as a pyarrow dataset DuckDB can scan."""

    def __init__(self, settings: QuerySettings) -> None:
        self.settings = settings
        self._fs: Any = None
        self.duck = DuckRunner(settings)

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
                region=self.settings.s3_region,
                allow_bucket_creation=False,
            )
        return self._fs

    @property
    def base(self) -> str:
        return f"{self.settings.s3_bucket}/{self.settings.archive_prefix.strip('/')}"

    def day_dirs(self) -> list[Any]:
        from pyarrow import fs  # noqa: PLC0415

        found = self.filesystem().get_file_info(fs.FileSelector(self.base, allow_not_found=True))
        return [i for i in found if i.type == fs.FileType.Directory and i.base_name.startswith("dt=")]

    def days(self) -> list[date]:
        return [date.fromisoformat(i.base_name.removeprefix("dt=")) for i in self.day_dirs()]

    def files(self, time_range: ResolvedRange | None) -> list[tuple[str, int]]:
        """(path, bytes) of the Parquet files of the ``dt=`` partitions (UTC days) that can hold the
        range (every day when None: a range on another time field than the pickup)."""
        from pyarrow import fs  # noqa: PLC0415

        first, last = "", "9999"
        if time_range is not None:
            first = time_range.start.astimezone(UTC).date().isoformat()
            last = (time_range.end - timedelta(microseconds=1)).astimezone(UTC).date().isoformat()
        filesystem = self.filesystem()
        paths: list[tuple[str, int]] = []
        for info in self.day_dirs():
            day = info.base_name.removeprefix("dt=")
            if first <= day <= last:
                # a day emptied since the listing (a rewrite, an erasure) is no day, not an error
                selector = fs.FileSelector(info.path, recursive=True, allow_not_found=True)
                found = filesystem.get_file_info(selector)
                listed = self._listed(filesystem, info.path, found)
                paths.extend(
                    (f.path, f.size or 0)
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

    def query(self, files: list[str], sql: str, params: list[Any], timeout_s: float) -> list[Any]:
        import pyarrow.dataset as ds  # noqa: PLC0415

        from xrides.ride import parquet_schema  # noqa: PLC0415

        schema = parquet_schema()
        dataset = (
            ds.dataset(files, schema=schema, format="parquet", filesystem=self.filesystem())
            if files
            else ds.dataset(schema.empty_table())
        )
        return self.duck.run(dataset, sql, params, timeout_s)
