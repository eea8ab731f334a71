"""The contract evolving against the real stores, in a database, index prefix and bucket prefix of
the test's own.

1. An archive written before contract 2 (its files and manifest lack the columns contract 2 added)
   still verifies against PostgreSQL and restores.
2. Adding an optional field to the field table brings the column (and the version guard that copies
   every column), the index mapping and the Parquet schema along; the old archive reads under it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pyarrow as pa
import pytest
from elasticsearch import AsyncElasticsearch

from archiver.archive import Archiver, decode_parquet, encode_parquet
from archiver.restore import restore
from archiver.settings import ArchiverSettings
from archiver.verify import verify
from loadgen.synthetic import make_rides
from persister.writer import Message, RideWriter
from xrides.archive.manifest import Manifest, ManifestObject, describe_schema
from xrides.archive.schema import STORED_FIELDS, align, archive_schema
from xrides.archive.store import ArchiveStore, sha256_hex
from xrides.db.migrate import migrate
from xrides.db.scratch import scratch_database
from xrides.ride import RIDE_FIELDS, FieldSpec, Kind, RideEnvelope
from xrides.ride.fields import CONTRACT_VERSION
from xrides.search.templates import rides_template, template_name

REFERENCE = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
FARE = FieldSpec("fare_inr", Kind.INT, True, "Fare in rupees", since=CONTRACT_VERSION + 1)
WITH_FARE = (*RIDE_FIELDS, FARE)


@dataclass
class Place:
    dsn: str
    settings: ArchiverSettings
    store: ArchiveStore


@pytest.fixture
async def place(stack_env: dict[str, str]) -> AsyncIterator[Place]:
    tag = uuid.uuid4().hex[:8]
    async with scratch_database(stack_env["XRIDES_PG_DSN"], f"xrides_contract_{tag}") as dsn:
        async for place in _place(stack_env, tag, dsn):
            yield place


async def _place(stack_env: dict[str, str], tag: str, dsn: str) -> AsyncIterator[Place]:
    settings = ArchiverSettings(
        pg_dsn=dsn,
        es_url=stack_env["XRIDES_ES_URL"],
        es_rides_prefix=f"contract{tag}-rides-",
        s3_endpoint=stack_env["XRIDES_S3_ENDPOINT"],
        s3_access_key=stack_env["XRIDES_S3_ACCESS_KEY"],
        s3_secret_key=stack_env["XRIDES_S3_SECRET_KEY"],
        s3_bucket=stack_env["XRIDES_S3_BUCKET"],
        archive_prefix=f"contract/{tag}/rides",
        reference_time=REFERENCE.isoformat(),
    )
    store = ArchiveStore(settings.store_config())
    try:
        yield Place(dsn, settings, store)
    finally:
        for obj in store.objects(store.prefix + "/"):
            store.delete(obj.key)
        es = AsyncElasticsearch(settings.es_url)
        try:
            found = await es.indices.get(index=f"{settings.es_rides_prefix}*", allow_no_indices=True)
            if found:
                await es.indices.delete(index=",".join(found))
            await es.options(ignore_status=404).indices.delete_index_template(
                name=template_name(settings.es_rides_prefix)
            )
        finally:
            await es.close()


async def _store_a_day(place: Place) -> date:
    """A day of rides stored by the persister's writer, as rows stored before contract 2 look."""
    day = (REFERENCE - timedelta(days=90)).date()
    rides = [
        r for r in make_rides(200, REFERENCE - timedelta(days=89), 1, seed=5) if r.from_date.date() == day
    ]
    assert len(rides) > 20
    messages = [
        Message("rides", 0, n, None, b"", RideEnvelope(ride, 1_700_000_000_000_000 + n, contract=1))
        for n, ride in enumerate(rides)
    ]
    writer = RideWriter(place.dsn, "contract-test")
    try:
        await writer.write("rides", messages, {0: len(messages)})
    finally:
        await writer.close()
    conn = await asyncpg.connect(place.dsn)
    try:  # rows stored before migration 0005: its defaults
        await conn.execute("UPDATE cab_rides SET quality = '{}', contract_version = 1, to_date_day = NULL")
    finally:
        await conn.close()
    return day


async def _as_written_by_contract_1(place: Place, day: date) -> None:
    """Rewrite the day's archive as the archiver wrote it before contract 2: without the stored
    columns, in files and in the manifest."""
    store = place.store
    manifest = Manifest.from_json(store.get(store.manifest_key(day)) or b"")
    old_schema = pa.schema([f for f in archive_schema() if f.name not in {s.name for s in STORED_FIELDS}])
    objects = []
    for obj in manifest.objects:
        current = decode_parquet(store.get(obj.key) or b"")
        older = current.select(old_schema.names).cast(old_schema)
        data = encode_parquet(older, place.settings.row_group_rows)
        store.put(obj.key, data)
        objects.append(ManifestObject(obj.key, older.num_rows, len(data), sha256_hex(data)))
    old = replace(manifest, objects=tuple(objects), schema_version=1, columns=describe_schema(old_schema))
    store.put(store.manifest_key(day), old.to_json(), "application/json")
    conn = await asyncpg.connect(place.dsn)
    try:
        await conn.execute(
            "UPDATE archive_days SET manifest_sha256 = $2 WHERE day = $1", day, sha256_hex(old.to_json())
        )
    finally:
        await conn.close()


async def test_an_archive_written_before_contract_2_verifies_and_restores(place: Place) -> None:
    day = await _store_a_day(place)
    async with Archiver(place.settings) as archiver:
        run = await archiver.run()
        assert day in {d.day for d in run.days}
    await _as_written_by_contract_1(place, day)
    async with Archiver(place.settings) as archiver:
        report = await verify(archiver, day, day)
        (check,) = report.days
        assert check.problems == [] and check.compared_with_postgres and check.rows > 20
        conn = archiver.conn
        before = await conn.fetch("SELECT * FROM cab_rides ORDER BY booking_id")
        await conn.execute("DELETE FROM cab_rides")
        restored = await restore(archiver, day, day, to_postgres=True, to_elasticsearch=False, dry_run=False)
        assert restored.summary()["pg_inserted"] == len(before)
        after = await conn.fetch("SELECT * FROM cab_rides ORDER BY booking_id")
        assert [dict(r) for r in after] == [dict(r) for r in before]


async def test_a_new_optional_field_brings_its_column_mapping_and_parquet_along(place: Place) -> None:
    day = await _store_a_day(place)
    async with Archiver(place.settings) as archiver:
        await archiver.run()
    applied = await migrate(place.dsn, fields=WITH_FARE)
    assert [v.split("@")[0] for v in applied] == ["cab_rides_columns", "apply_staged_rides"]
    conn = await asyncpg.connect(place.dsn)
    try:
        column = await conn.fetchrow(
            "SELECT data_type, is_nullable FROM information_schema.columns"
            " WHERE table_name = 'cab_rides' AND column_name = 'fare_inr'"
        )
        assert column is not None and (column["data_type"], column["is_nullable"]) == ("integer", "YES")
        function = await conn.fetchval(
            "SELECT pg_get_functiondef('apply_staged_rides(boolean)'::regprocedure)"
        )
        assert "w.fare_inr" in function
    finally:
        await conn.close()
    assert await migrate(place.dsn, fields=WITH_FARE) == []  # applied once

    prefix = place.settings.es_rides_prefix
    es = AsyncElasticsearch(place.settings.es_url)
    try:
        await es.indices.put_index_template(name=template_name(prefix), **rides_template(prefix, WITH_FARE))
        index = f"{prefix}2026.03.03"
        await es.index(index=index, id="1", document={"booking_id": 1, "fare_inr": 640}, refresh=True)
        mapping = await es.indices.get_mapping(index=index)
        assert mapping[index]["mappings"]["properties"]["fare_inr"] == {"type": "integer"}
        with pytest.raises(Exception, match="strict_dynamic_mapping"):
            await es.index(index=index, id="2", document={"booking_id": 2, "tip_inr": 5})
    finally:
        await es.close()

    store = place.store
    manifest = Manifest.from_json(store.get(store.manifest_key(day)) or b"")
    old = decode_parquet(store.get(manifest.objects[0].key) or b"")
    aligned = align(old, archive_schema(WITH_FARE))
    assert aligned.column("fare_inr").null_count == aligned.num_rows == manifest.rows
    fares = aligned.set_column(aligned.schema.get_field_index("fare_inr"), "fare_inr", pa.array(
        range(aligned.num_rows), type=pa.int32()))  # fmt: skip
    back = decode_parquet(await asyncio.to_thread(encode_parquet, fares, 1000))
    assert back.equals(fares)
