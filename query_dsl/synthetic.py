"""The same synthetic rides in all three stores, for the cross-backend tests, the docs and the benchmark.

Rides come from :class:`loadgen.rides.RideGenerator` (XRides' 2013 mix, Bangalore areas) with
booking times spread uniformly over ``days`` days before ``now``; 60% get a drop-off time. Each
ride goes through :func:`xrides.ride.parse_ride` and is then written as the platform writes it:
a PostgreSQL table with the columns of ``postgres_columns()``, Elasticsearch documents built by
the Flink job's own ``enrich`` under its index template, and Parquet files of ``parquet_schema()``
under ``dt=YYYY-MM-DD`` (UTC day of the pickup).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from elasticsearch import AsyncElasticsearch, helpers

from flink_jobs.enrich import ServiceRegion, daily_index, enrich
from flink_jobs.mapping import rides_template
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


def make_rides(count: int, now: datetime, days: float, seed: int = 7) -> list[Ride]:
    generator = RideGenerator(seed=seed, first_booking_id=1)
    rng = random.Random(seed)
    rides = []
    for _ in range(count):
        created = now - timedelta(seconds=rng.uniform(0, days * 86400))
        wire = generator.ride(created.astimezone(KOLKATA).replace(microsecond=0))
        if rng.random() < 0.6:
            pickup = datetime.strptime(wire["from_date"], "%m/%d/%Y %H:%M:%S").replace(tzinfo=KOLKATA)
            wire["to_date"] = legacy_date(pickup + timedelta(minutes=rng.uniform(5, 90)))
        rides.append(parse_ride(wire))
    return rides


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


def _pg_value(spec_kind: Kind, value: Any) -> Any:
    if value is not None and spec_kind in (Kind.LATITUDE, Kind.LONGITUDE):
        return Decimal(repr(value))
    return value


async def load_postgres(dsn: str, table: str, rides: list[Ride]) -> None:
    quoted = quote_table(table)
    schema = table.split(".", maxsplit=1)[0] if "." in table else None
    conn = await asyncpg.connect(dsn)
    try:
        if schema:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(f"DROP TABLE IF EXISTS {quoted}")
        await conn.execute(table_ddl(quoted))
        default = quote_table(f"{table}_default")
        await conn.execute(f"CREATE TABLE {default} PARTITION OF {quoted} DEFAULT")
        await conn.execute(f"CREATE INDEX ON {quoted} (from_date)")
        names = [f.name for f in RIDE_FIELDS]
        records = [tuple(_pg_value(f.kind, getattr(r, f.name)) for f in RIDE_FIELDS) for r in rides]
        parts = table.split(".")
        await conn.copy_records_to_table(
            parts[-1], records=records, columns=names, schema_name=parts[0] if len(parts) == 2 else None
        )
        await conn.execute(f"ANALYZE {quoted}")
    finally:
        await conn.close()


async def load_elasticsearch(url: str, prefix: str, rides: list[Ride], chunk: int = 5000) -> None:
    client = AsyncElasticsearch(url, request_timeout=120)
    try:
        existing = await client.indices.get(
            index=f"{prefix}*", ignore_unavailable=True, allow_no_indices=True
        )
        for name in existing.body:
            await client.indices.delete(index=name)
        await client.indices.put_index_template(name=f"{prefix}template", **rides_template(prefix))
        zone, region = ZoneInfo("Asia/Kolkata"), ServiceRegion()

        def actions() -> Iterator[dict[str, Any]]:
            for ride in rides:
                doc = enrich(ride, zone, region)
                doc["version"] = 1
                doc["received_at"] = format_timestamp(ride.booking_created)
                yield {"_index": daily_index(prefix, ride), "_id": str(ride.booking_id), "_source": doc}

        await helpers.async_bulk(client, actions(), chunk_size=chunk, refresh=False, max_retries=3)
        await client.indices.refresh(index=f"{prefix}*")
    finally:
        await client.close()


def load_archive(settings: QuerySettings, rides: list[Ride]) -> None:
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    from query_dsl.backends import ArchiveReader  # noqa: PLC0415

    reader = ArchiveReader(settings)
    fs = reader.filesystem()
    fs.create_dir(reader.base, recursive=True)
    fs.delete_dir_contents(reader.base, missing_dir_ok=True)
    by_day: dict[str, list[Ride]] = defaultdict(list)
    for ride in rides:
        by_day[ride.from_date.astimezone(UTC).date().isoformat()].append(ride)
    schema = parquet_schema()
    for day, day_rides in sorted(by_day.items()):
        columns = {f.name: [getattr(r, f.name) for r in day_rides] for f in RIDE_FIELDS}
        table = pa.Table.from_pydict(columns, schema=schema)
        pq.write_table(table, f"{reader.base}/dt={day}/part-0.parquet", filesystem=fs)


async def load_all(settings: QuerySettings, rides: list[Ride]) -> None:
    await load_postgres(settings.pg_dsn, settings.query_pg_table, rides)
    await load_elasticsearch(settings.es_url, settings.es_rides_prefix, rides)
    load_archive(settings, rides)
