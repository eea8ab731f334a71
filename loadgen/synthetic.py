"""The same synthetic rides in all three stores, for the cross-backend tests, the oracle, the docs and
the benchmark.

Rides come from :class:`loadgen.rides.RideGenerator` (XRides' 2013 mix, Bangalore areas) with
booking times spread uniformly over ``days`` days before ``now``; 60% get a drop-off time. With
``subsecond`` a share of them gets timestamps with milliseconds (ISO 8601), so that some minute
differences fall exactly on a rounding tie (an odd multiple of 0.3 s): the enrichment's rounding
must then be reproduced exactly by every engine. Each ride goes through
:func:`xrides.ride.parse_ride` and is then written as the platform writes it: a PostgreSQL table with
the columns of ``postgres_columns()`` (and the platform's indices on ``from_date`` and
``booking_created``), Elasticsearch documents built by the Flink job's own ``enrich`` (in the
configured ``local_zone``) under its index template, and Parquet files of ``parquet_schema()`` under
``dt=YYYY-MM-DD`` (UTC day of the pickup).

A :class:`Layout` places rides as the platform does: PostgreSQL holds every ride, Elasticsearch
the hot days (pickups from ``hot_from``), the archive the days before ``archive_before``; by
default every store holds every ride. :func:`drop_all` deletes what a test wrote.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from elasticsearch import AsyncElasticsearch, helpers

from loadgen.rides import KOLKATA, RideGenerator, legacy_date
from query_dsl.compile_pg import quote_table
from query_dsl.settings import QuerySettings
from xrides.ride import (
    RIDE_FIELDS,
    Kind,
    Ride,
    format_timestamp,
    parquet_schema,
    parse_ride,
    postgres_columns,
)
from xrides.ride.enrich import ServiceRegion, daily_index, enrich
from xrides.search.client import connect
from xrides.search.templates import rides_template

# Milliseconds given to sub-second timestamps: with whole seconds, 300, 500 and 900 put a third of
# the differences on a tie of the 2-decimal minute rounding.
_MILLIS = (0, 100, 300, 500, 700, 900)


def _subsecond(wire: dict[str, Any], rng: random.Random) -> None:
    """The ride's timestamps as ISO 8601 with milliseconds (the contract accepts both forms)."""
    for name in ("booking_created", "from_date", "to_date"):
        if wire[name] is not None:
            local = datetime.strptime(wire[name], "%m/%d/%Y %H:%M:%S").replace(tzinfo=KOLKATA)
            wire[name] = (local + timedelta(milliseconds=rng.choice(_MILLIS))).isoformat(
                timespec="milliseconds"
            )


def iter_rides(
    count: int, now: datetime, days: float, seed: int = 7, chunk: int = 50_000, subsecond: float = 0.0
) -> Iterator[list[Ride]]:
    """``count`` rides in chunks (a ten-million-ride benchmark does not fit in memory at once)."""
    generator = RideGenerator(seed=seed, first_booking_id=1)
    rng = random.Random(seed)
    rides: list[Ride] = []
    for _ in range(count):
        created = now - timedelta(seconds=rng.uniform(0, days * 86400))
        wire = generator.ride(created.astimezone(KOLKATA).replace(microsecond=0))
        if rng.random() < 0.6:
            pickup = datetime.strptime(wire["from_date"], "%m/%d/%Y %H:%M:%S").replace(tzinfo=KOLKATA)
            wire["to_date"] = legacy_date(pickup + timedelta(minutes=rng.uniform(5, 90)))
        if subsecond and rng.random() < subsecond:
            _subsecond(wire, rng)
        rides.append(parse_ride(wire))
        if len(rides) == chunk:
            yield rides
            rides = []
    if rides:
        yield rides


def make_rides(count: int, now: datetime, days: float, seed: int = 7, subsecond: float = 0.0) -> list[Ride]:
    return [ride for chunk in iter_rides(count, now, days, seed, subsecond=subsecond) for ride in chunk]


@dataclass(frozen=True, slots=True)
class Layout:
    """Which rides each store gets, by pickup: Elasticsearch from ``hot_from``, the archive before
    ``archive_before`` (None: every ride). PostgreSQL, the system of record, gets them all."""

    hot_from: datetime | None = None
    archive_before: datetime | None = None

    def in_elasticsearch(self, ride: Ride) -> bool:
        return self.hot_from is None or ride.from_date >= self.hot_from

    def in_archive(self, ride: Ride) -> bool:
        return self.archive_before is None or ride.from_date < self.archive_before


def table_ddl(table: str) -> str:
    """The system of record's table shape (columns from the ride contract), partitioned by month."""
    columns = [
        f"{name} {pg_type}{'' if nullable else ' NOT NULL'}"
        for name, (pg_type, nullable) in postgres_columns().items()
    ]
    columns += [
        "kafka_partition integer NOT NULL DEFAULT 0",
        "kafka_offset bigint NOT NULL DEFAULT 0",
        "version bigint NOT NULL DEFAULT 0",
        "source text NOT NULL DEFAULT 'synthetic'",
        "received_at timestamptz NOT NULL DEFAULT now()",
        "stored_at timestamptz NOT NULL DEFAULT now()",
        "PRIMARY KEY (booking_id, from_date)",
    ]
    return f"CREATE TABLE {table} ({', '.join(columns)}) PARTITION BY RANGE (from_date)"


def _pg_value(kind: Kind, value: Any) -> Any:
    if value is not None and kind in (Kind.LATITUDE, Kind.LONGITUDE):
        return Decimal(repr(value))
    return value


class Loader:
    """Writes chunks of rides to the three stores, replacing what the test names held before."""

    def __init__(self, settings: QuerySettings, layout: Layout | None = None) -> None:
        self.settings = settings
        self.layout = layout or Layout()
        self.timings: dict[str, float] = defaultdict(float)
        self._conn: asyncpg.Connection | None = None
        self._es: AsyncElasticsearch | None = None
        self._parts = 0
        self._archive: Any = None

    async def __aenter__(self) -> Loader:
        s = self.settings
        started = time.perf_counter()
        quoted = quote_table(s.query_pg_table)
        self._conn = await asyncpg.connect(s.pg_dsn)
        if "." in s.query_pg_table:
            await self._conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{s.query_pg_table.split(".")[0]}"')
        await self._conn.execute(f"DROP TABLE IF EXISTS {quoted}")
        await self._conn.execute(table_ddl(quoted))
        await self._conn.execute(
            f"CREATE TABLE {quote_table(s.query_pg_table + '_default')} PARTITION OF {quoted} DEFAULT"
        )
        self.timings["postgres_s"] += time.perf_counter() - started

        started = time.perf_counter()
        self._es = connect(s.es_url, request_timeout=300)
        await _drop_indices(self._es, s.es_rides_prefix)
        template = rides_template(s.es_rides_prefix)
        template["template"]["settings"]["refresh_interval"] = "30s"  # bulk loading; refreshed at the end
        await self._es.indices.put_index_template(name=f"{s.es_rides_prefix}template", **template)
        self.timings["elasticsearch_s"] += time.perf_counter() - started

        from query_dsl.archive import ArchiveReader  # noqa: PLC0415 - pyarrow only when loading

        started = time.perf_counter()
        self._archive = ArchiveReader(s)
        _drop_archive(self._archive)
        self.timings["archive_s"] += time.perf_counter() - started
        return self

    async def add(self, rides: list[Ride]) -> None:
        await self._postgres(rides)
        self._parquet([r for r in rides if self.layout.in_archive(r)])
        await self._elasticsearch([r for r in rides if self.layout.in_elasticsearch(r)])
        self._parts += 1

    async def _postgres(self, rides: list[Ride]) -> None:
        assert self._conn is not None
        started = time.perf_counter()
        parts = self.settings.query_pg_table.split(".")
        records = [tuple(_pg_value(f.kind, getattr(r, f.name)) for f in RIDE_FIELDS) for r in rides]
        await self._conn.copy_records_to_table(
            parts[-1],
            records=records,
            columns=[f.name for f in RIDE_FIELDS],
            schema_name=parts[0] if len(parts) == 2 else None,
        )
        self.timings["postgres_s"] += time.perf_counter() - started

    def _parquet(self, rides: list[Ride]) -> None:
        import pyarrow as pa  # noqa: PLC0415
        import pyarrow.parquet as pq  # noqa: PLC0415

        started = time.perf_counter()
        by_day: dict[str, list[Ride]] = defaultdict(list)
        for ride in rides:
            by_day[ride.from_date.astimezone(UTC).date().isoformat()].append(ride)
        schema = parquet_schema()
        fs = self._archive.filesystem()
        for day, day_rides in sorted(by_day.items()):
            columns = {f.name: [getattr(r, f.name) for r in day_rides] for f in RIDE_FIELDS}
            table = pa.Table.from_pydict(columns, schema=schema)
            pq.write_table(
                table, f"{self._archive.base}/dt={day}/part-{self._parts:05d}.parquet", filesystem=fs
            )
        self.timings["archive_s"] += time.perf_counter() - started

    async def _elasticsearch(self, rides: list[Ride]) -> None:
        assert self._es is not None
        started = time.perf_counter()
        prefix = self.settings.es_rides_prefix
        zone, region = ZoneInfo(self.settings.local_zone), ServiceRegion()

        def actions() -> Iterator[dict[str, Any]]:
            for ride in rides:
                doc = enrich(ride, zone, region)
                doc["version"] = 1
                doc["received_at"] = format_timestamp(ride.booking_created)
                yield {"_index": daily_index(prefix, ride), "_id": str(ride.booking_id), "_source": doc}

        await helpers.async_bulk(self._es, actions(), chunk_size=5000, refresh=False, max_retries=3)
        self.timings["elasticsearch_s"] += time.perf_counter() - started

    async def __aexit__(self, *exc: object) -> None:
        s = self.settings
        try:
            if exc[0] is None:
                assert self._conn is not None
                assert self._es is not None
                started = time.perf_counter()
                await self._conn.execute(f"CREATE INDEX ON {quote_table(s.query_pg_table)} (from_date)")
                await self._conn.execute(f"CREATE INDEX ON {quote_table(s.query_pg_table)} (booking_created)")
                await self._conn.execute(f"ANALYZE {quote_table(s.query_pg_table)}")
                self.timings["postgres_s"] += time.perf_counter() - started
                started = time.perf_counter()
                await self._es.indices.refresh(index=f"{s.es_rides_prefix}*")
                self.timings["elasticsearch_s"] += time.perf_counter() - started
        finally:
            if self._conn is not None:
                await self._conn.close()
            if self._es is not None:
                await self._es.close()


async def load_all(
    settings: QuerySettings, chunks: Iterable[list[Ride]], layout: Layout | None = None
) -> dict[str, float]:
    """Load chunks of rides into all three stores; returns the seconds spent on each store."""
    async with Loader(settings, layout) as loader:
        for chunk in chunks:
            await loader.add(chunk)
    return {k: round(v, 1) for k, v in loader.timings.items()}


async def _drop_indices(es: AsyncElasticsearch, prefix: str) -> None:
    existing = await es.indices.get(index=f"{prefix}*", ignore_unavailable=True, allow_no_indices=True)
    for name in existing.body:
        await es.indices.delete(index=name)


def _drop_archive(archive: Any) -> None:
    from pyarrow import fs as pafs  # noqa: PLC0415

    filesystem = archive.filesystem()
    # one object at a time: s3proxy fails batch deletes (DeleteObjects) of many keys
    for info in filesystem.get_file_info(
        pafs.FileSelector(archive.base, allow_not_found=True, recursive=True)
    ):
        if info.type == pafs.FileType.File:
            filesystem.delete_file(info.path)


async def drop_all(settings: QuerySettings) -> None:
    """Delete what :class:`Loader` wrote under these settings' names: the table (and its schema when it
    has one of its own), the indices and their template, the Parquet files."""
    from query_dsl.archive import ArchiveReader  # noqa: PLC0415

    conn = await asyncpg.connect(settings.pg_dsn)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {quote_table(settings.query_pg_table)}")
        if "." in settings.query_pg_table:
            schema = settings.query_pg_table.split(".")[0]
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_table(schema)}")  # only if empty
    finally:
        await conn.close()
    es = connect(settings.es_url, request_timeout=120)
    try:
        await _drop_indices(es, settings.es_rides_prefix)
        template = f"{settings.es_rides_prefix}template"
        if await es.indices.exists_index_template(name=template):
            await es.indices.delete_index_template(name=template)
    finally:
        await es.close()
    _drop_archive(ArchiveReader(settings))
