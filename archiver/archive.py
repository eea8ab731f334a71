"""One archiving run: every pickup day past the hot window goes from PostgreSQL to S3, verified,
and only then leaves Elasticsearch.

Per day (a UTC day, like the daily indices and the query DSL's partitions):

1. read the day from PostgreSQL in one snapshot, as the archive's typed columns;
2. if the day already has a manifest whose content equals what was read: nothing to write;
3. otherwise encode Parquet (zstd, row groups of ``row_group_rows``), upload the objects under a
   new generation, read every object back and compare checksum and content with what was read;
4. write the manifest (the commit point), read it back;
5. delete objects of the day that the manifest does not list (the previous generation, or what an
   interrupted run left), record the day in ``archive_days``, delete the day's Elasticsearch index.

Killed anywhere, the next run redoes the day from step 1: uploads of a generation that never got
its manifest are overwritten or deleted, a manifest already written makes step 2 skip, and the
index deletion is retried by the sweep at the end of every run. So a run is idempotent and
resumable: no missing and no duplicated rows whatever the crash point.

Late data (a ride stored for a day already archived) is found through ``ride_receipts`` stored
since the previous run (minus a margin for transactions still committing then); its day is
rewritten whole as the next generation: one set of files per day, never a pile of small ones. A
day whose month PostgreSQL no longer holds (retention) is merged: the union of archive and PostgreSQL, the
highest version of each booking winning.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from elasticsearch import AsyncElasticsearch

from archiver import metrics
from archiver.settings import ArchiverSettings
from xrides import window
from xrides.archive.manifest import Manifest, ManifestObject, describe_schema
from xrides.archive.schema import (
    COLUMNS,
    DELTA_COLUMNS,
    PLAIN_COLUMNS,
    SCHEMA_VERSION,
    archive_schema,
    canonical,
    day_bounds,
    day_query,
    rows_to_table,
)
from xrides.archive.store import ArchiveStore, sha256_hex
from xrides.errors import XRidesError
from xrides.search.client import connect

log = logging.getLogger("archiver")

_LOCK_KEY = 0x58524152  # "XRAR": one archiver run at a time, whichever process starts it
LATE_STATE = "late_checked_at"


class ArchiverBusy(XRidesError):
    """Another archiver run holds the lock."""


class ArchiveCorrupt(XRidesError):
    """An object read back does not match what was written or what its manifest says."""


@dataclass(slots=True)
class DayOutcome:
    day: date
    action: str  # "archived" | "rewritten" | "merged" | "unchanged" | "empty"
    rows: int = 0
    bytes: int = 0
    generation: int = 0


@dataclass(slots=True)
class RunReport:
    reference: datetime
    cutoff_day: date  # days before this one are archived
    dry_run: bool = False
    new_days: list[date] = field(default_factory=list)
    late_days: list[date] = field(default_factory=list)
    days: list[DayOutcome] = field(default_factory=list)
    es_indices_deleted: list[str] = field(default_factory=list)
    es_indices_kept: list[str] = field(default_factory=list)  # past the window but not archived
    partitions_dropped: list[str] = field(default_factory=list)
    pending: int = 0
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(d.rows for d in self.days if d.action not in ("unchanged", "empty"))

    @property
    def bytes(self) -> int:
        return sum(d.bytes for d in self.days if d.action not in ("unchanged", "empty"))

    def summary(self) -> dict[str, Any]:
        return {
            "reference": self.reference.isoformat(),
            "cutoff_day": self.cutoff_day.isoformat(),
            "dry_run": self.dry_run,
            "new_days": len(self.new_days),
            "late_days": [d.isoformat() for d in self.late_days],
            "days": {a: sum(1 for d in self.days if d.action == a) for a in {d.action for d in self.days}},
            "rows_written": self.rows,
            "bytes_written": self.bytes,
            "es_indices_deleted": len(self.es_indices_deleted),
            "es_indices_kept": self.es_indices_kept,
            "partitions_dropped": self.partitions_dropped,
            "days_pending": self.pending,
            "seconds": round(self.seconds, 2),
        }


def cutoff_day(settings: ArchiverSettings) -> date:
    """Days strictly before this UTC day are wholly outside the hot window (the Flink job skips them)."""
    return window.cutoff_day(settings.reference(), settings.hot_days)


def index_name(prefix: str, day: date) -> str:
    return f"{prefix}{day.strftime('%Y.%m.%d')}"


def index_day(prefix: str, name: str) -> date | None:
    try:
        return datetime.strptime(name.removeprefix(prefix), "%Y.%m.%d").date()
    except ValueError:
        return None


def month_start(day: date) -> date:
    return day.replace(day=1)


def encode_parquet(table: pa.Table, row_group_rows: int) -> bytes:
    sink = io.BytesIO()
    pq.write_table(
        table,
        sink,
        compression="zstd",
        compression_level=3,
        row_group_size=row_group_rows,
        write_statistics=True,
        use_dictionary=[n for n in table.column_names if n not in DELTA_COLUMNS + PLAIN_COLUMNS],
        column_encoding=dict.fromkeys(DELTA_COLUMNS, "DELTA_BINARY_PACKED"),
        store_schema=True,
    )
    return sink.getvalue()


def decode_parquet(data: bytes) -> pa.Table:
    return pq.read_table(pa.BufferReader(data))


def _decode_canonical(data: bytes) -> pa.Table:
    return canonical(decode_parquet(data))


def merge_latest(*tables: pa.Table) -> pa.Table:
    """Union of tables keeping, per booking, the row with the highest (version, kafka_offset)."""
    joined = pa.concat_tables([canonical(t) for t in tables if t.num_rows])
    if joined.num_rows == 0:
        return canonical(archive_schema().empty_table())
    ordered = joined.sort_by(
        [("booking_id", "ascending"), ("version", "descending"), ("kafka_offset", "descending")]
    )
    ids = ordered.column("booking_id").to_numpy()
    keep = [0] + [i for i in range(1, len(ids)) if ids[i] != ids[i - 1]]
    return canonical(ordered.take(pa.array(keep, type=pa.int64())))


class Archiver:
    """Runs archiving passes. Use as ``async with Archiver(settings) as a: await a.run()``."""

    def __init__(self, settings: ArchiverSettings, store: ArchiveStore | None = None) -> None:
        self.settings = settings
        self.store = store or ArchiveStore(settings.store_config())
        self._conn: asyncpg.Connection | None = None
        self._es: AsyncElasticsearch | None = None
        # Fault injection for the resumability tests: called with a step name, may raise.
        self.on_step: Callable[[str, date], None] = lambda step, day: None
        self.stopping = asyncio.Event()

    async def __aenter__(self) -> Archiver:
        self._conn = await asyncpg.connect(self.settings.pg_dsn)
        self._es = connect(self.settings.es_url, request_timeout=60)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is not None:
            await self._conn.close()
        if self._es is not None:
            await self._es.close()

    @property
    def conn(self) -> asyncpg.Connection:
        assert self._conn is not None, "use Archiver as an async context manager"
        return self._conn

    @property
    def es(self) -> AsyncElasticsearch:
        assert self._es is not None, "use Archiver as an async context manager"
        return self._es

    # -- the run -----------------------------------------------------------------------------------
    async def run(self, dry_run: bool = False) -> RunReport:
        started = time.perf_counter()
        if not await self.conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_KEY):
            metrics.RUNS.labels("busy").inc()
            raise ArchiverBusy("another archiver run is in progress (PostgreSQL advisory lock held)")
        try:
            report = await self._run(dry_run)
        except BaseException:
            metrics.RUNS.labels("failed").inc()
            raise
        finally:
            await self.conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
        report.seconds = time.perf_counter() - started
        metrics.RUNS.labels("dry_run" if dry_run else "ok").inc()
        if not dry_run:
            metrics.RUN_SECONDS.observe(report.seconds)
            metrics.LAST_SUCCESS.set(time.time())
        return report

    async def _run(self, dry_run: bool) -> RunReport:
        s = self.settings
        run_started: datetime = await self.conn.fetchval("SELECT clock_timestamp()")
        report = RunReport(reference=s.reference(), cutoff_day=cutoff_day(s), dry_run=dry_run)
        archived = await self._archived_days()
        with_rides = await self.days_with_rides(None, report.cutoff_day)
        report.new_days = [d for d in with_rides if d not in archived]
        late_since = await self.conn.fetchval("SELECT at FROM archive_state WHERE name = $1", LATE_STATE)
        if late_since is not None:
            late = await self._late_days(late_since - timedelta(seconds=s.late_margin_s), report.cutoff_day)
            report.late_days = sorted(d for d in late if d in archived)
        todo = sorted(set(report.new_days) | set(report.late_days))
        if s.max_days_per_run > 0:
            todo = todo[: s.max_days_per_run]
        if not dry_run:
            dropped = await self._dropped_months()
            for day in todo:
                if self.stopping.is_set():
                    break
                outcome = await self.archive_day(day, merge=month_start(day) in dropped)
                report.days.append(outcome)
                archived.add(day)
            if not self.stopping.is_set() and len(todo) == len(set(report.new_days) | set(report.late_days)):
                await self.conn.execute(
                    "INSERT INTO archive_state (name, at) VALUES ($1, $2)"
                    " ON CONFLICT (name) DO UPDATE SET at = excluded.at",
                    LATE_STATE,
                    run_started,
                )
        await self._sweep_indices(report, archived, dry_run)
        if s.pg_retention_months > 0:
            await self._retention(report, archived, dry_run)
        report.pending = len([d for d in report.new_days if d not in archived]) if not dry_run else len(todo)
        metrics.DAYS_PENDING.set(report.pending)
        if archived:
            newest = max(archived)
            metrics.LAST_ARCHIVED_DAY.set(datetime.combine(newest, datetime.min.time(), UTC).timestamp())
        log.info("archive run", extra={"archive": report.summary()})
        return report

    # -- finding the work --------------------------------------------------------------------------
    async def days_with_rides(self, first: date | None, end: date) -> list[date]:
        """UTC days in [first, end) holding at least one ride: one index probe per day found."""
        days: list[date] = []
        lower = day_bounds(first)[0] if first else datetime(1, 1, 2, tzinfo=UTC)
        upper = day_bounds(end)[0]
        while True:
            found: datetime | None = await self.conn.fetchval(
                "SELECT min(from_date) FROM cab_rides WHERE from_date >= $1 AND from_date < $2", lower, upper
            )
            if found is None:
                return days
            day = found.astimezone(UTC).date()
            days.append(day)
            lower = day_bounds(day)[1]

    async def _archived_days(self) -> set[date]:
        return {r["day"] for r in await self.conn.fetch("SELECT day FROM archive_days")}

    async def _dropped_months(self) -> set[date]:
        return {r["month"] for r in await self.conn.fetch("SELECT month FROM archive_dropped_months")}

    async def _late_days(self, since: datetime, end: date) -> set[date]:
        rows = await self.conn.fetch(
            "SELECT DISTINCT (v.from_date AT TIME ZONE 'UTC')::date AS day"
            " FROM ride_receipts r JOIN ride_versions v ON v.booking_id = r.booking_id"
            " WHERE r.stored_at >= $1 AND r.outcome = 'stored' AND v.from_date < $2",
            since,
            day_bounds(end)[0],
        )
        return {r["day"] for r in rows}

    # -- one day -----------------------------------------------------------------------------------
    async def read_postgres_day(self, day: date) -> pa.Table:
        start, end = day_bounds(day)
        async with self.conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await self.conn.fetch(day_query(), start, end)
        return await asyncio.to_thread(lambda: canonical(rows_to_table(rows)))

    async def read_manifest(self, day: date) -> Manifest | None:
        raw = await asyncio.to_thread(self.store.get, self.store.manifest_key(day))
        return Manifest.from_json(raw) if raw is not None else None

    async def read_archived_day(self, manifest: Manifest) -> pa.Table:
        """The day's rows from its manifest's objects, each checked against its checksum."""
        tables = []
        for obj in manifest.objects:
            data = await asyncio.to_thread(self.store.get, obj.key)
            if data is None:
                raise ArchiveCorrupt(f"{obj.key}: listed in the manifest but missing")
            if len(data) != obj.bytes or sha256_hex(data) != obj.sha256:
                raise ArchiveCorrupt(f"{obj.key}: checksum or size differs from the manifest")
            tables.append(await asyncio.to_thread(_decode_canonical, data))  # older files aligned
        if not tables:
            return canonical(archive_schema().empty_table())
        return canonical(pa.concat_tables(tables))

    async def archive_day(self, day: date, merge: bool = False) -> DayOutcome:
        s = self.settings
        table = await self.read_postgres_day(day)
        existing = await self.read_manifest(day)
        source = "postgres"
        if existing is not None:
            try:
                archived = await self.read_archived_day(existing)
            except ArchiveCorrupt as exc:
                # The manifest is the commit point but the objects no longer match it: rewrite
                # from the system of record (a merged day cannot be, so that is left to verify).
                if merge:
                    raise
                log.warning("archived day unreadable; rewriting", extra={"day": str(day), "error": str(exc)})
                archived = None
            if archived is not None and merge:
                table = merge_latest(archived, table)
                source = "postgres+archive"
            if archived is not None and archived.equals(table):
                await self._record(day, existing, await self._manifest_sha(day))
                await self._delete_unlisted(day, existing)
                metrics.DAYS.labels("unchanged").inc()
                return DayOutcome(day, "unchanged", existing.rows, existing.total_bytes, existing.generation)
        if table.num_rows == 0 and existing is None:
            return DayOutcome(day, "empty")
        generation = (existing.generation if existing else 0) + 1
        objects: list[ManifestObject] = []
        for part, offset in enumerate(range(0, max(table.num_rows, 1), s.file_max_rows)):
            piece = table.slice(offset, s.file_max_rows)
            data = await asyncio.to_thread(encode_parquet, piece, s.row_group_rows)
            key = self.store.data_key(day, generation, part)
            await asyncio.to_thread(self.store.put, key, data)
            self.on_step("object_uploaded", day)
            back = await asyncio.to_thread(self.store.get, key)
            if back is None or sha256_hex(back) != sha256_hex(data):
                raise ArchiveCorrupt(f"{key}: the object read back differs from the one written")
            if not (await asyncio.to_thread(_decode_canonical, back)).equals(piece):
                raise ArchiveCorrupt(f"{key}: the rows read back differ from PostgreSQL's")
            objects.append(ManifestObject(key, piece.num_rows, len(data), sha256_hex(data)))
        ids = table.column("booking_id")
        manifest = Manifest(
            day=day,
            generation=generation,
            rows=table.num_rows,
            min_booking_id=pc.min(ids).as_py() if table.num_rows else None,
            max_booking_id=pc.max(ids).as_py() if table.num_rows else None,
            objects=tuple(objects),
            schema_version=SCHEMA_VERSION,
            columns=describe_schema(archive_schema()),
            source_query=day_query(),
            source=source,
            created_at=datetime.now(UTC).isoformat(),
            extra={"from": day_bounds(day)[0].isoformat(), "to": day_bounds(day)[1].isoformat()},
        )
        body = manifest.to_json()
        self.on_step("manifest_ready", day)
        await asyncio.to_thread(self.store.put, self.store.manifest_key(day), body, "application/json")
        if await asyncio.to_thread(self.store.get, self.store.manifest_key(day)) != body:
            raise ArchiveCorrupt(f"{self.store.manifest_key(day)}: the manifest read back differs")
        self.on_step("manifest_written", day)
        await self._delete_unlisted(day, manifest)
        await self._record(day, manifest, sha256_hex(body))
        action = "merged" if source != "postgres" else ("rewritten" if existing else "archived")
        metrics.DAYS.labels(action).inc()
        metrics.ROWS.inc(manifest.rows)
        metrics.BYTES.inc(manifest.total_bytes)
        log.info(
            "day archived",
            extra={"day": str(day), "action": action, "rows": manifest.rows, "generation": generation},
        )
        return DayOutcome(day, action, manifest.rows, manifest.total_bytes, generation)

    async def _manifest_sha(self, day: date) -> str:
        raw = await asyncio.to_thread(self.store.get, self.store.manifest_key(day))
        return sha256_hex(raw or b"")

    async def _delete_unlisted(self, day: date, manifest: Manifest) -> None:
        listed = {o.key for o in manifest.objects} | {self.store.manifest_key(day)}
        for obj in await asyncio.to_thread(self.store.objects, self.store.day_prefix(day)):
            if obj.key not in listed:
                await asyncio.to_thread(self.store.delete, obj.key)

    async def _record(self, day: date, manifest: Manifest, manifest_sha: str) -> None:
        await self.conn.execute(
            "INSERT INTO archive_days (day, generation, rows, bytes, manifest_key, manifest_sha256)"
            " VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT (day) DO UPDATE SET generation = excluded.generation, rows = excluded.rows,"
            " bytes = excluded.bytes, manifest_sha256 = excluded.manifest_sha256, archived_at = now()"
            " WHERE archive_days.manifest_sha256 <> excluded.manifest_sha256",
            day,
            manifest.generation,
            manifest.rows,
            manifest.total_bytes,
            self.store.manifest_key(day),
            manifest_sha,
        )
        self.on_step("recorded", day)
        await self._delete_index(day)

    # -- Elasticsearch -----------------------------------------------------------------------------
    async def _delete_index(self, day: date) -> bool:
        name = index_name(self.settings.es_rides_prefix, day)
        response = await self.es.options(ignore_status=404).indices.delete(index=name)
        deleted = response.meta.status == 200
        if deleted:
            metrics.ES_INDICES_DELETED.inc()
            await self.conn.execute("UPDATE archive_days SET es_index_deleted_at = now() WHERE day = $1", day)
        return deleted

    async def _sweep_indices(self, report: RunReport, archived: set[date], dry_run: bool) -> None:
        """Daily indices past the hot window: deleted once archived, kept (and reported) otherwise."""
        prefix = self.settings.es_rides_prefix
        found = await self.es.indices.get(
            index=f"{prefix}*", ignore_unavailable=True, allow_no_indices=True, expand_wildcards="open"
        )
        for name in sorted(found.body):
            day = index_day(prefix, name)
            if day is None or day >= report.cutoff_day:
                continue
            if day in archived and (dry_run or await self._delete_index(day)):
                report.es_indices_deleted.append(name)
            elif day not in archived:
                report.es_indices_kept.append(name)

    # -- PostgreSQL retention (off by default) -----------------------------------------------------
    async def _retention(self, report: RunReport, archived: set[date], dry_run: bool) -> None:
        """Drop monthly partitions older than ``pg_retention_months`` whose every day is archived
        with the row count PostgreSQL holds."""
        ref = report.reference.astimezone(UTC).date().replace(day=1)
        index = ref.year * 12 + ref.month - 1 - self.settings.pg_retention_months
        keep_from = min(date(index // 12, index % 12 + 1, 1), month_start(report.cutoff_day))
        partitions = await self.conn.fetch(
            "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'cab_rides'::regclass ORDER BY 1"
        )
        for row in partitions:
            name = row["name"]
            try:
                month = datetime.strptime(name, "cab_rides_%Y_%m").date()
            except ValueError:
                continue
            if month >= keep_from:
                continue
            counts = await self.conn.fetch(
                f"SELECT (from_date AT TIME ZONE 'UTC')::date AS day, count(*) AS n FROM {name} GROUP BY 1"  # noqa: S608 - a partition name from the catalog
            )
            recorded = {
                r["day"]: r["rows"]
                for r in await self.conn.fetch(
                    "SELECT day, rows FROM archive_days WHERE day = ANY($1::date[])",
                    [c["day"] for c in counts],
                )
            }
            unsafe = [c["day"] for c in counts if recorded.get(c["day"]) != c["n"]]
            if unsafe:
                log.warning(
                    "partition kept: days not archived with the same row count",
                    extra={"partition": name, "days": [str(d) for d in unsafe[:10]]},
                )
                continue
            report.partitions_dropped.append(name)
            if dry_run:
                continue
            async with self.conn.transaction():
                # The archiver's role does not own cab_rides: drop_ride_partition (migration 0004)
                # detaches and drops as the owner, after checking the archive holds every day.
                await self.conn.execute("SELECT drop_ride_partition($1)", month)
                await self.conn.execute(
                    "INSERT INTO archive_dropped_months (month, rows) VALUES ($1, $2)"
                    " ON CONFLICT (month) DO UPDATE SET rows = archive_dropped_months.rows + excluded.rows,"
                    " dropped_at = now()",
                    month,
                    sum(c["n"] for c in counts),
                )
            log.info("partition dropped", extra={"partition": name, "rows": sum(c["n"] for c in counts)})


__all__ = ["COLUMNS", "ArchiveCorrupt", "Archiver", "ArchiverBusy", "DayOutcome", "RunReport"]
