"""The archiver on the real stack: PostgreSQL, Elasticsearch and the S3-compatible server.

Each test gets its own world, so nothing the platform writes is touched: a fresh database
(``xrides_archtest_<n>``, migrated like production), its own daily indices
(``archtest<n>-rides-*``) and its own archive prefix. Rides spread over 120 days before a fixed
reference time are stored through the persister's own writer (same version guard, same receipts),
and indexed as the Flink job would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from elasticsearch import AsyncElasticsearch, helpers

from archiver.archive import Archiver, cutoff_day, decode_parquet, encode_parquet, index_name
from archiver.restore import restore
from archiver.settings import ArchiverSettings
from archiver.verify import verify
from loadgen.synthetic import make_rides
from persister.writer import Message, RideWriter
from query_dsl import QueryEngine, QuerySettings, parse_document, plan_query
from xrides.archive.manifest import Manifest
from xrides.archive.schema import canonical
from xrides.archive.store import ArchiveStore
from xrides.db.scratch import scratch_database
from xrides.ride import Ride, RideEnvelope, format_timestamp
from xrides.ride.enrich import ServiceRegion, daily_index, enrich
from xrides.search.templates import rides_template, template_name

from stack_env import stack_setting

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REFERENCE = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
DAYS = 120
RIDES = 3_000


@dataclass
class World:
    settings: ArchiverSettings
    env: dict[str, str]
    offset: int = 0

    async def store_rides(self, rides: list[Ride], version_base: int = 1_000_000) -> None:
        """Through the persister's writer: one batch, receipts and all."""
        writer = RideWriter(self.settings.pg_dsn, "archtest")
        messages = []
        for ride in rides:
            self.offset += 1
            envelope = RideEnvelope(ride, version_base + self.offset, "api")
            messages.append(Message("rides", 0, self.offset, envelope.key(), envelope.encode(), envelope))
        try:
            await writer.write("rides", messages, {0: self.offset + 1})
        finally:
            await writer.close()

    async def index_rides(self, rides: list[Ride]) -> None:
        prefix = self.settings.es_rides_prefix
        es = AsyncElasticsearch(self.settings.es_url)
        try:
            await es.indices.put_index_template(name=template_name(prefix), **rides_template(prefix))

            def actions() -> Any:
                for ride in rides:
                    doc = enrich(ride, ZoneInfo("Asia/Kolkata"), ServiceRegion())
                    doc["version"] = 1
                    doc["received_at"] = format_timestamp(ride.booking_created)
                    yield {"_index": daily_index(prefix, ride), "_id": str(ride.booking_id), "_source": doc}

            await helpers.async_bulk(es, actions(), refresh=True)
        finally:
            await es.close()

    async def es_days(self) -> set[date]:
        prefix = self.settings.es_rides_prefix
        es = AsyncElasticsearch(self.settings.es_url)
        try:
            found = await es.indices.get(index=f"{prefix}*", allow_no_indices=True, ignore_unavailable=True)
        finally:
            await es.close()
        return {datetime.strptime(n.removeprefix(prefix), "%Y.%m.%d").date() for n in found.body}

    async def pg(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.settings.pg_dsn)
        try:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows
        finally:
            await conn.close()

    async def run(self, **changes: Any) -> Any:
        async with Archiver(replace(self.settings, **changes)) as archiver:
            return await archiver.run()


@pytest.fixture
async def world() -> AsyncIterator[World]:
    tag = uuid.uuid4().hex[:8]
    async with scratch_database(stack_setting("XRIDES_PG_DSN"), f"xrides_archtest_{tag}") as dsn:
        async for w in _world(tag, dsn):
            yield w


async def _world(tag: str, dsn: str) -> AsyncIterator[World]:
    settings = ArchiverSettings(
        pg_dsn=dsn,
        es_url=stack_setting("XRIDES_ES_URL"),
        es_rides_prefix=f"archtest{tag}-rides-",
        s3_endpoint=stack_setting("XRIDES_S3_ENDPOINT"),
        s3_access_key=stack_setting("XRIDES_S3_ACCESS_KEY"),
        s3_secret_key=stack_setting("XRIDES_S3_SECRET_KEY"),
        s3_bucket=stack_setting("XRIDES_S3_BUCKET"),
        archive_prefix=f"archtest/{tag}/rides",
        reference_time=REFERENCE.isoformat(),
        late_margin_s=600,
    )
    env = {
        **os.environ,
        "XRIDES_PG_DSN": settings.pg_dsn,
        "XRIDES_ES_URL": settings.es_url,
        "XRIDES_ES_RIDES_PREFIX": settings.es_rides_prefix,
        "XRIDES_S3_ENDPOINT": settings.s3_endpoint,
        "XRIDES_S3_ACCESS_KEY": settings.s3_access_key,
        "XRIDES_S3_SECRET_KEY": settings.s3_secret_key,
        "XRIDES_S3_BUCKET": settings.s3_bucket,
        "XRIDES_ARCHIVE_PREFIX": settings.archive_prefix,
        "XRIDES_REFERENCE_TIME": settings.reference_time,
        "XRIDES_LOG_LEVEL": "WARNING",
    }
    w = World(settings, env)
    rides = [r for r in make_rides(RIDES, REFERENCE, DAYS, seed=11) if r.from_date < REFERENCE]
    await w.store_rides(rides)
    await w.index_rides(rides)
    yield w
    store = ArchiveStore(settings.store_config())
    for obj in store.objects(store.prefix + "/"):
        store.delete(obj.key)
    es = AsyncElasticsearch(settings.es_url)
    try:
        for name in await w.es_days():
            await es.options(ignore_status=404).indices.delete(
                index=index_name(settings.es_rides_prefix, name)
            )
        await es.options(ignore_status=404).indices.delete_index_template(
            name=template_name(settings.es_rides_prefix)
        )
    finally:
        await es.close()


async def _pg_days(w: World) -> dict[date, int]:
    rows = await w.pg(
        "SELECT (from_date AT TIME ZONE 'UTC')::date AS d, count(*) AS n FROM cab_rides GROUP BY 1"
    )
    return {r["d"]: r["n"] for r in rows}


async def _assert_archive_equals_postgres(w: World, days: list[date]) -> None:
    async with Archiver(w.settings) as archiver:
        report = await verify(archiver, None, None)
        assert report.ok, report.problems
        checked = {c.day for c in report.days if c.compared_with_postgres}
        assert set(days) <= checked
        for day in days:  # row for row, every column, the types the schema says
            manifest = await archiver.read_manifest(day)
            assert manifest is not None
            assert (await archiver.read_archived_day(manifest)).equals(await archiver.read_postgres_day(day))


async def test_run_archives_every_old_day_and_leaves_the_hot_window_in_elasticsearch(world: World) -> None:
    w = world
    cutoff = cutoff_day(w.settings)
    assert cutoff == date(2026, 4, 2)
    per_day = await _pg_days(w)
    old = sorted(d for d in per_day if d < cutoff)
    hot = sorted(d for d in per_day if d >= cutoff)
    assert len(old) > 50
    assert len(hot) > 50

    report = await w.run()
    assert sorted(d.day for d in report.days) == old
    assert {d.action for d in report.days} == {"archived"}
    assert report.rows == sum(per_day[d] for d in old)
    await _assert_archive_equals_postgres(w, old)
    assert await w.es_days() == set(hot), "Elasticsearch holds exactly the days of the hot window"
    recorded = await w.pg("SELECT day, rows, es_index_deleted_at FROM archive_days ORDER BY day")
    assert [(r["day"], r["rows"]) for r in recorded] == [(d, per_day[d]) for d in old]
    assert all(r["es_index_deleted_at"] is not None for r in recorded)

    # An auditor's reading: the Hive layout as a partitioned dataset, with DuckDB over the files.
    store = ArchiveStore(w.settings.store_config())
    keys = [o.key for o in store.objects(store.prefix + "/") if o.key.endswith(".parquet")]
    assert len(keys) == len(old), "one file per day"
    con = duckdb.connect()
    local = Path(f"/tmp/{w.settings.es_rides_prefix}archive")
    for key in keys:
        target = local / key.removeprefix(store.prefix + "/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.get(key) or b"")
    counted = dict(
        con.execute(
            f"SELECT dt, count(*) FROM read_parquet('{local}/*/*.parquet', hive_partitioning = true) GROUP BY 1"
        ).fetchall()
    )
    assert {date.fromisoformat(str(k)[:10]): v for k, v in counted.items()} == {d: per_day[d] for d in old}
    first = pq.ParquetFile(local / keys[0].removeprefix(store.prefix + "/"))
    assert first.metadata.row_group(0).column(0).compression == "ZSTD"

    # The query DSL's archive backend reads what the archiver wrote, through the manifests.
    qs = QuerySettings(
        pg_dsn=w.settings.pg_dsn,
        es_url=w.settings.es_url,
        es_rides_prefix=w.settings.es_rides_prefix,
        s3_endpoint=w.settings.s3_endpoint,
        s3_access_key=w.settings.s3_access_key,
        s3_secret_key=w.settings.s3_secret_key,
        s3_bucket=w.settings.s3_bucket,
        archive_prefix=w.settings.archive_prefix,
    )
    document = (
        '{"measures": ["count", "cancellation_rate"], "dimensions": ["travel_type_id"],'
        f' "time_range": {{"from": "{old[0]}", "to": "{cutoff}"}}, "zone": "UTC"}}'
    )
    engine = QueryEngine(qs)
    try:
        query, params = parse_document(document)
        plan = plan_query(query, params, REFERENCE, qs.limits)
        from_archive = await engine.run(plan, "archive", REFERENCE)
        from_postgres = await engine.run(plan, "postgres", REFERENCE)
    finally:
        await engine.close()
    assert from_archive.rows == from_postgres.rows
    assert sum(r[1] for r in from_archive.rows) == sum(per_day[d] for d in old)

    again = await w.run()
    assert {d.action for d in again.days} <= {"unchanged"}, "a second run writes nothing"
    assert again.rows == 0


async def test_dry_run_changes_nothing(world: World) -> None:
    w = world
    async with Archiver(w.settings) as archiver:
        report = await archiver.run(dry_run=True)
    assert report.new_days
    assert not report.days
    assert len(report.es_indices_deleted) == 0
    store = ArchiveStore(w.settings.store_config())
    assert store.objects(store.prefix + "/") == []
    assert await w.pg("SELECT * FROM archive_days") == []


async def test_a_run_killed_midway_finishes_on_restart_with_nothing_missing_or_doubled(world: World) -> None:
    w = world
    cutoff = cutoff_day(w.settings)
    old = sorted(d for d in await _pg_days(w) if d < cutoff)
    store = ArchiveStore(w.settings.store_config())

    # 1. A crash between a day's uploads and its manifest (the worst moment): fault injection.
    victim = old[3]

    def crash(step: str, day: date) -> None:
        if step == "manifest_ready" and day == victim:
            raise SystemExit("killed")

    async with Archiver(w.settings) as archiver:
        archiver.on_step = crash
        with pytest.raises(SystemExit):
            await archiver.run()
    assert store.get(store.manifest_key(victim)) is None
    assert any(o.key.endswith(".parquet") for o in store.objects(store.day_prefix(victim)))

    # 2. A real SIGKILL of the command-line run, part-way through the remaining days.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "archiver", "run", cwd=REPO, env=w.env, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.returncode is None:
        done = await w.pg("SELECT count(*) AS n FROM archive_days")
        if done[0]["n"] >= 15:
            break
        await asyncio.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    partial = (await w.pg("SELECT count(*) AS n FROM archive_days"))[0]["n"]
    assert partial < len(old), "the kill landed before the end (raise the day count if this fails)"

    report = await w.run()
    assert report.pending == 0
    await _assert_archive_equals_postgres(w, old)
    for day in old:
        keys = [o.key for o in store.objects(store.day_prefix(day))]
        assert len(keys) == 2, f"{day}: exactly one data file and the manifest, found {keys}"
    assert not {d for d in await w.es_days() if d < cutoff}


async def test_late_data_for_an_archived_day_is_merged_into_one_file(world: World) -> None:
    w = world
    await w.run()
    cutoff = cutoff_day(w.settings)
    day = sorted(d for d in await _pg_days(w) if d < cutoff)[10]
    store = ArchiveStore(w.settings.store_config())
    before = Manifest.from_json(store.get(store.manifest_key(day)) or b"")

    # A new ride for that day, and a cancellation of one already archived (a newer version).
    template = make_rides(1, REFERENCE, 1, seed=99)[0]
    start = datetime.combine(day, datetime.min.time(), UTC)
    late = replace(template, booking_id=9_000_001, from_date=start + timedelta(hours=5), to_date=None)
    archived_row = (
        await w.pg(
            "SELECT booking_id FROM cab_rides WHERE from_date >= $1 AND from_date < $2 LIMIT 1",
            start,
            start + timedelta(days=1),
        )
    )[0]["booking_id"]
    existing = await w.pg("SELECT * FROM cab_rides WHERE booking_id = $1", archived_row)
    as_ride = {k: existing[0][k] for k in Ride.__dataclass_fields__}
    for key in ("from_lat", "from_long", "to_lat", "to_long"):
        as_ride[key] = None if as_ride[key] is None else float(as_ride[key])
    cancelled = replace(Ride(**as_ride), car_cancellation=1)
    await w.store_rides([late, cancelled], version_base=5_000_000)

    report = await w.run()
    assert [(d.day, d.action) for d in report.days if d.action != "unchanged"] == [(day, "rewritten")]
    after = Manifest.from_json(store.get(store.manifest_key(day)) or b"")
    assert after.generation == before.generation + 1
    assert after.rows == before.rows + 1
    keys = sorted(o.key for o in store.objects(store.day_prefix(day)))
    assert len(keys) == 2, f"one data file and the manifest, not a pile of small files: {keys}"
    await _assert_archive_equals_postgres(w, [day])
    async with Archiver(w.settings) as archiver:
        table = await archiver.read_archived_day(after)
    by_id = {r["booking_id"]: r for r in table.to_pylist()}
    assert by_id[archived_row]["car_cancellation"] == 1
    assert 9_000_001 in by_id


async def test_a_tampered_object_makes_verify_fail(world: World) -> None:
    w = world
    await w.run()
    store = ArchiveStore(w.settings.store_config())
    day = sorted(store.days())[5]
    manifest = Manifest.from_json(store.get(store.manifest_key(day)) or b"")
    key = manifest.objects[0].key
    table = decode_parquet(store.get(key) or b"")
    fares = table.column("car_cancellation").to_pylist()
    fares[0] = 1 - fares[0]
    column = table.schema.get_field_index("car_cancellation")
    tampered = table.set_column(column, table.schema.field(column), pa.array(fares, type=pa.int8()))
    store.put(key, encode_parquet(tampered, 1000))

    async with Archiver(w.settings) as archiver:
        report = await verify(archiver, day, day)
    assert not report.ok
    assert any(key in p and "sha256" in p for p in report.problems)
    assert any("car_cancellation" in p for p in report.problems), report.problems

    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "archiver", "verify", "--from", str(day), "--to", str(day)],
        cwd=REPO,
        env=w.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "sha256 differs" in result.stdout
    clean = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "archiver", "verify", "--to", str(day - timedelta(days=1))],
        cwd=REPO,
        env=w.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr


async def test_restore_brings_a_day_back_exactly(world: World) -> None:
    w = world
    await w.run()
    store = ArchiveStore(w.settings.store_config())
    day = sorted(store.days())[7]
    start = datetime.combine(day, datetime.min.time(), UTC)
    async with Archiver(w.settings) as archiver:
        original = await archiver.read_postgres_day(day)
    # An incident: the day's rows are lost from PostgreSQL.
    await w.pg(
        "DELETE FROM cab_rides WHERE from_date >= $1 AND from_date < $2", start, start + timedelta(days=1)
    )

    async with Archiver(w.settings) as archiver:
        assert not (await verify(archiver, day, day)).ok
        dry = await restore(archiver, day, day, True, True, dry_run=True)
        assert dry.days[0].pg_inserted == original.num_rows
        assert dry.days[0].es_written == original.num_rows
        assert (await archiver.read_postgres_day(day)).num_rows == 0, "a dry run changes nothing"

        done = await restore(archiver, day, day, True, True, dry_run=False)
        assert done.days[0].pg_inserted == original.num_rows
        assert (await archiver.read_postgres_day(day)).equals(original)
        assert (await verify(archiver, day, day)).ok

        twice = await restore(archiver, day, day, True, True, dry_run=False)
        assert twice.days[0].pg_inserted == 0
        assert twice.days[0].pg_unchanged == original.num_rows
        assert twice.days[0].es_written == 0
        count = await archiver.es.count(index=index_name(w.settings.es_rides_prefix, day))
        assert count["count"] == original.num_rows


async def test_postgres_retention_drops_only_archived_months_and_late_data_merges(world: World) -> None:
    w = world
    await w.run()
    report = await w.run(pg_retention_months=2)
    # Reference 2026-06-01, keep 2 months -> partitions before 2026-04 go (all their days archived).
    assert report.partitions_dropped == ["cab_rides_2026_02", "cab_rides_2026_03"]
    left = {
        r["relname"]
        for r in await w.pg(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'cab_rides'::regclass"
        )
    }
    assert not left & set(report.partitions_dropped)
    async with Archiver(w.settings) as archiver:
        assert (await verify(archiver, None, None)).ok

    store = ArchiveStore(w.settings.store_config())
    day = min(store.days())
    before = Manifest.from_json(store.get(store.manifest_key(day)) or b"")
    template = make_rides(1, REFERENCE, 1, seed=5)[0]
    start = datetime.combine(day, datetime.min.time(), UTC)
    late = replace(template, booking_id=9_100_001, from_date=start + timedelta(hours=3), to_date=None)
    await w.store_rides([late], version_base=7_000_000)
    merged = await w.run(pg_retention_months=2)
    assert [(d.day, d.action) for d in merged.days if d.action != "unchanged"] == [(day, "merged")]
    after = Manifest.from_json(store.get(store.manifest_key(day)) or b"")
    assert after.rows == before.rows + 1, "the archived rides are kept, the late one added"
    assert after.source == "postgres+archive"
    async with Archiver(w.settings) as archiver:
        table = canonical(await archiver.read_archived_day(after))
    assert 9_100_001 in table.column("booking_id").to_pylist()
