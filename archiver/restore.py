"""``restore``: re-drive archived days back into PostgreSQL and/or Elasticsearch, idempotently.

PostgreSQL: the archived rows go through the persister's own version guard, the SQL function
``apply_staged_rides`` (xrides/db/rides.py): a row is applied only if it is at least as new, by
``(version, kafka_offset)``, as what ``ride_versions`` records for its booking, so a restore never
overwrites a newer ride and running it twice changes nothing. A row
missing from ``cab_rides`` (a dropped partition, a lost table) is inserted with every archived
column, ``stored_at`` included: the day comes back exactly as it was archived.

Elasticsearch: documents are built by the Flink job's own ``enrich`` and written with
``external_gte`` versions, like the indexer's. A restored day older than the hot window is removed
again by the next ``run`` (the archive is where such days live); restore it to look at it in Kibana.

``--dry-run`` does the PostgreSQL work inside a transaction that is rolled back, and asks
Elasticsearch which documents are missing or older, so its counts are what a real run would do.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, date
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pyarrow as pa
from elasticsearch import helpers

from archiver.archive import Archiver, index_name, month_start
from xrides.archive.schema import COLUMNS
from xrides.db.rides import ROW_COLUMNS
from xrides.errors import XRidesError
from xrides.ride import RIDE_FIELDS, Kind, Ride, format_timestamp
from xrides.ride.enrich import ServiceRegion, enrich
from xrides.search.templates import rides_template, template_name

_RIDE_NAMES = tuple(f.name for f in RIDE_FIELDS)
_NUMERIC = {f.name for f in RIDE_FIELDS if f.kind in (Kind.LATITUDE, Kind.LONGITUDE)}
assert COLUMNS == ROW_COLUMNS, "an archived row is a cab_rides row, column for column"


class RestoreError(XRidesError):
    """A day asked for has no manifest, or its objects fail their checksums."""


class _Rollback(Exception):
    """Ends a dry-run transaction."""


@dataclass(slots=True)
class DayRestore:
    day: date
    archived: int
    pg_inserted: int = 0
    pg_updated: int = 0
    pg_unchanged: int = 0
    es_written: int = 0
    es_unchanged: int = 0


@dataclass(slots=True)
class RestoreReport:
    dry_run: bool
    days: list[DayRestore] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        totals = {
            k: sum(getattr(d, k) for d in self.days)
            for k in ("archived", "pg_inserted", "pg_updated", "pg_unchanged", "es_written", "es_unchanged")
        }
        return {"dry_run": self.dry_run, "days": len(self.days), **totals}


def table_rides(table: pa.Table) -> list[tuple[Ride, dict[str, Any]]]:
    """Each archived row as a :class:`Ride` (with what the parser stored beside it) and its
    ingestion metadata."""
    out = []
    for row in table.to_pylist():
        extras = orjson.loads(row["extras"]) if row["extras"] else None
        ride = Ride(
            **{name: row[name] for name in _RIDE_NAMES}, to_date_day=row["to_date_day"], extras=extras
        )
        out.append((ride, {k: row[k] for k in COLUMNS if k not in _RIDE_NAMES}))
    return out


def _end_dry_run(dry_run: bool) -> None:
    if dry_run:
        raise _Rollback


async def _to_postgres(archiver: Archiver, table: pa.Table, result: DayRestore, dry_run: bool) -> None:
    conn = archiver.conn
    # repr() of a float is its shortest exact decimal: the digits the client sent (as the persister)
    rows = table.to_pylist()
    records = [
        tuple(Decimal(repr(row[c])) if c in _NUMERIC and row[c] is not None else row[c] for c in COLUMNS)
        for row in rows
    ]
    for month in sorted({month_start(row["from_date"].astimezone(UTC).date()) for row in rows}):
        await conn.execute("SELECT ensure_ride_partition($1)", month)
    try:
        async with conn.transaction():
            await conn.execute(
                "CREATE TEMP TABLE stage_rides (LIKE cab_rides INCLUDING DEFAULTS) ON COMMIT DROP"
            )
            await conn.copy_records_to_table("stage_rides", records=records, columns=COLUMNS)
            await conn.execute(
                "INSERT INTO customers (user_id) SELECT DISTINCT user_id FROM stage_rides ORDER BY 1"
                " ON CONFLICT (user_id) DO NOTHING;"
                " INSERT INTO cab_drivers (driver_id, vehicle_model_id)"
                " SELECT DISTINCT ON (driver_id) driver_id, vehicle_model_id FROM stage_rides"
                " ORDER BY driver_id, version DESC ON CONFLICT (driver_id) DO NOTHING"
            )
            # the version guard the persister applies too (xrides/db/rides.py)
            applied = await conn.fetch("SELECT booking_id, inserted FROM apply_staged_rides(true)")
            result.pg_inserted = sum(1 for r in applied if r["inserted"])
            result.pg_updated = len(applied) - result.pg_inserted
            result.pg_unchanged = len(records) - len(applied)
            _end_dry_run(dry_run)
    except _Rollback:
        pass


async def _to_elasticsearch(archiver: Archiver, table: pa.Table, result: DayRestore, dry_run: bool) -> None:
    s = archiver.settings
    es = archiver.es
    index = index_name(s.es_rides_prefix, result.day)
    zone, region = ZoneInfo(s.local_zone), ServiceRegion()
    rides = table_rides(table)
    current: dict[str, int] = {}
    if await es.indices.exists(index=index):
        for start in range(0, len(rides), 1000):
            ids = [str(r.booking_id) for r, _ in rides[start : start + 1000]]
            found = await es.mget(index=index, ids=ids, source=["version"])
            for doc in found["docs"]:
                if doc.get("found"):
                    current[doc["_id"]] = int(doc["_source"].get("version", 0))
    todo = [(r, m) for r, m in rides if current.get(str(r.booking_id), -1) < m["version"]]
    result.es_unchanged = len(rides) - len(todo)
    result.es_written = len(todo)
    if dry_run or not todo:
        return
    name = template_name(s.es_rides_prefix)
    if not await es.indices.exists_index_template(name=name):  # the indexer's (replicas, ILM) wins
        await es.indices.put_index_template(name=name, **rides_template(s.es_rides_prefix))

    def actions() -> Any:
        for ride, meta in todo:
            doc = enrich(ride, zone, region)
            doc["version"] = meta["version"]
            doc["received_at"] = format_timestamp(meta["received_at"])
            doc["contract_version"] = meta["contract_version"]
            yield {
                "_index": index,
                "_id": str(ride.booking_id),
                "version": meta["version"],
                "version_type": "external_gte",
                "_source": doc,
            }

    await helpers.async_bulk(es, actions(), chunk_size=2000, refresh="wait_for", max_retries=3)


async def restore(
    archiver: Archiver, first: date, last: date, to_postgres: bool, to_elasticsearch: bool, dry_run: bool
) -> RestoreReport:
    report = RestoreReport(dry_run)
    days = [d for d in await asyncio.to_thread(archiver.store.days) if first <= d <= last]
    for day in days:
        manifest = await archiver.read_manifest(day)
        if manifest is None:
            raise RestoreError(f"{day}: objects without a manifest; run `archiver verify` first")
        table = await archiver.read_archived_day(manifest)
        result = DayRestore(day, table.num_rows)
        if to_postgres:
            await _to_postgres(archiver, table, result, dry_run)
        if to_elasticsearch:
            await _to_elasticsearch(archiver, table, result, dry_run)
        report.days.append(result)
    return report


__all__ = ["DayRestore", "RestoreError", "RestoreReport", "restore", "table_rides"]
